from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from support.audio_factory import (
    corrupt_mp3,
    empty_mp3,
    noise_mp3,
    silence_mp3,
    speech_mp3,
    text_as_mp3,
)

from gpu_worker.transcription.audio import SAMPLE_RATE, AudioDecodeError, decode_audio
from gpu_worker.transcription.engines import DecodeOptions, load_engine
from gpu_worker.weights.bundled import tiny_en_ct2


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
