"""One job ahead and one behind, so that the engine never waits for S3, SQS or DynamoDB.

While the engine transcribes a job on the daemon's main thread, the ``Prefetcher``'s thread
receives the next message and prepares it (``Worker.prepare``: validate, claim, download,
decode the first window), and the ``Finisher``'s thread writes the previous job's transcripts
and hands it off. At most one prepared job waits: its message is kept hidden by its
heartbeat, and it is registered with the stop controller as waiting, so that any stop
releases it at once (visibility 0, its claim given back first); ``pause`` does the same for
an idle exit or a misconfiguration pause.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from enum import Enum
from typing import TYPE_CHECKING, Final, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from gpu_worker.lifecycle.stopping import StopController

logger = logging.getLogger(__name__)

Prepared = TypeVar("Prepared")
HANDOVER_POLL_SECONDS: Final = 0.2  # how often a blocked hand-over looks for a stop


class Poll(Enum):
    EMPTY = "empty"  # the last receive came back without a message


class Prefetcher(Generic[Prepared]):
    """A thread that keeps one prepared job ready for the engine.

    ``fetch(halted)`` receives one message and prepares it; it returns the prepared job,
    ``Poll.EMPTY`` when the queue had nothing, or None when the message needed no engine
    (a duplicate, a malformed message, a failed job). ``drop`` gives back a prepared job
    nobody will take.
    """

    def __init__(
        self,
        fetch: Callable[[Callable[[], bool]], Prepared | Literal[Poll.EMPTY] | None],
        drop: Callable[[Prepared], None],
    ) -> None:
        self._fetch = fetch
        self._drop = drop
        self._slot: queue.Queue[Prepared | Literal[Poll.EMPTY]] = queue.Queue(maxsize=1)
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self, stop: StopController) -> Prepared | None:
        """The next prepared job; None when the last poll was empty or a stop was asked for."""
        self._start()
        while stop.requested is None:
            try:
                item = self._slot.get(timeout=HANDOVER_POLL_SECONDS)
            except queue.Empty:
                continue
            return None if item is Poll.EMPTY else item
        return None

    def pause(self) -> None:
        """Stop prefetching: the thread ends (after a receive in progress), and a prepared
        job that waits is dropped. The next ``take`` starts it again."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._halt.set()
        # Dropped before the join too: the fetch under way may be waiting for the job in
        # the slot to be let go (a duplicate delivery of it, ``Worker.take_in_hand``).
        self._drop_waiting()
        thread.join()
        self._drop_waiting()  # handed over while the halt was being set

    def _drop_waiting(self) -> None:
        try:
            item = self._slot.get_nowait()
        except queue.Empty:
            return
        if item is not Poll.EMPTY:
            self._drop(item)

    def _start(self) -> None:
        if self._thread is not None:
            return
        self._halt.clear()
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="prefetcher", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                item = self._fetch(self._halt.is_set)
            except Exception:  # fetch settles its own failures; this keeps the thread alive
                logger.exception("the prefetcher failed to prepare the next job")
                self._halt.wait(HANDOVER_POLL_SECONDS)
                continue
            if item is not None and not self._hand_over(item) and item is not Poll.EMPTY:
                self._drop(item)

    def _hand_over(self, item: Prepared | Literal[Poll.EMPTY]) -> bool:
        """Wait until the engine's thread takes ``item``; False when halted first."""
        while not self._halt.is_set():
            try:
                self._slot.put(item, timeout=HANDOVER_POLL_SECONDS)
            except queue.Full:
                continue
            return True
        return False


class Finisher:
    """Runs each transcribed job's writes and hand-off on one background thread, one job at
    a time: a second job's waits until the first's is done."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finisher")
        self._pending: Future[None] | None = None

    def submit(self, finish: Callable[[], None]) -> None:
        self.wait()
        self._pending = self._executor.submit(contextvars.copy_context().run, finish)

    def wait(self) -> None:
        """Until the job being finished is done."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.result()
        except Exception:  # the job's own steps settle its failures; this is a bug's trace
            logger.exception("finishing a job failed")

    def close(self) -> None:
        self.wait()
        self._executor.shutdown()
