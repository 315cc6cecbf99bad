"""Waiting in tests: poll a condition until it holds, or fail naming what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable


class WaitTimeoutError(AssertionError):
    """A condition a test waited for did not come true in time."""


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.25
) -> float:
    """Poll ``condition`` until it is true; the seconds that took.

    Raises ``WaitTimeoutError`` naming ``what`` ("the worker to pause", ...) after ``timeout`` s.
    """
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise WaitTimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started
