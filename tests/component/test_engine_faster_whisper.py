from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faster_whisper import BatchedInferencePipeline
from faster_whisper.vad import collect_chunks
from support.audio_factory import (
    corrupt_mp3,
    empty_mp3,
    noise_mp3,
    silence_mp3,
    speech_mp3,
    text_as_mp3,
)

from gpu_worker.transcription.audio import SAMPLE_RATE, AudioDecodeError, decode_audio
from gpu_worker.transcription.engines import DecodeOptions, batch_size, load_engine
from gpu_worker.transcription.engines.faster_whisper_engine import (
    WINDOW_SECONDS,
    FasterWhisperEngine,
    chunk_samples,
    speech_chunks,
    uncovered,
)
from gpu_worker.weights.bundled import base_ct2, tiny_en_ct2


def test_tiny_en_hears_the_quick_brown_fox(tmp_path: Path) -> None:
    mp3 = speech_mp3(tmp_path / "fox.mp3", "The quick brown fox jumps over the lazy dog.")
    audio = decode_audio(mp3)
    duration = audio.size / SAMPLE_RATE
    engine = load_engine("faster-whisper", str(tiny_en_ct2()), device="cpu")
    done: list[float] = []
    segments = list(engine.transcribe(audio, "en", progress=done.append))
    text = " ".join(s.text for s in segments).lower()
    assert "quick brown fox" in text
    assert segments[0].start >= 0
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(segments))
    assert segments[-1].end <= duration + 0.5
    assert done


@pytest.mark.parametrize("make", [corrupt_mp3, empty_mp3, text_as_mp3])
def test_bad_files_are_a_clear_decode_error(tmp_path: Path, make: object) -> None:
    path = make(tmp_path / "bad.mp3")  # type: ignore[operator]
    with pytest.raises(AudioDecodeError):
        decode_audio(path)


@pytest.mark.slow
def test_batched_inference_hears_every_chunk_of_a_long_recording(tmp_path: Path) -> None:
    fox = decode_audio(speech_mp3(tmp_path / "fox.mp3", "The quick brown fox jumps."))
    ships = decode_audio(speech_mp3(tmp_path / "ships.mp3", "Seven silver ships sailed north."))
    gap = np.zeros(28 * SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([fox, gap, ships])  # longer than one window: the batched path
    duration = audio.size / SAMPLE_RATE
    options = DecodeOptions(batched=True, batch_size=4)
    engine = load_engine("faster-whisper", str(tiny_en_ct2()), device="cpu", options=options)
    done: list[float] = []

    segments = list(engine.transcribe(audio, "en", progress=done.append))

    # A chunk can span the gap (VAD joins speech into chunks): the words carry the times.
    words = {w.text.strip(" .").lower(): w for s in segments for w in s.words}
    assert words["fox"].end <= fox.size / SAMPLE_RATE + 0.5
    assert words["silver"].start >= duration - ships.size / SAMPLE_RATE - 0.5
    assert all(0 <= s.start <= s.end <= duration + 0.5 for s in segments)
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(segments))
    assert done == [s.end for s in segments]


@pytest.mark.slow
def test_batched_inference_for_some_languages_leaves_the_others_sequential(
    tmp_path: Path,
) -> None:
    fox = decode_audio(speech_mp3(tmp_path / "fox.mp3", "The quick brown fox jumps."))
    ships = decode_audio(speech_mp3(tmp_path / "ships.mp3", "Seven silver ships sailed north."))
    gap = np.zeros(28 * SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([fox, gap, ships])  # longer than one window

    def segments(options: DecodeOptions) -> list[tuple[float, float, str]]:
        engine = load_engine("faster-whisper", str(tiny_en_ct2()), device="cpu", options=options)
        return [(s.start, s.end, s.text) for s in engine.transcribe(audio, "en")]

    sequential = segments(DecodeOptions(batch_size=2))
    batched = segments(DecodeOptions(batched=True, batch_size=2))
    assert batched != sequential  # the two paths cut and time the recording differently
    for_german = DecodeOptions(batched=True, batch_size=2, batched_languages=frozenset({"de"}))
    assert segments(for_german) == sequential
    for_english = DecodeOptions(batched=True, batch_size=2, batched_languages=frozenset({"en"}))
    assert segments(for_english) == batched


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "vad_filter"),
    [
        (silence_mp3, True),
        (noise_mp3, True),
        # Without VAD the batched pipeline itself returns text for this noise (". ." and
        # "Thank you." from tiny.en): the engine's no-speech guard is what keeps it out.
        (noise_mp3, False),
    ],
)
def test_batched_inference_keeps_silence_and_noise_out(
    tmp_path: Path, make: object, vad_filter: bool
) -> None:
    audio = decode_audio(make(tmp_path / "long.mp3", seconds=40))  # type: ignore[operator]
    options = DecodeOptions(batched=True, vad_filter=vad_filter)
    engine = load_engine("faster-whisper", str(tiny_en_ct2()), device="cpu", options=options)
    assert list(engine.transcribe(audio, "en")) == []


