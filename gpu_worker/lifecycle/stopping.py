"""Stopping the worker safely: SIGTERM, a Spot interruption notice, a rebalance advice.

Any of them stops the worker taking new messages. For the message in flight:

- with a deadline (Spot notice: the time EC2 takes the instance; SIGTERM: now), the job
  is finished only if the pace so far says it ends, with a margin, before the deadline;
  otherwise the message is released at once (visibility 0) for another worker, and the
  job is abandoned at its next check;
- without a deadline (rebalance recommendation), the current job is finished first.

A message prepared ahead and waiting for the engine (``delivery.prefetch``) is released at
once on any stop, its claim on the job given back first.

``request`` only records and wakes the enforcer thread (no locks, no AWS calls), so it is
safe to call from a signal handler; the enforcer thread does the releasing.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpu_worker.transcription.progress import ProgressTracker

if TYPE_CHECKING:
    from gpu_worker.delivery.lease import MessageLease

logger = logging.getLogger(__name__)

# Writing four files and two messages after the last segment takes seconds, not minutes.
DEFAULT_MARGIN_SECONDS = 20.0


class JobAbandonedError(Exception):
    """The in-flight message was released: stop working on it, touch nothing more."""


@dataclass(frozen=True)
class StopRequest:
    reason: str
    deadline: float | None  # epoch seconds; None: no deadline, finish the current job

    def sort_key(self) -> tuple[bool, float]:
        return (self.deadline is None, self.deadline or 0.0)


def should_release(
    seconds_left: float | None, deadline: float | None, now: float, margin: float
) -> bool:
    """Give the in-flight message back now rather than try to finish before ``deadline``?"""
    if deadline is None:
        return False
    if seconds_left is None:  # no pace known yet (downloading, decoding): cannot promise
        return True
    return now + seconds_left + margin > deadline


class InFlight:
    """A held message and its progress, as the enforcer sees them.

    ``waiting``: received and prepared ahead (``delivery.prefetch``), not yet on the engine;
    any stop releases such a message at once, whatever its deadline.
    """

    def __init__(
        self, lease: MessageLease, progress: ProgressTracker, waiting: bool = False
    ) -> None:
        self.lease = lease
        self.progress = progress
        self.waiting = waiting
        self.abandoned = threading.Event()
        self._lock = threading.Lock()
        self._undo: Callable[[], object] | None = None

    def check(self) -> None:
        """Raise ``JobAbandonedError`` once the message was released; called between steps."""
        if self.abandoned.is_set():
            raise JobAbandonedError("the message was released to another worker")

    def undo_on_release(self, undo: Callable[[], object]) -> None:
        """Run ``undo`` (give back what holding the message recorded: the job's claim) should
        the message be released while it waits; at once if it was released already."""
        with self._lock:
            if not self.abandoned.is_set():
                self._undo = undo
                return
            run = self.waiting
        if run:
            _undo_quietly(undo)

    def abandon(self) -> None:
        """Mark the job abandoned, and undo a waiting one's claim, once; the caller releases
        the message. (A job that was on the engine keeps its claim: its attempt counts.)"""
        with self._lock:
            self.abandoned.set()
            undo, self._undo = self._undo, None
            run = self.waiting
        if undo is not None and run:
            _undo_quietly(undo)


def _undo_quietly(undo: Callable[[], object]) -> None:
    try:
        undo()
    except Exception:  # the message goes back all the same; the next claim takes over
        logger.warning("could not give back the claim of a released job", exc_info=True)


class StopController:
    def __init__(
        self,
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._margin = margin_seconds
        self._clock = clock
        self._requests: list[StopRequest] = []
        self._wakeup = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: list[InFlight] = []

    @property
    def requested(self) -> StopRequest | None:
        """The most urgent stop asked for so far, or None."""
        requests = list(self._requests)
        return min(requests, key=StopRequest.sort_key) if requests else None

    def request(self, reason: str, deadline: float | None) -> None:
        """Ask the worker to stop (safe in a signal handler)."""
        if any(r.reason == reason for r in self._requests):
            return
        self._requests.append(StopRequest(reason, deadline))
        self._wakeup.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns early (True) when a stop is requested."""
        deadline = time.monotonic() + seconds
        while self.requested is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, 0.2))
        return True

    @contextmanager
    def job(
        self, lease: MessageLease, progress_log_seconds: float, *, waiting: bool = False
    ) -> Iterator[InFlight]:
        """Register a held message for the enforcer for the length of the block."""
        in_flight = InFlight(lease, ProgressTracker(progress_log_seconds), waiting)
        with self._lock:
            self._in_flight.append(in_flight)
        self._wakeup.set()  # a stop that came while receiving applies at once
        try:
            yield in_flight
        finally:
            with self._lock:
                self._in_flight.remove(in_flight)

    def start(self, in_flight: InFlight, progress_log_seconds: float) -> bool:
        """A waiting job goes on the engine: from now its pace decides whether a stop lets it
        finish. False when it was released while it waited."""
        with self._lock:
            if in_flight.abandoned.is_set():
                return False
            in_flight.progress = ProgressTracker(progress_log_seconds)  # the pace from now
            in_flight.waiting = False
            return True

    def release_waiting(self, in_flight: InFlight, reason: str) -> None:
        """Give a waiting job's message back at once (its claim undone first)."""
        with self._lock:
            if in_flight.abandoned.is_set() or not in_flight.waiting:
                return
            in_flight.abandon()
        released = in_flight.lease.release()
        logger.warning(
            "released the prefetched message (%s)",
            reason,
            extra={"stop_reason": reason, "released": released},
        )

    def enforce(self) -> None:
        """Release the held messages the current stop request calls for."""
        request = self.requested
        if request is None:
            return
        with self._lock:
            held = list(self._in_flight)
        for in_flight in held:
            if in_flight.waiting:
                self.release_waiting(in_flight, request.reason)
            else:
                self._enforce_on(in_flight, request)

    def _enforce_on(self, in_flight: InFlight, request: StopRequest) -> None:
        with self._lock:
            if in_flight.abandoned.is_set():
                return
            left = in_flight.progress.seconds_left()
            now = self._clock()
            if not should_release(left, request.deadline, now, self._margin):
                return
            in_flight.abandon()
            released = in_flight.lease.release()
        logger.warning(
            "stopping (%s): released the in-flight message for another worker",
            request.reason,
            extra={
                "stop_reason": request.reason,
                "released": released,
                "estimated_seconds_left": None if left is None else round(left, 1),
                "seconds_to_deadline": None
                if request.deadline is None
                else round(request.deadline - now, 1),
            },
        )

    @contextmanager
    def enforcing(self, every_seconds: float = 1.0) -> Iterator[None]:
        """Run the enforcer thread for the length of the block."""
        halt = threading.Event()

        def loop() -> None:
            while not halt.is_set():
                self._wakeup.wait(every_seconds)
                self._wakeup.clear()
                try:
                    self.enforce()
                except Exception:  # the release is retried on the next round
                    logger.exception("could not release the in-flight message")

        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(loop,), name="stop-enforcer")
        thread.daemon = True
        thread.start()
        try:
            yield
        finally:
            halt.set()
            self._wakeup.set()
            thread.join()
