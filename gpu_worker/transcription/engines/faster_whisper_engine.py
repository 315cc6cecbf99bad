"""CTranslate2 Whisper through faster-whisper: the fastest proven Whisper runtime."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from faster_whisper import BatchedInferencePipeline, WhisperModel

from gpu_worker.transcription.audio import SAMPLE_RATE
from gpu_worker.transcription.engines import check_language
from gpu_worker.transcription.engines.options import DecodeOptions
from gpu_worker.transcription.transcript import Segment, Word

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy as np
    import numpy.typing as npt
    from faster_whisper.transcribe import Segment as WhisperSegment

WINDOW_SECONDS: Final = 30  # Whisper's input window


@dataclass(frozen=True)
class _Decoding:
    """What one call decodes with besides the engine's options."""

    language_code: str
    hotwords: str | None


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
        hotwords: str | None = None,
    ) -> Iterator[Segment]:
        check_language(self.model_id, bool(self._model.model.is_multilingual), language_code)
        return self._segments(audio, _Decoding(language_code, hotwords or None), progress)

    def _segments(
        self,
        audio: npt.NDArray[np.float32],
        decoding: _Decoding,
        progress: Callable[[float], None] | None,
    ) -> Iterator[Segment]:
        if self._options.batched and audio.size > WINDOW_SECONDS * SAMPLE_RATE:
            found = self._batched(audio, decoding)
        else:
            found = self._sequential(audio, decoding)
        for segment in found:
            words = tuple(
                Word(start=w.start, end=w.end, text=w.word, probability=w.probability)
                for w in segment.words or ()
            )
            if progress is not None:
                progress(segment.end)
            yield Segment(
                start=segment.start, end=segment.end, text=segment.text.strip(), words=words
            )

    def _decoding(self, decoding: _Decoding) -> dict[str, Any]:
        """The options both paths decode with: the language pinned, the guards on, the
        recording's terms (faster-whisper puts ``hotwords`` before every window's prompt)."""
        options = self._options
        return {
            "language": decoding.language_code,
            "hotwords": decoding.hotwords,
            "beam_size": options.beam_size,
            "temperature": list(options.temperatures),
            "word_timestamps": True,
            "vad_filter": options.vad_filter,
            "no_speech_threshold": options.no_speech_threshold,
            "log_prob_threshold": options.log_prob_threshold,
            "compression_ratio_threshold": options.compression_ratio_threshold,
            # Conditioning on earlier text is what lets one hallucination loop forever.
            "condition_on_previous_text": False,
        }

    def _sequential(
        self,
        audio: npt.NDArray[np.float32],
        decoding: _Decoding,
        clip: tuple[float, float] | None = None,
    ) -> Iterator[WhisperSegment]:
        clip_timestamps = list(clip) if clip is not None else "0"
        segments, _info = self._model.transcribe(
            audio, clip_timestamps=clip_timestamps, **self._decoding(decoding)
        )
        return iter(segments)

    def _batched(
        self, audio: npt.NDArray[np.float32], decoding: _Decoding
    ) -> Iterator[WhisperSegment]:
        """Chunks decoded ``batch_size`` at a time, with the sequential path's guards.

        The batched pipeline decodes at the first temperature only and returns every chunk:
        a chunk that the thresholds take for silence is dropped here, and one that misses a
        threshold (a repetition loop, unlikely text) is decoded again on the sequential path,
        which retries at the higher temperatures.
        """
        options = self._options
        pipeline = BatchedInferencePipeline(model=self._model)
        # Without VAD the pipeline needs the chunks named (in seconds): whole windows.
        windows = None
        if not options.vad_filter:
            duration = audio.size / SAMPLE_RATE
            windows = [
                {"start": float(start), "end": min(start + WINDOW_SECONDS, duration)}
                for start in range(0, int(duration) + 1, WINDOW_SECONDS)
                if start < duration
            ]
        segments, _info = pipeline.transcribe(
            audio,
            batch_size=options.batch_size,
            clip_timestamps=windows,
            **self._decoding(decoding),
        )
        # A chunk's subsegments share its seek, log-probability and no-speech probability.
        for _seek, chunk_segments in itertools.groupby(segments, key=lambda s: s.seek):
            chunk = list(chunk_segments)
            first = chunk[0]
            unlikely = first.avg_logprob < options.log_prob_threshold
            if first.no_speech_prob > options.no_speech_threshold and unlikely:
                continue
            looping = any(s.compression_ratio > options.compression_ratio_threshold for s in chunk)
            if unlikely or looping:
                yield from self._sequential(audio, decoding, (first.start, chunk[-1].end))
            else:
                yield from chunk
