"""From an audio file to timed segments, with progress: what the daemon calls.

The file is decoded and transcribed window by window (``audio.stream_audio``), so memory
stays bounded however long the recording is.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import replace
from typing import TYPE_CHECKING

from gpu_worker.transcription.audio import (
    CUT_SEARCH_SECONDS,
    WINDOW_SECONDS,
    AudioWindow,
    WindowReadAhead,
    may_continue,
    probe_audio,
    stream_audio,
)

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


class OpenedAudio:
    """A recording probed and its first window decoded, the rest decoded one window ahead
    of the engine once it starts reading (``WindowReadAhead``): what a prefetch hands the
    engine. ``close`` ends the decoder early."""

    def __init__(self, path: Path, window_seconds: float = WINDOW_SECONDS) -> None:
        self.path = path
        self.estimate = probe_audio(path).duration  # the container's, before decoding
        stream = stream_audio(path, window_seconds=window_seconds)
        first = next(stream)  # stream_audio raises for a file without samples
        ahead = may_continue(first, window_seconds, CUT_SEARCH_SECONDS)  # no thread for one
        self._read_ahead = WindowReadAhead(first, stream, ahead=ahead)
        self.windows: Iterator[AudioWindow] = iter(self._read_ahead)

    def close(self) -> None:
        self._read_ahead.close()


def transcribe_file(
    engine: AsrEngine,
    audio: Path | OpenedAudio,
    language_code: str,
    progress: Callable[[float, float], None] | None = None,
    *,
    window_seconds: float = WINDOW_SECONDS,
    hotwords: str | None = None,
) -> Iterator[Segment]:
    """Yield the recording's segments in time order; ``progress(seconds_done, seconds_total)``;
    ``hotwords``: the engine's prompt terms (``AsrEngine.transcribe``).

    ``seconds_total`` is the container's estimate until the end, where the exact length
    is reported. Raises ``AudioDecodeError`` for a file that is not usable audio (at once
    where the probe sees it, before any transcription). An ``OpenedAudio`` passed in is the
    caller's to close; one opened here is closed here, however the reading ends.
    """
    if isinstance(audio, OpenedAudio):
        yield from _transcribe_opened(engine, audio, language_code, progress, hotwords)
        return
    with closing(OpenedAudio(audio, window_seconds)) as opened:
        yield from _transcribe_opened(engine, opened, language_code, progress, hotwords)


def _transcribe_opened(
    engine: AsrEngine,
    opened: OpenedAudio,
    language_code: str,
    progress: Callable[[float, float], None] | None,
    hotwords: str | None,
) -> Iterator[Segment]:
    estimate = opened.estimate
    end = 0.0
    for window in opened.windows:
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
