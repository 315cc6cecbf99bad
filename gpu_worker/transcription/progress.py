"""Progress of one transcription: throttled log lines, real-time factor, time left."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class ProgressTracker:
    """Fed ``(seconds_done, seconds_total)`` by the recogniser; logs at most every N seconds."""

    def __init__(
        self, log_every_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._log_every = log_every_seconds
        self._started = clock()
        self._last_log = -math.inf
        self.done = 0.0
        self.total: float | None = None

    def elapsed(self) -> float:
        return self._clock() - self._started

    def real_time_factor(self) -> float | None:
        """Seconds of work per second of audio so far (0.05 = twenty times real time)."""
        return self.elapsed() / self.done if self.done > 0 else None

    def seconds_left(self) -> float | None:
        """Estimate at the pace so far; None before the first report."""
        factor = self.real_time_factor()
        if factor is None or self.total is None:
            return None
        return max(0.0, self.total - self.done) * factor

    def percent(self) -> float:
        if self.total is None:
            return 0.0
        return 100.0 * self.done / self.total if self.total > 0 else 100.0

    def update(self, done: float, total: float) -> bool:
        """Record progress; True when it was time for a report (and one was logged)."""
        self.done, self.total = float(done), float(total)
        now = self._clock()
        if now - self._last_log < self._log_every:
            return False
        self._last_log = now
        factor = self.real_time_factor()
        left = self.seconds_left()
        logger.info(
            "transcribing: %.0f%% of %.0f s of audio",
            self.percent(),
            self.total,
            extra={
                "audio_done_seconds": round(self.done, 1),
                "audio_seconds": round(self.total, 1),
                "percent": round(self.percent(), 1),
                "real_time_factor": None if factor is None else round(factor, 4),
                "seconds_left": None if left is None else round(left, 1),
            },
        )
        return True
