"""Step 4: the recording's segments, with progress and the figures of the run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpu_worker.transcription.audio import probe_audio
from gpu_worker.transcription.engines import AsrEngine
from gpu_worker.transcription.formats import normalize_segments
from gpu_worker.transcription.progress import ProgressTracker
from gpu_worker.transcription.recognize import transcribe_file
from gpu_worker.transcription.transcript import Segment


@dataclass(frozen=True)
class Transcription:
    segments: list[Segment]
    audio_seconds: float
    transcribe_seconds: float
    model: str


def transcribe_audio(
    engine: AsrEngine,
    path: Path,
    language_code: str,
    progress: ProgressTracker,
    check: Callable[[], None],
    *,
    on_report: Callable[[float], None] | None = None,
    hotwords: str | None = None,
) -> Transcription:
    """Transcribe ``path``; ``check()`` runs at every progress report and segment and may
    raise to abandon the job (the recogniser stops at the next report); ``on_report``
    receives the percent done at the tracker's (throttled) pace; ``hotwords``: terms for
    the engine's prompt (the recording's glossary)."""
    started = time.monotonic()

    def on_progress(done: float, total: float) -> None:
        if progress.update(done, total) and on_report is not None:
            on_report(progress.percent())
        check()

    segments: list[Segment] = []
    for segment in transcribe_file(engine, path, language_code, on_progress, hotwords=hotwords):
        segments.append(segment)
        check()
    elapsed = time.monotonic() - started
    # The recogniser reports the exact length last; should it not have, the file is asked.
    duration = progress.total if progress.total is not None else _duration(path)
    return Transcription(
        segments=normalize_segments(segments, duration),
        audio_seconds=duration,
        transcribe_seconds=elapsed,
        model=engine.model_id,
    )


def _duration(path: Path) -> float:
    return probe_audio(path).duration
