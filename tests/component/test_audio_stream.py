"""The streaming decoder: bounded windows that add up to the whole file; clear errors."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from support.audio_factory import corrupt_mp3, empty_mp3, speech_mp3, text_as_mp3
from support.waiting import wait_until

from gpu_worker.transcription.audio import (
    SAMPLE_RATE,
    AudioDecodeError,
    AudioWindow,
    WindowReadAhead,
    decode_audio,
    may_continue,
    probe_audio,
    quiet_cut,
    stream_audio,
)
from gpu_worker.transcription.recognize import OpenedAudio, transcribe_file
from gpu_worker.transcription.transcript import Segment


def ffmpeg_decode(path: Path) -> npt.NDArray[np.float32]:
    raw = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(path), "-ac", "1", "-ar", str(SAMPLE_RATE),
         "-f", "f32le", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, dtype=np.float32)


def tone_with_gaps(path: Path, seconds: int) -> Path:
    """A 440 Hz tone, silent for 0.5 s every 2 s: quiet places to cut at."""
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
         f"sine=f=440:r=44100:d={seconds}", "-af", "volume='lt(mod(t,2),1.5)':eval=frame",
         "-ac", "2", "-b:a", "96k", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def fox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_mp3(tmp_path_factory.mktemp("a") / "fox.mp3", "The quick brown fox.")


def test_windows_add_up_to_the_whole_file(fox: Path) -> None:
    windows = list(stream_audio(fox, window_seconds=1.0, search_seconds=0.3))
    joined = np.concatenate([w.samples for w in windows])
    reference = ffmpeg_decode(fox)
    assert len(windows) >= 2
    assert abs(joined.size - reference.size) <= 0.01 * SAMPLE_RATE
    n = min(joined.size, reference.size)
    assert np.max(np.abs(joined[:n] - reference[:n])) < 1e-3
    assert all(w.samples.dtype == np.float32 for w in windows)
    starts = [w.start for w in windows]
    assert starts == [sum(w.duration for w in windows[:i]) for i in range(len(windows))]
    assert probe_audio(fox).duration == pytest.approx(joined.size / SAMPLE_RATE, abs=0.1)


def test_a_long_file_is_held_one_window_at_a_time(tmp_path: Path) -> None:
    path = tone_with_gaps(tmp_path / "long.mp3", seconds=60)
    windows = stream_audio(path, window_seconds=10.0, search_seconds=1.0)
    sizes, tails = [], []
    for window in windows:  # one at a time: nothing keeps the earlier ones
        sizes.append(window.samples.size)
        tails.append(float(np.abs(window.samples[-400:]).max()))
    assert max(tails[:-1]) < 0.05  # every cut falls in a gap, not mid-tone
    assert max(sizes) <= 10 * SAMPLE_RATE
    assert min(sizes[:-1]) >= 9 * SAMPLE_RATE
    assert sum(sizes) / SAMPLE_RATE == pytest.approx(60.0, abs=0.1)


def test_quiet_cut_finds_the_gap() -> None:
    audio = np.ones(SAMPLE_RATE * 3, dtype=np.float32)
    audio[int(1.2 * SAMPLE_RATE) : int(1.5 * SAMPLE_RATE)] = 0.0
    cut = quiet_cut(audio, SAMPLE_RATE, 2 * SAMPLE_RATE)
    assert 1.2 * SAMPLE_RATE <= cut <= 1.5 * SAMPLE_RATE


def truncated_m4a(path: Path) -> Path:
    """An AAC .m4a cut short: its index (moov, written last) is missing."""
    whole = path.with_suffix(".whole.m4a")
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=f=300:d=5",
         "-c:a", "aac", str(whole)],
        check=True, capture_output=True,
    )  # fmt: skip
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (corrupt_mp3, "could not be decoded"),
        (empty_mp3, "empty"),
        (text_as_mp3, "could not be"),
        (truncated_m4a, "could not be"),
    ],
)
def test_bad_files_fail_at_the_probe(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path / "bad.mp3")
    with pytest.raises(AudioDecodeError, match=reason):
        probe_audio(path)
    with pytest.raises(AudioDecodeError, match=reason):
        decode_audio(path)


class EchoEngine:
    """Says "window" once per window, spanning it and a little beyond (to be clamped)."""

    model_id = "echo"

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        language: str,
        progress: Callable[[float], None] | None = None,
        hotwords: str | None = None,
    ) -> Iterator[Segment]:
        seconds = audio.size / SAMPLE_RATE
        if progress is not None:
            progress(seconds)
        yield Segment(start=-0.5, end=seconds + 5.0, text="window")


def test_transcribe_file_offsets_and_clamps_each_window(tmp_path: Path) -> None:
    path = tone_with_gaps(tmp_path / "tone.mp3", seconds=25)
    reports: list[tuple[float, float]] = []

    def record(done: float, total: float) -> None:
        reports.append((done, total))

    segments = list(transcribe_file(EchoEngine(), path, "en", record, window_seconds=10.0))
    assert len(segments) == 3
    assert segments[0].start == 0.0
    assert all(a.end == pytest.approx(b.start) for a, b in itertools.pairwise(segments))
    assert segments[-1].end == pytest.approx(25.0, abs=0.1)
    assert reports[-1][0] == reports[-1][1] == pytest.approx(25.0, abs=0.1)
    done = [d for d, _ in reports]
    assert done == sorted(done)


def _window(start: float, seconds: float = 1.0) -> AudioWindow:
    return AudioWindow(start=start, samples=np.full(int(seconds * SAMPLE_RATE), start, np.float32))


def test_opened_audio_reads_the_same_windows_as_the_stream(tmp_path: Path) -> None:
    path = tone_with_gaps(tmp_path / "tone.mp3", seconds=25)
    expected = list(stream_audio(path, window_seconds=10.0))
    opened = OpenedAudio(path, window_seconds=10.0)
    try:
        read = list(opened.windows)
    finally:
        opened.close()
    assert [w.start for w in read] == [w.start for w in expected]
    assert len(read) == 3
    for got, want in zip(read, expected, strict=True):
        assert np.array_equal(got.samples, want.samples)


def test_only_a_window_cut_at_its_limit_may_have_more_after_it(fox: Path, tmp_path: Path) -> None:
    path = tone_with_gaps(tmp_path / "tone.mp3", seconds=25)
    windows = list(stream_audio(path, window_seconds=10.0, search_seconds=1.0))
    assert [may_continue(w, 10.0, 1.0) for w in windows] == [True, True, False]
    [whole] = list(stream_audio(fox, window_seconds=600.0))
    assert not may_continue(whole, 600.0, 5.0)  # no read-ahead thread for a short file


def test_the_next_window_is_decoded_while_the_caller_holds_this_one() -> None:
    produced: list[float] = []
    second_decoded = threading.Event()

    def stream() -> Iterator[AudioWindow]:
        for start in (1.0, 2.0, 3.0):
            produced.append(start)
            if start == 2.0:
                second_decoded.set()
            yield _window(start)

    read_ahead = WindowReadAhead(_window(0.0), stream())  # type: ignore[arg-type]
    windows = iter(read_ahead)
    assert next(windows).start == 0.0
    # The caller has not asked for the next window: the decoder makes it all the same ...
    wait_until(lambda: produced == [1.0], 10, "the decoder to make window 1")
    time.sleep(0.2)
    assert produced == [1.0]  # ... and no more, until the caller takes it
    assert next(windows).start == 1.0
    assert second_decoded.wait(10)  # while the caller works on window 1
    assert [w.start for w in windows] == [2.0, 3.0]
    read_ahead.close()


def test_a_decoding_error_comes_in_its_place_and_close_ends_the_decoder() -> None:
    closed = threading.Event()

    def failing() -> Iterator[AudioWindow]:
        try:
            yield _window(1.0)
            raise AudioDecodeError("the file could not be decoded as audio: truncated")
        finally:
            closed.set()

    read_ahead = WindowReadAhead(_window(0.0), failing())  # type: ignore[arg-type]
    windows = iter(read_ahead)
    assert [next(windows).start, next(windows).start] == [0.0, 1.0]
    with pytest.raises(AudioDecodeError, match="truncated"):
        next(windows)
    read_ahead.close()
    assert closed.is_set()

    endless_closed = threading.Event()

    def endless() -> Iterator[AudioWindow]:
        try:
            for start in itertools.count(1):
                yield _window(float(start))
        finally:
            endless_closed.set()

    stopped = WindowReadAhead(_window(0.0), endless())  # type: ignore[arg-type]
    assert next(iter(stopped)).start == 0.0
    stopped.close()  # mid-stream: the decoder thread ends and closes its stream
    assert endless_closed.is_set()
