"""What tells the worker to stop: EC2's Spot notices (polled on IMDSv2) and signals."""

from __future__ import annotations

import contextvars
import faulthandler
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from gpu_worker.lifecycle.imds import ImdsClient, ImdsError
from gpu_worker.lifecycle.stopping import StopController

logger = logging.getLogger(__name__)


def check_interruption(imds: ImdsClient, stop: StopController) -> None:
    """One look at IMDS: a Spot notice stops with its deadline, a rebalance advice drains."""
    notice = imds.spot_notice()
    if notice is not None:
        if stop.requested is None or stop.requested.reason != f"spot {notice.action}":
            logger.warning(
                "Spot interruption notice: %s in %.0f s",
                notice.action,
                notice.at - time.time(),
                extra={"spot_action": notice.action, "spot_deadline_epoch": notice.at},
            )
        stop.request(f"spot {notice.action}", deadline=notice.at)
    elif imds.rebalance_recommended():
        if stop.requested is None:
            logger.warning("EC2 recommends rebalancing away from this Spot instance")
        stop.request("rebalance recommendation", deadline=None)


@contextmanager
def watching_interruptions(
    imds: ImdsClient | None, stop: StopController, every_seconds: float
) -> Iterator[None]:
    """Poll IMDS every ``every_seconds`` in a thread for the length of the block.

    The first look happens before the block starts, so that an instance started under a
    notice takes no work at all.
    """
    if imds is None:
        yield
        return
    halt = threading.Event()
    failing = False

    def look() -> None:
        nonlocal failing
        try:
            check_interruption(imds, stop)
            failing = False
        except ImdsError as exc:
            # Log the first failure of a run of them, not one line every few seconds.
            (logger.debug if failing else logger.warning)(
                "could not read Spot notices from IMDS: %s", exc
            )
            failing = True

    def loop() -> None:
        while not halt.wait(every_seconds):
            look()

    look()

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(loop,), name="spot-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        halt.set()
        thread.join()


def install_signal_handlers(stop: StopController) -> None:
    """SIGTERM (systemd stop, instance shutdown) and SIGINT stop the worker like a notice;
    SIGUSR1 writes every thread's stack to stderr (the worker's log) and changes nothing,
    for a worker that looks stuck (docs/operations.md, "A shell on a running worker")."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.request(signal.Signals(signum).name, deadline=time.time())

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    # faulthandler's, not a Python handler: it runs even while the main thread is inside
    # the engine's native code or blocked on a lock, which is when a stack is wanted. It
    # writes to a file descriptor: the process's own stderr where sys.stderr has been
    # replaced by one without (a test's capture, an embedding program).
    for stream in (sys.stderr, sys.__stderr__):
        try:
            descriptor = stream.fileno() if stream is not None else -1
        except (AttributeError, ValueError, OSError):  # no descriptor behind it
            continue
        if descriptor >= 0:
            faulthandler.register(signal.SIGUSR1, file=descriptor, all_threads=True)
            return
    logger.warning("no file descriptor for stacks on SIGUSR1; the signal is left as it was")
