"""From an audio file to timed segments, with progress: what the daemon calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpu_worker.audio import SAMPLE_RATE, decode_audio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from gpu_worker.engines import AsrEngine
    from gpu_worker.transcript import Segment


def transcribe_file(
    engine: AsrEngine,
    path: Path,
    language: str,
    progress: Callable[[float, float], None] | None = None,
) -> Iterator[Segment]:
    """Yield ``path``'s segments in time order; ``progress(seconds_done, seconds_total)``.

    Raises ``AudioDecodeError`` for a file that is not usable audio.
    """
    audio = decode_audio(path)
    total = audio.size / SAMPLE_RATE

    def report(done: float) -> None:
        if progress is not None:
            progress(min(done, total), total)

    yield from engine.transcribe(audio, language, progress=report)
