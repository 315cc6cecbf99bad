"""From an audio file to timed segments, with progress: what the daemon calls.

The file is decoded and transcribed window by window (``audio.stream_audio``), so memory
stays bounded however long the recording is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from gpu_worker.transcription.audio import WINDOW_SECONDS, probe_audio, stream_audio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from gpu_worker.transcription.engines import AsrEngine
    from gpu_worker.transcription.transcript import Segment


def _shifted(segment: Segment, offset: float, limit: float) -> Segment:
    """Window-relative times -> file times, kept inside the window."""

    def clamp(t: float) -> float:
        return min(max(t, 0.0), limit) + offset

    words = tuple(replace(w, start=clamp(w.start), end=clamp(w.end)) for w in segment.words)
    return replace(segment, start=clamp(segment.start), end=clamp(segment.end), words=words)


def transcribe_file(
    engine: AsrEngine,
    path: Path,
    language_code: str,
    progress: Callable[[float, float], None] | None = None,
    *,
    window_seconds: float = WINDOW_SECONDS,
    hotwords: str | None = None,
) -> Iterator[Segment]:
    """Yield ``path``'s segments in time order; ``progress(seconds_done, seconds_total)``;
    ``hotwords``: the engine's prompt terms (``AsrEngine.transcribe``).

    ``seconds_total`` is the container's estimate until the end, where the exact length
    is reported. Raises ``AudioDecodeError`` for a file that is not usable audio (at once
    where the probe sees it, before any transcription).
    """
    estimate = probe_audio(path).duration
    end = 0.0
    for window in stream_audio(path, window_seconds=window_seconds):
        offset, length = window.start, window.duration
        end = offset + length
        total = max(estimate, end)

        def report(done: float, offset: float = offset, total: float = total) -> None:
            if progress is not None:
                progress(min(offset + done, total), total)

        found = engine.transcribe(window.samples, language_code, progress=report, hotwords=hotwords)
        for segment in found:
            yield _shifted(segment, offset, length)
    if progress is not None:
        progress(end, end)
