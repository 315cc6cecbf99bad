"""Which engine, model and compute type a row measures, and loading it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gpu_worker.transcription.engines
from gpu_worker.weights import bundled

if TYPE_CHECKING:
    from gpu_worker.transcription.engines import AsrEngine

FASTER_WHISPER = "faster-whisper"
TRANSFORMERS = "transformers"


@dataclass(frozen=True)
class EngineSpec:
    engine: str
    model: str  # "tiny.en" (English only) or "base" (multilingual)
    compute_type: str  # faster-whisper's compute type; transformers: the dtype it picks
    # 30 s chunks decoded together: transformers; faster-whisper batched inference when set
    batch_size: int | None = None

    @property
    def english_only(self) -> bool:
        return self.model.endswith(".en")

    @property
    def label(self) -> str:
        batch = "" if self.batch_size is None else f" batch {self.batch_size}"
        return f"{self.engine} {self.model} {self.compute_type}{batch}"


@dataclass(frozen=True)
class Skipped:
    what: str
    reason: str


_WEIGHTS: dict[tuple[str, str], str] = {
    (FASTER_WHISPER, "tiny.en"): "tiny_en_ct2",
    (FASTER_WHISPER, "base"): "base_ct2",
    (TRANSFORMERS, "tiny.en"): "tiny_en_hf",
    (TRANSFORMERS, "base"): "base_hf",
}


def model_dir(engine: str, model: str) -> Path:
    """The bundled weights of ``model`` for ``engine``; AttributeError if not built yet."""
    finder: Callable[[], Path] = getattr(bundled, _WEIGHTS[(engine, model)])
    return finder()


def transformers_available() -> Skipped | None:
    """None when this checkout has the transformers engine's weights, else why not."""
    if not hasattr(bundled, "tiny_en_hf"):
        return Skipped(
            TRANSFORMERS,
            "gpu_worker.weights.bundled has no tiny_en_hf/base_hf in this checkout "
            "(the transformers engine is not merged yet)",
        )
    return None


def transformers_dtype(device: str) -> str:
    """The transformers engine's own choice: float16 on CUDA, float32 on CPU."""
    return "float16" if device == "cuda" else "float32"


def _decode_options_class() -> Any:
    """``gpu_worker.transcription.engines.DecodeOptions`` where this checkout has it (shared
    decoding settings of both engines), else None."""
    return getattr(gpu_worker.transcription.engines, "DecodeOptions", None)


def decode_options() -> dict[str, Any]:
    """The decoding settings the worker's engines use, recorded next to the figures."""
    options = _decode_options_class()
    if options is not None:
        # Lists, not tuples: the figures are read back from JSON and must render the same.
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(options()).items()
        }
    # This checkout's FasterWhisperEngine passes these to faster-whisper.
    return {
        "beam_size": 5,
        "word_timestamps": True,
        "vad_filter": False,
        "condition_on_previous_text": False,
    }


def supports_batch_size() -> bool:
    options = _decode_options_class()
    return options is not None and "batch_size" in {f.name for f in dataclasses.fields(options)}


def compute_types(device: str) -> list[str]:
    """The compute types measured on ``device`` (float16 only where it is supported)."""
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types(device)
    return [c for c in ("int8", "float16", "float32") if c in supported]


def load(spec: EngineSpec, device: str) -> tuple[AsrEngine, float]:
    """The engine and how long loading it took, in seconds."""
    started = time.perf_counter()
    directory = str(model_dir(spec.engine, spec.model))
    engine: AsrEngine
    if spec.engine == FASTER_WHISPER:
        from gpu_worker.transcription.engines.faster_whisper_engine import FasterWhisperEngine

        compute = None if spec.compute_type == "default" else spec.compute_type
        options = None
        if spec.batch_size is not None:
            options = _decode_options_class()(batch_size=spec.batch_size, batched=True)
        engine = FasterWhisperEngine(
            directory, device=device, compute_type=compute, options=options
        )
    else:
        # Callable[..., ]: this checkout's load_engine may not take decoding options yet.
        loader: Callable[..., AsrEngine] = gpu_worker.transcription.engines.load_engine
        if spec.batch_size is None:
            engine = loader(spec.engine, directory, device)
        else:
            options = _decode_options_class()(batch_size=spec.batch_size)
            engine = loader(spec.engine, directory, device, options)
    return engine, time.perf_counter() - started
