"""How many 30 s chunks an engine decodes at once: from the memory the device has free once
the model is loaded (``WORKER_BATCH_SIZE=auto``, the default), so that one AMI serves a T4
and an L4 without a setting per instance type.

A chunk in a batch holds, above all, its cross-attention keys and values: two tensors of
1500 encoder frames x the model's width for each decoder layer, in the activations' type.
The rest (its encoder activations, the beams' self-attention cache, the allocator's slack)
is a factor per device, calibrated from measurements:

- CUDA: faster-whisper's published large-v2 figures (13 minutes of audio, beam 5; float16
  batch 8 6090 MB against 4525 MB unbatched, int8 4500 MB against 2926 MB): 224 MB for each
  chunk past the first, against 246 MB of keys and values. Factor 1, which rounds up.
  Not measured here (no GPU); bench/README.md says so.
- CPU: measured here (the bench's ``batch_memory`` part; gpu_worker/README.md has the
  figures): faster-whisper base int8 on this machine's CPU.

Half of what is free is used; the other half is for the next job's decoded window, the
speaker encoder, a second model loaded later for another language (``WORKER_MODELS``), and
what the estimate leaves out.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gpu_worker.weights.ct2_format import layer_count, read_ct2_shapes

logger = logging.getLogger(__name__)

ENCODER_FRAMES: Final = 1500  # one 30 s window, after the encoder's stride of 2
MEMORY_SHARE: Final = 0.5
DEVICE_FACTOR: Final = {"cuda": 1.0, "cpu": 3.0}
# The most chunks at once: past these a device gains nothing (on CPU the cores are busy
# already, the bench's batch_memory part; a GPU's kernels are full well before 32 chunks of
# 30 s, which is also a 16-minute recording's speech).
MOST_CHUNKS: Final = {"cuda": 32, "cpu": 8}
# When the free memory cannot be read (no NVML library on a CUDA host): faster-whisper's own
# example batch size.
UNKNOWN_MEMORY_BATCH_SIZE: Final = 8


@dataclass(frozen=True)
class ModelSize:
    """What a chunk's memory depends on: the model's width and its decoder's depth."""

    width: int  # d_model
    decoder_layers: int

    @classmethod
    def of_ct2(cls, model_dir: str | Path) -> ModelSize:
        """From a CTranslate2 Whisper model's ``model.bin``, without reading its weights."""
        shapes = read_ct2_shapes(Path(model_dir) / "model.bin")
        return cls(shapes["decoder/embeddings/weight"][1], layer_count(shapes, "decoder"))


def ct2_activation_bytes(compute_type: str) -> int:
    """CTranslate2 computes in 16 bits where the compute type names them (float16,
    int8_float16, bfloat16, ...), else in float32 (int8 and float32 on a CPU)."""
    return 2 if "16" in compute_type else 4


def chunk_bytes(size: ModelSize, device: str, activation_bytes: int, copies: int = 1) -> int:
    """The memory one more chunk in a batch takes on ``device`` ("cuda" or "cpu"), with
    ``copies`` of its keys and values (transformers' generate gives each beam its own;
    CTranslate2's beams share one, as the calibration shows)."""
    keys_and_values = 2 * ENCODER_FRAMES * size.width * size.decoder_layers * activation_bytes
    return math.ceil(keys_and_values * copies * DEVICE_FACTOR[device])


def batch_size_for(free_bytes: int | None, chunk: int, device: str) -> int:
    """As many chunks as fit in ``MEMORY_SHARE`` of ``free_bytes``: at least 1, at most the
    device's ``MOST_CHUNKS``."""
    if free_bytes is None:
        return min(UNKNOWN_MEMORY_BATCH_SIZE, MOST_CHUNKS[device])
    fits = int(free_bytes * MEMORY_SHARE) // chunk
    return max(1, min(MOST_CHUNKS[device], fits))


def free_memory_bytes(device: str, index: int = 0) -> int | None:
    """Memory free now on the device: the GPU's as NVML reports it (the driver's count, so
    memory CTranslate2 or torch hold is not free; no CUDA context is created to ask), the
    machine's available RAM on CPU. None when NVML cannot be read."""
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver library, no device: the engine still works, batch by default
        logger.warning("could not read the GPU's free memory", exc_info=True)
        return None


def choose_batch_size(
    size: ModelSize, device: str, activation_bytes: int, index: int = 0, copies: int = 1
) -> int:
    """The batch size for a model just loaded on ``device``; logged with what it came from."""
    chunk = chunk_bytes(size, device, activation_bytes, copies)
    free = free_memory_bytes(device, index)
    chosen = batch_size_for(free, chunk, device)
    logger.info(
        "batch size %d from the %s's free memory",
        chosen,
        device,
        extra={
            "batch_size": chosen,
            "device": device,
            "free_bytes": free,
            "chunk_bytes": chunk,
            "model_width": size.width,
            "decoder_layers": size.decoder_layers,
        },
    )
    return chosen
