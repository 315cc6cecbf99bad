"""The worker's hold on one in-flight message: heartbeats extend it, a stop releases it.

SQS hides a received message for its visibility timeout. A three-hour recording takes
longer than any sensible timeout, so a heartbeat thread keeps pushing the timeout out
while the job runs; when the worker must stop (Spot notice, SIGTERM) the message is made
visible at once so that another worker takes it. The lock makes "extend" and "release"
exclusive, so a heartbeat can never hide a message again after it was released.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpu_worker.delivery.queues import AudioQueue, Received

logger = logging.getLogger(__name__)


class MessageLease:
    def __init__(self, queue: AudioQueue, message: Received, visibility_seconds: int) -> None:
        self.queue = queue
        self.message = message
        self.visibility_seconds = visibility_seconds
        self._lock = threading.Lock()
        self._released = False
        self._deleted = False

    @property
    def released(self) -> bool:
        return self._released

    def extend(self) -> bool:
        """Hide the message for another visibility timeout; False once released or deleted."""
        with self._lock:
            if self._released or self._deleted:
                return False
            self.queue.set_visibility(self.message, self.visibility_seconds)
            return True

    def release(self, delay_seconds: int = 0) -> bool:
        """Give the message back to the queue (visible after ``delay_seconds``)."""
        with self._lock:
            if self._released or self._deleted:
                return False
            self.queue.set_visibility(self.message, delay_seconds)
            self._released = True
            return True

    def delete(self) -> None:
        """The job is done: remove the message (harmless if it was released meanwhile)."""
        with self._lock:
            self.queue.delete(self.message)
            self._deleted = True


@contextmanager
def heartbeat(lease: MessageLease, every_seconds: float) -> Iterator[None]:
    """Extend ``lease`` every ``every_seconds`` until the block ends."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_seconds):
            try:
                if not lease.extend():
                    return
            except Exception:  # a failed beat is retried; the next may still be in time
                logger.warning("heartbeat could not extend the message", exc_info=True)
            else:
                logger.debug("heartbeat extended the message")

    context = contextvars.copy_context()  # keeps the job's log fields on the thread's lines
    thread = threading.Thread(target=context.run, args=(beat,), name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
