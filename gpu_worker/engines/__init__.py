"""Speech recognition engines behind one small interface, chosen by configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy as np
    import numpy.typing as npt

    from gpu_worker.transcript import Segment


class AsrEngine(Protocol):
    """Transcribes 16 kHz mono float32 audio in a pinned language, streaming segments."""

    @property
    def model_id(self) -> str: ...

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        language: str,
        progress: Callable[[float], None] | None = None,
    ) -> Iterator[Segment]:
        """Yield segments in time order; ``progress`` receives seconds of audio done."""
        ...


def load_engine(engine: str, model_dir: str, device: str = "auto") -> AsrEngine:
    """Load ``engine`` ("faster-whisper" or "transformers") from a local model directory."""
    if engine == "faster-whisper":
        from gpu_worker.engines.faster_whisper_engine import FasterWhisperEngine

        return FasterWhisperEngine(model_dir, device=device)
    raise ValueError(f"unknown ASR engine {engine!r}; known: faster-whisper")
