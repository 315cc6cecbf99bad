"""CTranslate2 Whisper through faster-whisper: the fastest proven Whisper runtime."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.transcribe import get_compression_ratio, restore_speech_timestamps
from faster_whisper.vad import VadOptions, get_speech_timestamps

from gpu_worker.transcription.audio import SAMPLE_RATE
from gpu_worker.transcription.engines import check_language
from gpu_worker.transcription.engines.batch_size import (
    ModelSize,
    choose_batch_size,
    ct2_activation_bytes,
)
from gpu_worker.transcription.engines.options import DecodeOptions
from gpu_worker.transcription.transcript import Segment, Word

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy.typing as npt
    from faster_whisper.transcribe import Segment as WhisperSegment

WINDOW_SECONDS: Final = 30  # Whisper's input window
# Batched path: speech (VAD) at least this long that no kept word covers is decoded again.
# Under it: the VAD's padding (0.4 s each side of a stretch of speech) and word-time slack.
UNCOVERED_SECONDS: Final = 1.0
REDECODE_ROUNDS: Final = 3  # a re-decoded span can end early too: its rest, at most this often


class SpeechRegion(NamedTuple):
    """A stretch of speech the VAD found, in samples."""

    start: int
    end: int


def speech_chunks(speech: list[SpeechRegion], max_samples: int) -> list[list[SpeechRegion]]:
    """``speech`` in order, cut into chunks of at most ``max_samples`` of speech each (the
    silence between stretches not counted), as faster-whisper's ``collect_chunks`` cuts."""
    chunks: list[list[SpeechRegion]] = []
    size = 0
    for region in speech:
        length = region.end - region.start
        if not chunks or size + length > max_samples:
            chunks.append([])
            size = 0
        chunks[-1].append(region)
        size += length
    return chunks


def chunk_samples(chunk: list[SpeechRegion]) -> int:
    return sum(r.end - r.start for r in chunk)


def uncovered(
    speech: list[tuple[float, float]], covered: list[tuple[float, float]], minimum: float
) -> list[tuple[float, float]]:
    """The spans of ``speech`` (seconds, in order) that no ``covered`` interval overlaps, the
    pieces joined where nothing covered lies between them; those holding at least
    ``minimum`` seconds of speech, from the first piece's start to the last one's end."""
    pieces: list[tuple[float, float]] = []
    for start, end in speech:
        cursor = start
        for c_start, c_end in sorted(covered):
            if c_end <= cursor or c_start >= end:
                continue
            if c_start > cursor:
                pieces.append((cursor, c_start))
            cursor = max(cursor, c_end)
        if cursor < end:
            pieces.append((cursor, end))
    spans: list[list[tuple[float, float]]] = []
    for piece in pieces:
        between = spans and any(
            c_start < piece[0] and c_end > spans[-1][-1][1] for c_start, c_end in covered
        )
        if spans and not between:
            spans[-1].append(piece)
        else:
            spans.append([piece])
    return [
        (span[0][0], span[-1][1])
        for span in spans
        if sum(end - start for start, end in span) >= minimum
    ]


def _covered(segments: list[WhisperSegment]) -> list[tuple[float, float]]:
    """Where ``segments`` have text: their words' times (a segment's own without words)."""
    return [(w.start, w.end) for s in segments for w in s.words or ()] + [
        (s.start, s.end) for s in segments if not s.words
    ]


