"""Stopping the poller on SIGTERM/SIGINT without losing a message.

The first signal asks for a stop: a message being handled is finished (written, then
deleted) and the others already received are handed back to the queue. Only while the
poller is idle in a long poll does the signal cut the wait short, by raising
``StopPolling`` there; messages such a cut-off receive may have taken stay invisible until
their visibility timeout and are then delivered again, so none is lost. A second signal
stops at once (``KeyboardInterrupt``); at worst a message whose files are written is
delivered again, which the poller handles as a duplicate.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class StopPolling(BaseException):
    """Raised inside an idle long poll when a stop is asked for.

    A BaseException so that botocore's retry logic (which catches Exception) lets it through.
    """


class GracefulStop:
    def __init__(self) -> None:
        self.event = threading.Event()
        self._idle = False

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def request(self) -> None:
        self.event.set()

    @contextmanager
    def idle(self) -> Iterator[None]:
        """Mark a block (a long poll) that a stop may interrupt."""
        if self.event.is_set():
            raise StopPolling
        self._idle = True
        try:
            yield
        finally:
            self._idle = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        if self._idle:
            self._idle = False
            raise StopPolling

    def install(self) -> None:
        """Handle SIGTERM and SIGINT (main thread only)."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
