"""Peak memory against audio length, each length in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.clips import looped_mp3
from bench.engines import EngineSpec
from bench.paths import REPO_ROOT


@dataclass(frozen=True)
class MemoryRun:
    engine: str
    model: str
    compute_type: str
    device: str
    audio_minutes: float
    decode_path: str  # how the worker's code decoded the file
    audio_seconds: float
    transcribed_seconds: float  # the engine ran on this much of the start of the file
    rss_after_load_mib: float
    rss_after_decode_mib: float
    peak_rss_mib: float
    peak_gpu_mib: float | None
    decode_seconds: float
    transcribe_seconds: float
    rtf: float
    method: str


def method(cap_seconds: float) -> str:
    return (
        "fresh process per length; synthetic audio: concatenated speech looped to length "
        "(16 kHz mono MP3); the whole file decoded as the worker decodes it (decode path in "
        f"the table); the engine run on the first {cap_seconds:.0f} s only (bounded run "
        "time); RSS after decode = the highest seen while decoding; peak RSS = the "
        "process's ru_maxrss; GPU = peak nvidia-smi memory.used"
    )


def measure(
    spec: EngineSpec,
    device: str,
    *,
    speech: Path,
    language: str,
    minutes: list[float],
    cap_seconds: float,
    work_dir: Path,
) -> list[MemoryRun]:
    runs = []
    for length in minutes:
        audio = looped_mp3(speech, length * 60, work_dir / f"long-{length:g}min.mp3")
        out = subprocess.run(
            [
                sys.executable, "-m", "bench.memory_probe", "--audio", str(audio),
                "--engine", spec.engine, "--model", spec.model, "--compute", spec.compute_type,
                "--device", device, "--language", language, "--cap-seconds", str(cap_seconds),
            ],
            check=True, capture_output=True, text=True, cwd=REPO_ROOT,
        )  # fmt: skip
        probe = json.loads(out.stdout.strip().splitlines()[-1])
        audio.unlink()
        runs.append(
            MemoryRun(
                engine=spec.engine,
                model=spec.model,
                compute_type=spec.compute_type,
                device=device,
                audio_minutes=length,
                method=method(cap_seconds),
                **probe,
            )
        )
    return runs
