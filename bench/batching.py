"""The worker's faster-whisper engine batched and not, per language: WER, CER and RTF.

Batching only changes recordings longer than one 30 s window, so each language's clips are
joined into one recording (repeated until it is longer than a window where they are
shorter) and transcribed both ways by the worker's engine class with the worker's options.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from bench.accuracy import pooled
from bench.clips import Clip, by_language, concatenated_mp3
from bench.engines import FASTER_WHISPER, EngineSpec, load
from gpu_worker.transcription.audio import SAMPLE_RATE, decode_audio
from gpu_worker.transcription.engines.faster_whisper_engine import WINDOW_SECONDS

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import numpy.typing as npt

    from gpu_worker.transcription.engines import AsrEngine

SETTINGS: Final = (
    "gpu_worker's FasterWhisperEngine with the worker's decoding options, unbatched and with "
    "WORKER_BATCHED_INFERENCE (BatchedInferencePipeline over VAD-cut chunks with timestamps; a "
    "chunk's text kept where it passes the thresholds, and the speech no kept word covers "
    "decoded again sequentially); each language's clips joined into one recording, repeated "
    "until longer than one 30 s window where shorter; WER pooled over the recording; one "
    "warm-up run, then one timed run each"
)


@dataclass(frozen=True)
class LanguageRow:
    language: str
    clips: int
    repeats: int  # the clips joined this many times over
    audio_seconds: float
    reference_words: int
    unbatched_wer: float | None  # None where the language has no spaces between words
    batched_wer: float | None
    unbatched_cer: float
    batched_cer: float
    unbatched_seconds: float
    batched_seconds: float
    unbatched_rtf: float
    batched_rtf: float


def _recording(language: str, clips: list[Clip], work_dir: Path) -> tuple[Clip, int]:
    seconds = sum(c.duration_s for c in clips)
    repeats = math.floor(WINDOW_SECONDS / seconds) + 1 if seconds <= WINDOW_SECONDS else 1
    joined = clips * repeats
    path = concatenated_mp3(joined, work_dir / f"batching-{language}.mp3")
    clip = Clip(
        clip_id=path.stem,
        path=path,
        language=language,
        reference=" ".join(c.reference for c in joined),
        duration_s=seconds * repeats,
        source=clips[0].source,
    )
    return clip, repeats


def _timed(engine: AsrEngine, audio: npt.NDArray[np.float32], language: str) -> tuple[str, float]:
    started = time.perf_counter()
    text = " ".join(s.text for s in engine.transcribe(audio, language))
    return text, time.perf_counter() - started


def measure(
    spec: EngineSpec,
    device: str,
    clips: list[Clip],
    work_dir: Path,
    batch_size: int,
    *,
    warm_up: bool = True,
) -> list[LanguageRow]:
    """One row per language of ``clips`` that ``spec``'s model can transcribe (``warm_up``:
    each engine first runs one window and a little more untimed, so that the timings leave
    out the first run's set-up; --quick, whose timings are not published, skips it)."""
    assert spec.engine == FASTER_WHISPER
    unbatched, _ = load(replace(spec, batch_size=None), device)
    batched, _ = load(replace(spec, batch_size=batch_size), device)
    grouped = by_language(clips, spec.english_only)
    rows = []
    for language, language_clips in grouped.items():
        recording, repeats = _recording(language, language_clips, work_dir)
        audio = decode_audio(recording.path)
        seconds = audio.size / SAMPLE_RATE
        if warm_up:
            for engine in (unbatched, batched):
                _timed(engine, audio[: (WINDOW_SECONDS + 5) * SAMPLE_RATE], language)
        plain_text, plain_seconds = _timed(unbatched, audio, language)
        batched_text, batched_seconds = _timed(batched, audio, language)
        plain = pooled(language, [(recording, plain_text)])
        with_batches = pooled(language, [(recording, batched_text)])
        rows.append(
            LanguageRow(
                language=language,
                clips=len(language_clips),
                repeats=repeats,
                audio_seconds=round(seconds, 2),
                reference_words=plain.reference_words,
                unbatched_wer=plain.wer,
                batched_wer=with_batches.wer,
                unbatched_cer=plain.cer,
                batched_cer=with_batches.cer,
                unbatched_seconds=round(plain_seconds, 3),
                batched_seconds=round(batched_seconds, 3),
                unbatched_rtf=round(plain_seconds / seconds, 4),
                batched_rtf=round(batched_seconds / seconds, 4),
            )
        )
    return rows
