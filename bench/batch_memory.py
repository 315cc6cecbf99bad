"""Memory and time of the worker's batched faster-whisper engine against its batch size, each
size in a fresh process: the measurement behind ``WORKER_BATCH_SIZE=auto``
(``gpu_worker/transcription/engines/batch_size.py``), whose estimate of a chunk's memory
each row is set against. ``python -m bench.batch_memory`` is one probe.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

import psutil

from bench.clips import looped_mp3, padded_mp3
from bench.engines import model_dir
from bench.paths import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

    from bench.engines import EngineSpec

SETTINGS: Final = (
    "gpu_worker's FasterWhisperEngine with WORKER_BATCHED_INFERENCE at each batch size, in a "
    "fresh process each, on one recording (a clip looped to length; --quick: its one clip "
    "padded with silence); one window transcribed "
    "first (untimed); peak RSS = the process's ru_maxrss, GPU = peak nvidia-smi memory.used; "
    "estimate = what WORKER_BATCH_SIZE=auto takes one chunk to cost on this device "
    "(batch_size.chunk_bytes), against the growth from the size before"
)


@dataclass(frozen=True)
class BatchSizeRun:
    batch_size: int
    audio_seconds: float
    rss_before_mib: float  # after the model's load and one window
    peak_rss_mib: float
    peak_gpu_mib: float | None
    seconds: float
    rtf: float


def _probe(argv: list[str] | None = None) -> BatchSizeRun:
    parser = argparse.ArgumentParser()
    for name in ("--audio", "--model-dir", "--compute", "--device", "--language"):
        parser.add_argument(name, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    args = parser.parse_args(argv)

    from bench.memory_probe import GpuSampler
    from gpu_worker.transcription.audio import SAMPLE_RATE, decode_audio
    from gpu_worker.transcription.engines import DecodeOptions
    from gpu_worker.transcription.engines.faster_whisper_engine import (
        WINDOW_SECONDS,
        FasterWhisperEngine,
    )

    audio = decode_audio(args.audio)
    options = DecodeOptions(batched=True, batch_size=args.batch_size)
    engine = FasterWhisperEngine(args.model_dir, args.device, args.compute, options)
    list(engine.transcribe(audio[: (WINDOW_SECONDS + 1) * SAMPLE_RATE], args.language))
    before = psutil.Process().memory_info().rss / 2**20
    on_gpu = args.device == "cuda" and shutil.which("nvidia-smi") is not None
    sampler = GpuSampler() if on_gpu else None
    with sampler or contextlib.nullcontext():
        started = time.perf_counter()
        for _segment in engine.transcribe(audio, args.language):
            pass
        took = time.perf_counter() - started
    seconds = audio.size / SAMPLE_RATE
    return BatchSizeRun(
        batch_size=args.batch_size,
        audio_seconds=round(seconds, 2),
        rss_before_mib=round(before, 1),
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, 1),
        peak_gpu_mib=None if sampler is None else sampler.peak,
        seconds=round(took, 3),
        rtf=round(took / seconds, 4),
    )


def measure(
    spec: EngineSpec,
    device: str,
    *,
    speech: Path,
    language: str,
    seconds: float,
    batch_sizes: list[int],
    work_dir: Path,
    pad: bool = False,
) -> dict[str, Any]:
    """Each batch size on ``speech`` looped to ``seconds`` (``pad``: silence after it
    instead, for a clip too short to loop without repeating itself within a window)."""
    from gpu_worker.transcription.engines.batch_size import (
        MOST_CHUNKS,
        ModelSize,
        chunk_bytes,
        ct2_activation_bytes,
    )

    lengthen = padded_mp3 if pad else looped_mp3
    audio = lengthen(speech, seconds, work_dir / f"batch-memory-{seconds:g}s.mp3")
    directory = model_dir(spec.engine, spec.model)
    runs = []
    for size in batch_sizes:
        out = subprocess.run(
            [
                sys.executable, "-m", "bench.batch_memory", "--audio", str(audio),
                "--model-dir", str(directory), "--compute", spec.compute_type,
                "--device", device, "--language", language, "--batch-size", str(size),
            ],
            check=True, capture_output=True, text=True, cwd=REPO_ROOT,
        )  # fmt: skip
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    activation_bytes = ct2_activation_bytes(spec.compute_type)
    estimate = chunk_bytes(ModelSize.of_ct2(directory), device, activation_bytes)
    return {
        "engine": spec.engine,
        "model": spec.model,
        "compute_type": spec.compute_type,
        "device": device,
        "settings": SETTINGS,
        "estimate_chunk_mib": round(estimate / 2**20, 1),
        "most_chunks": MOST_CHUNKS[device],
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(asdict(_probe(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
