"""Decoding settings both engines share; the defaults guard against Whisper's failure modes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 5
    # A window (or 30 s chunk) whose no-speech probability is above this, and whose text
    # is unlikely, is taken as silence: Whisper invents text there otherwise.
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    # Text that gzip squeezes more than this is a repetition loop.
    compression_ratio_threshold: float = 2.4
    # Decode again at these temperatures when a chunk loops (faster-whisper: or another
    # threshold is missed).
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    # faster-whisper: Silero VAD (shipped inside the wheel) drops non-speech first.
    vad_filter: bool = True
    # 30 s chunks decoded together: transformers always, faster-whisper when ``batched``;
    # None: as many as the device's free memory holds once the model is loaded
    # (``batch_size.choose_batch_size``).
    batch_size: int | None = None
    # faster-whisper: audio longer than one window goes through BatchedInferencePipeline
    # (VAD-cut chunks decoded ``batch_size`` at a time; the thresholds above kept) ...
    batched: bool = False
    # ... in these languages (Whisper codes) only; None: in every language.
    batched_languages: frozenset[str] | None = None

    def batches(self, language_code: str) -> bool:
        """Whether faster-whisper decodes this language's long recordings in batches."""
        return self.batched and (
            self.batched_languages is None or language_code in self.batched_languages
        )
