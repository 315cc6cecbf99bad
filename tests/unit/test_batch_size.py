"""The batch size from the device's free memory: the arithmetic and its calibration."""

from __future__ import annotations

import pytest

from gpu_worker.transcription.engines.batch_size import (
    MEMORY_SHARE,
    MOST_CHUNKS,
    UNKNOWN_MEMORY_BATCH_SIZE,
    ModelSize,
    batch_size_for,
    chunk_bytes,
    ct2_activation_bytes,
    free_memory_bytes,
)

pytestmark = pytest.mark.unit

LARGE_V2 = ModelSize(width=1280, decoder_layers=32)
MB = 2**20


def test_a_cuda_chunk_is_estimated_at_least_at_faster_whispers_published_cost() -> None:
    """faster-whisper's README, large-v2 on an RTX 3070 Ti, 13 minutes of audio, beam 5:
    batch 8 against unbatched, float16 6090 MB vs 4525 MB, int8 4500 MB vs 2926 MB; so each
    chunk past the first costs at most (6090 - 4525) / 7 MB. The estimate must not be lower,
    nor more than a third higher (it would waste the GPU)."""
    estimate = chunk_bytes(LARGE_V2, "cuda", activation_bytes=2)
    for batched, unbatched in ((6090, 4525), (4500, 2926)):
        published = (batched - unbatched) / 7 * MB
        assert published <= estimate <= published * 4 / 3


def test_the_keys_and_values_scale_with_the_model_and_the_copies() -> None:
    base = ModelSize(width=512, decoder_layers=6)
    one = chunk_bytes(base, "cpu", activation_bytes=4)
    assert chunk_bytes(base, "cpu", activation_bytes=4, copies=5) == 5 * one
    assert chunk_bytes(ModelSize(1024, 6), "cpu", 4) == 2 * one
    assert chunk_bytes(ModelSize(512, 12), "cpu", 4) == 2 * one
    assert chunk_bytes(base, "cpu", 2) * 2 == one
    kinds = ("float16", "int8_float16", "bfloat16", "int8", "float32", "int8_float32")
    assert [ct2_activation_bytes(kind) for kind in kinds] == [2, 2, 2, 4, 4, 4]


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_as_many_chunks_as_half_the_free_memory_holds_within_bounds(device: str) -> None:
    chunk = 100 * MB
    assert MEMORY_SHARE == 0.5
    assert batch_size_for(5 * chunk * 2, chunk, device) == min(5, MOST_CHUNKS[device])
    assert batch_size_for(5 * chunk * 2 - 1, chunk, device) == 4
    assert batch_size_for(0, chunk, device) == 1  # never none at all
    assert batch_size_for(10_000 * chunk, chunk, device) == MOST_CHUNKS[device]
    assert batch_size_for(None, chunk, device) == min(
        UNKNOWN_MEMORY_BATCH_SIZE, MOST_CHUNKS[device]
    )


def test_the_free_memory_of_a_cpu_is_the_machines_available_memory() -> None:
    import psutil

    free = free_memory_bytes("cpu")
    assert free is not None
    assert 0 < free <= psutil.virtual_memory().total


def test_a_gpu_whose_memory_cannot_be_read_gives_none() -> None:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass  # no NVIDIA driver here: the case under test
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver: its GPU memory can be read")
    assert free_memory_bytes("cuda") is None