def _clamped(segment: WhisperSegment, start: float, end: float) -> WhisperSegment:
    """``segment`` and its words held inside ``start``..``end``: a re-decoded span's text
    must not overlap the kept text around it."""

    def inside(t: float) -> float:
        return min(max(t, start), end)

    words = [
        dataclasses.replace(w, start=inside(w.start), end=inside(w.end))
        for w in segment.words or ()
    ]
    return dataclasses.replace(
        segment, start=inside(segment.start), end=inside(segment.end), words=words or None
    )


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
        compute_type = compute_type or default_compute
        self._model = WhisperModel(model_dir, device=resolved, compute_type=compute_type)
        if self._options.batched and self._options.batch_size is None:
            size = ModelSize.of_ct2(model_dir)
            chosen = choose_batch_size(size, resolved, ct2_activation_bytes(compute_type))
            self._options = dataclasses.replace(self._options, batch_size=chosen)

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
        batches = self._options.batches(decoding.language_code)
        if batches and audio.size > WINDOW_SECONDS * SAMPLE_RATE:
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
        """Chunks decoded ``batch_size`` at a time, then the coverage check, chunk by chunk.

        The batched pipeline decodes each chunk once, at the first temperature. A chunk's text
        is kept where it passes the thresholds the sequential path checks (log-probability,
        compression ratio over the chunk's text); then any speech of the chunk that no kept
        word covers (text that ended early, a chunk that missed a threshold) is decoded again
        on the sequential path, with its temperature fallback. A chunk taken for silence is
        dropped outright only without VAD: with VAD its speech is decoded again like the rest.
        """
        options = self._options
        speech = self._speech(audio)
        chunks = speech_chunks(speech, WINDOW_SECONDS * SAMPLE_RATE)
        if not chunks:
            return
        # The chunks' speech end to end: the pipeline decodes each span as one chunk, the
        # silence between its stretches of speech left out (as its own VAD path does).
        joined = np.concatenate([audio[r.start : r.end] for chunk in chunks for r in chunk])
        offsets = list(itertools.accumulate((chunk_samples(c) for c in chunks), initial=0))
        spans = [
            {"start": offsets[i] / SAMPLE_RATE, "end": offsets[i + 1] / SAMPLE_RATE}
            for i in range(len(chunks))
        ]
        pipeline = BatchedInferencePipeline(model=self._model)
        decoded, _info = pipeline.transcribe(
            joined,
            batch_size=options.batch_size,
            clip_timestamps=spans,
            # With timestamps Whisper writes on past the end of a sentence, and the coverage
            # check has times to go by; without VAD there is no such check (see _cover).
            without_timestamps=not options.vad_filter,
            **self._decoding(decoding),
        )
        restored = iter(
            restore_speech_timestamps(
                decoded, [r._asdict() for chunk in chunks for r in chunk], SAMPLE_RATE
            )
        )
        fps = self._model.frames_per_second
        pending = next(restored, None)
        for chunk, span in zip(chunks, spans, strict=True):
            # The pipeline's seek of a chunk: its offset, cut to samples, in frames.
            seek = int(int(span["start"] * SAMPLE_RATE) / SAMPLE_RATE * fps)
            found: list[WhisperSegment] = []
            while pending is not None and pending.seek == seek:
                found.append(pending)
                pending = next(restored, None)
            yield from self._cover(audio, decoding, chunk, found)
        if pending is not None:
            raise RuntimeError(f"a batched segment of no chunk (seek {pending.seek})")

    def _decode_again(
        self,
        audio: npt.NDArray[np.float32],
        decoding: _Decoding,
        regions: list[tuple[float, float]],
        start: float,
        end: float,
        *,
        rounds: int = REDECODE_ROUNDS,
    ) -> list[WhisperSegment]:
        """``start``..``end`` on the sequential path; what it leaves uncovered in turn (it
        too can end a window early), while each round adds words, up to ``rounds``."""
        found = [_clamped(s, start, end) for s in self._sequential(audio, decoding, (start, end))]
        if not _covered(found) or rounds <= 1:
            return found
        inside = [(max(a, start), min(b, end)) for a, b in regions if a < end and b > start]
        for left, right in uncovered(inside, _covered(found), UNCOVERED_SECONDS):
            found += self._decode_again(audio, decoding, regions, left, right, rounds=rounds - 1)
        return sorted(found, key=lambda s: s.start)

    def _speech(self, audio: npt.NDArray[np.float32]) -> list[SpeechRegion]:
        """Where the VAD hears speech, in samples; without VAD, the recording in 30 s windows."""
        if not self._options.vad_filter:
            window = WINDOW_SECONDS * SAMPLE_RATE
            return [
                SpeechRegion(start, min(start + window, audio.size))
                for start in range(0, audio.size, window)
            ]
        # faster-whisper's batched pipeline's settings: pauses of 160 ms and more cut out,
        # stretches of speech at most one window long.
        vad = VadOptions(max_speech_duration_s=WINDOW_SECONDS, min_silence_duration_ms=160)
        return [SpeechRegion(r["start"], r["end"]) for r in get_speech_timestamps(audio, vad)]

    def _cover(
        self,
        audio: npt.NDArray[np.float32],
        decoding: _Decoding,
        speech: list[SpeechRegion],
        found: list[WhisperSegment],
    ) -> Iterator[WhisperSegment]:
        options = self._options
        kept: list[WhisperSegment] = []
        silence = False
        if found:
            unlikely = found[0].avg_logprob < options.log_prob_threshold
            text = "".join(s.text for s in found)
            looping = get_compression_ratio(text) > options.compression_ratio_threshold
            silence = found[0].no_speech_prob > options.no_speech_threshold and unlikely
            if not (unlikely or looping):
                kept = found
        if not options.vad_filter and (silence or not found or kept):
            # Without VAD nothing but Whisper says where in a window the speech is: a window
            # is kept or dropped whole, or (missing a threshold) decoded again whole.
            yield from kept
            return
        regions = [(r.start / SAMPLE_RATE, r.end / SAMPLE_RATE) for r in speech]
        again: list[WhisperSegment] = []
        for start, end in uncovered(regions, _covered(kept), UNCOVERED_SECONDS):
            # Text that stops before the speech does most likely stops mid-sentence: its
            # segment is decoded again with the rest, which then has the sentence's start.
            left = next((k for k in kept if max(e for _, e in _covered([k])) == start), None)
            begin = start if left is None else min(b for b, _ in _covered([left]))
            redone = self._decode_again(audio, decoding, regions, begin, end)
            if left is not None and redone:
                kept.remove(left)
            again += redone
        yield from sorted(kept + again, key=lambda s: s.start)
