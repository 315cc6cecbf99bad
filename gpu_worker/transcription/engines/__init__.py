"""Speech recognition engines behind one small interface, chosen by configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gpu_worker.transcription.engines.options import DecodeOptions
from pipeline_core.config import ASR_ENGINES
from pipeline_core.errors import PermanentError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy as np
    import numpy.typing as npt

    from gpu_worker.transcription.transcript import Segment

__all__ = ["AsrEngine", "DecodeOptions", "UnsupportedLanguageError", "load_engine"]


class UnsupportedLanguageError(PermanentError, ValueError):
    """The model cannot transcribe the job's language (an English-only model, say):
    retrying will not help."""

    def __init__(self, model_id: str, language_code: str) -> None:
        super().__init__(
            f"the model {model_id} is English-only and cannot transcribe language "
            f"{language_code!r}; configure a multilingual model for it"
        )
        self.model_id = model_id
        self.language_code = language_code


def check_language(model_id: str, multilingual: bool, language_code: str) -> None:
    """Raise ``UnsupportedLanguageError`` unless the model can do ``language_code``."""
    if not multilingual and language_code != "en":
        raise UnsupportedLanguageError(model_id, language_code)


class AsrEngine(Protocol):
    """Transcribes 16 kHz mono float32 audio in a pinned language, streaming segments."""

    @property
    def model_id(self) -> str: ...

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        language_code: str,
        progress: Callable[[float], None] | None = None,
        hotwords: str | None = None,
    ) -> Iterator[Segment]:
        """Yield segments in time order; ``progress`` receives seconds of audio done;
        ``hotwords``: terms to prime the decoder with (the recording's glossary), where the
        engine supports it.

        Raises ``UnsupportedLanguageError`` before any work for a language the model lacks.
        """
        ...


def load_engine(
    engine: str, model_dir: str, device: str = "auto", options: DecodeOptions | None = None
) -> AsrEngine:
    """Load ``engine`` ("faster-whisper" or "transformers") from a local model directory."""
    options = options or DecodeOptions()
    if engine == "faster-whisper":
        from gpu_worker.transcription.engines.faster_whisper_engine import FasterWhisperEngine

        return FasterWhisperEngine(model_dir, device=device, options=options)
    if engine == "transformers":
        from gpu_worker.transcription.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model_dir, device=device, options=options)
    raise ValueError(f"unknown ASR engine {engine!r}; known: {', '.join(ASR_ENGINES)}")
