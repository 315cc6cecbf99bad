"""Decoding uploaded audio to what Whisper takes: 16 kHz mono float32, in bounded windows.

PyAV (FFmpeg) decodes and resamples frame by frame, so a 3-hour file is never held
whole: ``stream_audio`` yields windows of at most ``window_seconds``, each cut at the
quietest moment near its end so that a word is rarely split between two windows.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import av
import numpy as np
import numpy.typing as npt

from pipeline_core.errors import PermanentError

SAMPLE_RATE: Final = 16_000
WINDOW_SECONDS: Final = 600.0
CUT_SEARCH_SECONDS: Final = 5.0
QUIET_FRAME_SECONDS: Final = 0.1

Samples = npt.NDArray[np.float32]


class AudioDecodeError(PermanentError, ValueError):
    """The file is empty, corrupt, truncated or not audio: retrying will not help."""


@dataclass(frozen=True)
class AudioInfo:
    """What a probe learns before decoding: ``duration`` is the container's estimate."""

    duration: float
    codec: str


@dataclass(frozen=True)
class AudioWindow:
    """A stretch of the recording; ``start`` in seconds from the start of the file."""

    start: float
    samples: Samples

    @property
    def duration(self) -> float:
        return self.samples.size / SAMPLE_RATE


def _undecodable(exc: BaseException | str) -> AudioDecodeError:
    # Some decoders raise with an empty message: then the error's type is the detail.
    detail = str(exc).strip() or type(exc).__name__
    return AudioDecodeError(f"the file could not be decoded as audio: {detail}")


def _open(path: Path) -> av.container.InputContainer:
    if path.stat().st_size == 0:
        raise AudioDecodeError("the file is empty (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise _undecodable(exc) from None


def _audio_stream(container: av.container.InputContainer) -> av.AudioStream:
    if not container.streams.audio:
        raise _undecodable("it has no audio stream")
    return container.streams.audio[0]


def probe_audio(path: str | Path) -> AudioInfo:
    """Open ``path``, find its audio and decode its first frame, or raise
    ``AudioDecodeError`` saying why; cheap, so bad files fail before transcription."""
    with _open(Path(path)) as container:
        stream = _audio_stream(container)
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise _undecodable(exc) from None
        if first is None:
            raise _undecodable("no audio samples")
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        return AudioInfo(duration=duration, codec=stream.codec_context.name)


def quiet_cut(samples: Samples, earliest: int, latest: int) -> int:
    """The index between ``earliest`` and ``latest`` at the middle of the quietest
    ``QUIET_FRAME_SECONDS`` frame (the latest of equals): the least harmful place to cut."""
    frame = int(QUIET_FRAME_SECONDS * SAMPLE_RATE)
    earliest = max(0, earliest)
    span = samples[earliest:latest]
    frames = span.size // frame
    if frames < 2:
        return latest
    energy = np.square(span[: frames * frame].reshape(frames, frame)).sum(axis=1)
    quietest = frames - 1 - int(np.argmin(energy[::-1]))
    return earliest + quietest * frame + frame // 2


def _resampled(path: Path) -> Iterator[Samples]:
    with _open(path) as container:
        stream = _audio_stream(container)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            for out in resampler.resample(None):  # flush what the resampler holds
                yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        except av.FFmpegError as exc:
            raise _undecodable(exc) from None


def stream_audio(
    path: str | Path,
    window_seconds: float = WINDOW_SECONDS,
    search_seconds: float = CUT_SEARCH_SECONDS,
) -> Generator[AudioWindow]:
    """Yield ``path`` as consecutive windows of at most ``window_seconds`` (the last may be
    shorter), each cut at the quietest point of its last ``search_seconds``.

    Raises ``AudioDecodeError`` (before the first window where the file is bad from the
    start) for a file that is not usable audio.
    """
    window = int(window_seconds * SAMPLE_RATE)
    search = min(int(search_seconds * SAMPLE_RATE), window // 2)
    pending: list[Samples] = []
    held = 0
    start = 0  # samples yielded so far
    for chunk in _resampled(Path(path)):
        pending.append(chunk)
        held += chunk.size
        while held >= window:
            buffer = np.concatenate(pending)
            cut = quiet_cut(buffer, window - search, window)
            yield AudioWindow(start=start / SAMPLE_RATE, samples=buffer[:cut].copy())
            start += cut
            pending, held = [buffer[cut:]], buffer.size - cut
    if start == 0 and held == 0:
        raise _undecodable("no audio samples")
    if held:
        yield AudioWindow(start=start / SAMPLE_RATE, samples=np.concatenate(pending))


def decode_audio(path: str | Path) -> Samples:
    """The whole of ``path`` at once: for short clips (tests, tools), not for the daemon."""
    return np.concatenate([w.samples for w in stream_audio(path)]).astype(np.float32, copy=False)
