"""Named pause points, so that a test can kill the worker at a precise step.

Set ``WORKER_PAUSE_AFTER_STEP=<step>`` and the worker logs ``paused after step`` (JSON
field ``pause_step``) when it reaches that step of a job, then sleeps there; the test
waits for that line and sends SIGKILL. Should the job be released meanwhile (SIGTERM,
Spot notice), the pause ends with ``JobAbandonedError`` as any abandoned job does. Unset in
production: each pause point is then a single comparison.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Final

from pipeline_core.config import ConfigError

logger = logging.getLogger(__name__)

# In the order a job passes them.
STEPS: Final = (
    "received",  # message read and valid, nothing written yet
    "claimed",  # job marked transcribing in the job table
    "downloaded",  # audio on local disk
    "prefetched",  # audio decoded (its first window): the job waits for the engine
    "mid_transcription",  # the recogniser reported its first progress
    "transcript_written",  # the four transcript files are in S3, the job still transcribing
    "marked_transcribed",  # job marked transcribed, the LLM job not yet sent
    "llm_job_sent",  # LLM job sent; not yet recorded in the job table, nor the message deleted
)


def check_step(step: str | None) -> str | None:
    if step is not None and step not in STEPS:
        raise ConfigError(
            f"environment variable WORKER_PAUSE_AFTER_STEP={step!r} is not one of "
            f"{', '.join(STEPS)}"
        )
    return step


class PausePoints:
    def __init__(self, pause_after: str | None) -> None:
        self.pause_after = check_step(pause_after)

    def after(self, step: str, check: Callable[[], None]) -> None:
        """Pause here if configured to; ``check`` raises once the job is abandoned."""
        if step != self.pause_after:
            return
        logger.warning(
            "paused after step %s (fault injection)",
            step,
            extra={"pause_step": step, "pid": os.getpid()},
        )
        while True:
            check()
            time.sleep(0.05)
