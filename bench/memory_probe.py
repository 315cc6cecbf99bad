"""One memory measurement in a fresh process: ``python -m bench.memory_probe ...``.

Loads the engine, decodes the whole file the way this checkout's worker does (window by
window where ``gpu_worker.transcription.audio.stream_audio`` exists, else all at once with
``decode_audio``), runs the engine on the first ``--cap-seconds`` of the audio, and prints
peak RSS (and GPU memory) as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil

import gpu_worker.transcription.audio as audio_module
from gpu_worker.transcription.audio import SAMPLE_RATE


@dataclass(frozen=True)
class Probe:
    decode_path: str  # "stream_audio windows" or "decode_audio whole file"
    audio_seconds: float
    transcribed_seconds: float
    rss_after_load_mib: float
    rss_after_decode_mib: float
    peak_rss_mib: float
    peak_gpu_mib: float | None
    decode_seconds: float
    transcribe_seconds: float
    rtf: float


class GpuSampler:
    """Peak memory.used of GPU 0 (nvidia-smi every 0.2 s): what CTranslate2 and torch hold."""

    def __init__(self) -> None:
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float | None:
        try:
            query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
            out = subprocess.run(
                [*query, "-i", "0"], check=True, capture_output=True, text=True, timeout=10
            ).stdout
            return float(out.strip().splitlines()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._sample()
            if value is not None:
                self.peak = value if self.peak is None else max(self.peak, value)
            self._stop.wait(0.2)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class _Window:
    samples: npt.NDArray[np.float32]
    seconds: float  # spent decoding it


# The windowed decoder is newer than this module may be: looked up, not imported.
_STREAM: Callable[[str], Iterable[Any]] | None = vars(audio_module).get("stream_audio")
DECODE_PATH = "decode_audio whole file" if _STREAM is None else "stream_audio windows"


def _warm_up_decoder() -> None:
    """Decode a second of silence first: the decoder's lazy imports are not decode time."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "silence.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(b"\0\0" * SAMPLE_RATE)
        for _ in _windows(str(path)):
            pass


def _windows(path: str) -> Iterator[_Window]:
    """The audio as the worker decodes it, with the time each piece took."""
    if _STREAM is not None:
        stream = iter(_STREAM(path))
        while True:
            started = time.perf_counter()
            window = next(stream, None)
            if window is None:
                return
            yield _Window(window.samples, time.perf_counter() - started)
    started = time.perf_counter()
    whole = audio_module.decode_audio(path)
    yield _Window(whole, time.perf_counter() - started)


def _rss_mib() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--audio", required=True)
    parser.add_argument("--engine", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--compute", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--language", default="en")
    parser.add_argument("--cap-seconds", type=float, required=True)
    args = parser.parse_args(argv)

    from bench.engines import EngineSpec, load

    on_gpu = args.device == "cuda" and shutil.which("nvidia-smi") is not None
    sampler = GpuSampler() if on_gpu else None
    if sampler is not None:
        sampler.__enter__()
    engine, _ = load(EngineSpec(args.engine, args.model, args.compute), args.device)
    _warm_up_decoder()
    after_load = _rss_mib()
    cap = int(args.cap_seconds * SAMPLE_RATE)
    decode_seconds = transcribe_seconds = 0.0
    after_decode = 0.0
    samples = transcribed_samples = 0
    for window in _windows(args.audio):
        decode_seconds += window.seconds
        samples += window.samples.size
        after_decode = max(after_decode, _rss_mib())
        left = cap - transcribed_samples
        if left > 0:
            part = window.samples[:left]
            started = time.perf_counter()
            for _ in engine.transcribe(part, args.language):
                pass
            transcribe_seconds += time.perf_counter() - started
            transcribed_samples += part.size
    if sampler is not None:
        sampler.__exit__()
    # ru_maxrss is in KiB on Linux: the high-water mark of the whole process.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    transcribed = transcribed_samples / SAMPLE_RATE
    probe = Probe(
        decode_path=DECODE_PATH,
        audio_seconds=round(samples / SAMPLE_RATE, 2),
        transcribed_seconds=round(transcribed, 2),
        rss_after_load_mib=round(after_load, 1),
        rss_after_decode_mib=round(after_decode, 1),
        peak_rss_mib=round(peak, 1),
        peak_gpu_mib=None if sampler is None else sampler.peak,
        decode_seconds=round(decode_seconds, 3),
        transcribe_seconds=round(transcribe_seconds, 3),
        rtf=round(transcribe_seconds / transcribed, 4),
    )
    json.dump(asdict(probe), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
