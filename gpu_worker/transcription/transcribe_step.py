"""Step 4: the recording's segments, with progress and the figures of the run; speaker
labels when the recording asks for them (``gpu_worker.speakers``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpu_worker.speakers.diarizer import DiarizerCache
from gpu_worker.speakers.labelling import label_segments
from gpu_worker.transcription.audio import probe_audio
from gpu_worker.transcription.engines import AsrEngine
from gpu_worker.transcription.formats import normalize_segments
from gpu_worker.transcription.progress import ProgressTracker
from gpu_worker.transcription.recognize import OpenedAudio, transcribe_file
from gpu_worker.transcription.transcript import Segment
from pipeline_core.speakers import SpeakerCount

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transcription:
    segments: list[Segment]
    audio_seconds: float
    transcribe_seconds: float
    model: str
    diarize_seconds: float | None = None  # None: the recording did not ask for speakers


@dataclass(frozen=True)
class SpeakerRequest:
    """How many speakers a recording asked for, and the worker's diarizer."""

    count: SpeakerCount
    diarizers: DiarizerCache


def transcribe_audio(
    engine: AsrEngine,
    audio: Path | OpenedAudio,
    language_code: str,
    progress: ProgressTracker,
    check: Callable[[], None],
    *,
    on_report: Callable[[float], None] | None = None,
    speakers: SpeakerRequest | None = None,
    hotwords: str | None = None,
) -> Transcription:
    """Transcribe ``audio``; ``check()`` runs at every progress report and segment and may
    raise to abandon the job (the recogniser stops at the next report); ``on_report``
    receives the percent done at the tracker's (throttled) pace. With ``speakers`` the
    segments are labelled (and split where the speaker changes); without, the diarizer is
    neither loaded nor run. ``hotwords``: terms for the engine's prompt (the recording's
    glossary)."""
    started = time.monotonic()

    def on_progress(done: float, total: float) -> None:
        if progress.update(done, total) and on_report is not None:
            on_report(progress.percent())
        check()

    segments: list[Segment] = []
    for segment in transcribe_file(engine, audio, language_code, on_progress, hotwords=hotwords):
        segments.append(segment)
        check()
    elapsed = time.monotonic() - started
    # The recogniser reports the exact length last; should it not have, the file is asked.
    path = audio.path if isinstance(audio, OpenedAudio) else audio
    duration = progress.total if progress.total is not None else _duration(path)
    normalized = normalize_segments(segments, duration)
    diarize_seconds = None
    if speakers is not None:
        check()
        diarize_started = time.monotonic()
        turns = speakers.diarizers.get().diarize(path, speakers.count)
        normalized = label_segments(normalized, turns)
        diarize_seconds = time.monotonic() - diarize_started
        logger.info(
            "speakers labelled",
            extra={
                "speakers_asked": speakers.count,
                "speakers_found": len({s.speaker for s in normalized if s.speaker}),
                "diarizer": speakers.diarizers.name,
                "diarize_seconds": round(diarize_seconds, 3),
            },
        )
    return Transcription(
        segments=normalized,
        audio_seconds=duration,
        transcribe_seconds=elapsed,
        model=engine.model_id,
        diarize_seconds=diarize_seconds,
    )


def _duration(path: Path) -> float:
    return probe_audio(path).duration
