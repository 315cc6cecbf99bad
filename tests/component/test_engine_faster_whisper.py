from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from support.audio_factory import corrupt_mp3, empty_mp3, speech_mp3, text_as_mp3

from gpu_worker.transcription.audio import SAMPLE_RATE, AudioDecodeError, decode_audio
from gpu_worker.transcription.engines import load_engine
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
