"""CTranslate2 Whisper through faster-whisper: the fastest proven Whisper runtime."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from faster_whisper import WhisperModel

from gpu_worker.transcription.engines import check_language
from gpu_worker.transcription.engines.options import DecodeOptions
from gpu_worker.transcription.transcript import Segment, Word

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy as np
    import numpy.typing as npt


def _resolve_device(device: str) -> tuple[str, str]:
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return device, ("float16" if device == "cuda" else "int8")


class FasterWhisperEngine:
    def __init__(
        self,
        model_dir: str,
        device: str = "auto",
        compute_type: str | None = None,
        options: DecodeOptions | None = None,
    ):
        resolved, default_compute = _resolve_device(device)
        self._model_dir = model_dir
        self._options = options or DecodeOptions()
        self._model = WhisperModel(
            model_dir, device=resolved, compute_type=compute_type or default_compute
        )

    @property
    def model_id(self) -> str:
        return f"faster-whisper:{Path(self._model_dir).name}"

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        language_code: str,
        progress: Callable[[float], None] | None = None,
    ) -> Iterator[Segment]:
        check_language(self.model_id, bool(self._model.model.is_multilingual), language_code)
        return self._segments(audio, language_code, progress)

    def _segments(
        self,
        audio: npt.NDArray[np.float32],
        language_code: str,
        progress: Callable[[float], None] | None,
    ) -> Iterator[Segment]:
        options = self._options
        segments, _info = self._model.transcribe(
            audio,
            language=language_code,
            beam_size=options.beam_size,
            temperature=list(options.temperatures),
            word_timestamps=True,
            vad_filter=options.vad_filter,
            no_speech_threshold=options.no_speech_threshold,
            log_prob_threshold=options.log_prob_threshold,
            compression_ratio_threshold=options.compression_ratio_threshold,
            # Conditioning on earlier text is what lets one hallucination loop forever.
            condition_on_previous_text=False,
        )
        for segment in segments:
            words = tuple(
                Word(start=w.start, end=w.end, text=w.word, probability=w.probability)
                for w in segment.words or ()
            )
            if progress is not None:
                progress(segment.end)
            yield Segment(
                start=segment.start, end=segment.end, text=segment.text.strip(), words=words
            )