def test_uncovered_finds_the_speech_no_word_covers() -> None:
    speech = [(0.0, 4.0), (5.0, 9.0), (10.0, 10.5)]
    covered = [(0.2, 1.0), (1.1, 3.0), (5.2, 6.0)]
    # 3.0..4.0 and 5.0..5.2 have no covered word between them: one span, as 6.0..9.0 and
    # 10.0..10.5; 0.0..0.2 (padding before the first word) and 1.0..1.1 are under the minimum.
    assert uncovered(speech, covered, 1.0) == [(3.0, 5.2), (6.0, 10.5)]
    assert uncovered(speech, [*covered, (7.0, 8.0)], 1.0) == [(3.0, 5.2), (6.0, 7.0), (8.0, 10.5)]
    assert uncovered(speech, covered, 1.3) == [(6.0, 10.5)]
    assert uncovered(speech, [(0.0, 10.5)], 0.1) == []
    assert uncovered(speech, [], 1.0) == [(0.0, 10.5)]


def _three_sentences(tmp_path: Path) -> tuple[np.typing.NDArray[np.float32], list[float]]:
    """Three sentences 14 s apart (a recording over one window), and where each begins."""
    texts = (
        "The quick brown fox jumps over the lazy dog.",
        "Seven silver ships sailed north across the cold grey sea.",
        "Every morning the baker opens his little shop at dawn.",
    )
    gap = np.zeros(14 * SAMPLE_RATE, dtype=np.float32)
    parts: list[np.typing.NDArray[np.float32]] = []
    starts = []
    for i, text in enumerate(texts):
        starts.append(sum(p.size for p in parts) / SAMPLE_RATE)
        parts += [decode_audio(speech_mp3(tmp_path / f"{i}.mp3", text)), gap]
    return np.concatenate(parts), starts


@pytest.mark.slow
def test_speech_chunks_match_the_batched_pipeline_on_real_vad_output(tmp_path: Path) -> None:
    audio, _starts = _three_sentences(tmp_path)
    engine = FasterWhisperEngine(str(tiny_en_ct2()), device="cpu")
    speech = engine._speech(audio)
    window = WINDOW_SECONDS * SAMPLE_RATE
    # One chunk, and (the 5 s limit) one per sentence.
    for max_samples in (window, 5 * SAMPLE_RATE):
        _audio, metadata = collect_chunks(
            audio, [r._asdict() for r in speech], max_duration=max_samples / SAMPLE_RATE
        )
        chunks = speech_chunks(speech, max_samples)
        # (collect_chunks starts with an empty chunk where the first stretch is too long)
        durations = [m["duration"] for m in metadata if m["duration"]]
        assert [chunk_samples(c) / SAMPLE_RATE for c in chunks] == durations
        assert len(chunks) == (1 if max_samples == window else 3)
        assert [r for c in chunks for r in c] == speech


@pytest.mark.slow
def test_batched_inference_decodes_again_the_speech_a_chunk_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio, starts = _three_sentences(tmp_path)
    real = BatchedInferencePipeline.transcribe

    def ends_early(self: BatchedInferencePipeline, *args: Any, **kwargs: Any) -> Any:
        """The real batched pass, its chunks' text ended after the first sentence (as
        Whisper ends a chunk early)."""
        segments, info = real(self, *args, **kwargs)
        return (s for s in segments if "fox" in s.text.lower()), info

    monkeypatch.setattr(BatchedInferencePipeline, "transcribe", ends_early)
    options = DecodeOptions(batched=True, batch_size=4)
    engine = load_engine("faster-whisper", str(tiny_en_ct2()), device="cpu", options=options)

    segments = list(engine.transcribe(audio, "en"))

    words = {w.text.strip(" .,").lower(): w for s in segments for w in s.words}
    assert {"fox", "silver", "shop"} <= words.keys()
    assert starts[1] - 0.5 <= words["silver"].start < starts[2]
    assert words["shop"].start >= starts[2] - 0.5
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(segments))
    # Without the coverage check only the first sentence is there.
    monkeypatch.setattr(
        "gpu_worker.transcription.engines.faster_whisper_engine.UNCOVERED_SECONDS", 1e9
    )
    unchecked = " ".join(s.text for s in engine.transcribe(audio, "en")).lower()
    assert "fox" in unchecked
    assert "silver" not in unchecked


def test_batched_inference_takes_its_batch_size_from_the_free_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=batch_size.__name__)
    FasterWhisperEngine(str(tiny_en_ct2()), "cpu", options=DecodeOptions(batched=False))
    assert not [r for r in caplog.records if r.name == batch_size.__name__]  # unbatched: none

    FasterWhisperEngine(str(tiny_en_ct2()), "cpu", options=DecodeOptions(batched=True))

    [record] = [r for r in caplog.records if r.name == batch_size.__name__]
    chosen = vars(record)  # the log line's fields
    size = batch_size.ModelSize.of_ct2(tiny_en_ct2())
    assert size == batch_size.ModelSize(width=384, decoder_layers=4)  # Whisper tiny's shape
    # int8 on a CPU: CTranslate2's activations are float32.
    assert chosen["chunk_bytes"] == batch_size.chunk_bytes(size, "cpu", activation_bytes=4)
    assert chosen["batch_size"] == batch_size.batch_size_for(
        chosen["free_bytes"], chosen["chunk_bytes"], "cpu"
    )
    assert record.getMessage() == f"batch size {chosen['batch_size']} from the cpu's free memory"
    assert batch_size.ModelSize.of_ct2(base_ct2()) == batch_size.ModelSize(512, 6)
