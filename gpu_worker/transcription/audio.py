"""Decoding uploaded audio to what Whisper takes: 16 kHz mono float32, in bounded windows.

PyAV (FFmpeg) decodes and resamples frame by frame, so a 3-hour file is never held
whole: ``stream_audio`` yields windows of at most ``window_seconds``, each cut at the
quietest moment near its end so that a word is rarely split between two windows.
``WindowReadAhead`` decodes the next window while the engine works on the current one.
"""

from __future__ import annotations

import contextvars
import queue
import threading
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
    window, search = _window_and_search(window_seconds, search_seconds)
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


def _window_and_search(window_seconds: float, search_seconds: float) -> tuple[int, int]:
    """A window's samples, and how far back from its end ``stream_audio`` looks for the cut."""
    window = int(window_seconds * SAMPLE_RATE)
    return window, min(int(search_seconds * SAMPLE_RATE), window // 2)


def may_continue(first: AudioWindow, window_seconds: float, search_seconds: float) -> bool:
    """Whether ``stream_audio`` may yield more after ``first``: only a window cut at its
    limit (within the last ``search_seconds``) has others after it."""
    window, search = _window_and_search(window_seconds, search_seconds)
    return first.samples.size >= window - search


def decode_audio(path: str | Path) -> Samples:
    """The whole of ``path`` at once: for short clips (tests, tools), not for the daemon."""
    return np.concatenate([w.samples for w in stream_audio(path)]).astype(np.float32, copy=False)


_END: Final = object()  # the stream is exhausted
_HANDOVER_POLL_SECONDS: Final = 0.2  # how often a blocked hand-over looks for a close


class WindowReadAhead:
    """The windows of ``stream`` after ``first``, the next one decoded on a thread of its
    own while the caller works on the current one, so that the engine does not wait for the
    decoder between the windows of a long recording (about 0.9 s per 600 s window of MP3
    here). One window is decoded ahead, no more (the next waits until the caller takes it):
    the memory of one window more. A decoding error is raised where the window it stopped at
    would have come. ``close`` stops the thread (after a window in progress) and closes
    ``stream``."""

    def __init__(
        self, first: AudioWindow, stream: Generator[AudioWindow], *, ahead: bool = True
    ) -> None:
        self._first = first
        self._stream = stream
        self._ahead = ahead  # False: no thread, the rest read in turn (a one-window file)
        self._slot: queue.Queue[object] = queue.Queue(maxsize=1)
        self._taken = threading.Event()  # the caller took what the decoder handed over
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[AudioWindow]:
        if not self._ahead:
            yield self._first
            yield from self._stream
            return
        self._start()
        yield self._first
        while not self._closed.is_set():
            try:
                item = self._slot.get(timeout=_HANDOVER_POLL_SECONDS)
            except queue.Empty:
                continue
            self._taken.set()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, AudioWindow)
            yield item

    def close(self) -> None:
        self._closed.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        else:
            self._stream.close()

    def _start(self) -> None:
        if self._thread is not None or self._closed.is_set():
            return
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._decode,), name="decode-ahead", daemon=True
        )
        self._thread.start()

    def _decode(self) -> None:
        try:
            for window in self._stream:
                if not self._hand_over(window):
                    return
            self._hand_over(_END)
        except Exception as exc:  # the caller raises it, in its place among the windows
            self._hand_over(exc)
        finally:
            self._stream.close()

    def _hand_over(self, item: object) -> bool:
        """Put ``item`` where the caller takes it, and wait until it has: False when closed
        first."""
        self._taken.clear()
        self._slot.put(item)  # empty: the caller took the one before
        while not self._closed.is_set():
            if self._taken.wait(_HANDOVER_POLL_SECONDS):
                return True
        return False
