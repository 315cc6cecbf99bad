"""What a figure was measured on: machine, accelerator, versions, commit and date."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata

import psutil

from bench.paths import REPO_ROOT

PACKAGES = (
    "faster-whisper",
    "ctranslate2",
    "torch",
    "transformers",
    "numpy",
    "librosa",
    "jiwer",
    "moto",
)


@dataclass(frozen=True)
class Environment:
    date_utc: str
    machine: str
    cpu: str
    cpu_cores: int
    memory_gib: float
    gpu: str | None
    device: str  # where the engines ran: "cpu" or "cuda"
    python: str
    platform: str
    versions: dict[str, str | None]
    git_commit: str | None
    git_dirty: bool | None
    # Other work on the machine slows every figure: 1-minute load average when collected.
    load_average_1min: float


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first CUDA device's name, or None on a machine without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out else None


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], check=True, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def collect(device: str) -> Environment:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return Environment(
        date_utc=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        machine=platform.node(),
        cpu=_cpu_name(),
        cpu_cores=os.cpu_count() or 0,
        memory_gib=round(psutil.virtual_memory().total / 2**30, 1),
        gpu=gpu_name(),
        device=device,
        python=platform.python_version(),
        platform=platform.platform(),
        versions={name: _version(name) for name in PACKAGES},
        git_commit=_git("rev-parse", "--short=12", "HEAD"),
        git_dirty=None if status is None else bool(status),
        load_average_1min=round(os.getloadavg()[0], 2),
    )
