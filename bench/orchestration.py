"""Per-file cost of the pipeline without speech recognition: dispatch, queues, job table, S3.

The real Dispatcher, worker loop and LLM Caller (no corrector) run on moto with an engine
that answers at once, so what is left is the orchestration. moto answers in microseconds
where AWS takes milliseconds: the API calls per file are the figure that carries over.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.world import DISPATCHER, WORKER, moto_world
from gpu_worker.transcription.transcript import Segment

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

SETTINGS = (
    "moto in-process (no network); real chalicelib Dispatcher, gpu_worker Worker.run and "
    "LLM Caller (CORRECTOR=none), Results published to the stack's notification topic as "
    "deployed; the engine returns one segment instantly; the audio is still downloaded and "
    "decoded"
)


class InstantEngine:
    """An AsrEngine that recognises nothing: one segment, no model."""

    @property
    def model_id(self) -> str:
        return "bench:instant"

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        language: str,
        progress: Callable[[float], None] | None = None,
        hotwords: str | None = None,
    ) -> Iterator[Segment]:
        seconds = audio.size / 16_000
        if progress is not None:
            progress(seconds)
        yield Segment(start=0.0, end=seconds, text="orchestration only")


@dataclass(frozen=True)
class Orchestration:
    files: int
    audio_seconds_per_file: float
    upload_ms_per_file: float
    dispatch_ms_per_file: float
    worker_ms_per_file: float  # download, decode, claim, write, hand off; no ASR
    llm_caller_ms_per_file: float
    total_ms_per_file: float
    api_calls_per_file: dict[str, float]  # service -> calls
    api_calls_by_operation: dict[str, int]
    # component -> "<service>.<Operation>" -> calls per file
    api_calls_by_component_per_file: dict[str, dict[str, float]]
    label: str = "this checkout"
    settings: str = SETTINGS


def measure(
    audio: Path, language: str, files: int, audio_seconds: float, label: str = "this checkout"
) -> Orchestration:
    with moto_world() as world:
        started = time.perf_counter()
        records = [world.upload(f"file-{i:03d}{audio.suffix}", audio, language)[1]
                   for i in range(files)]  # fmt: skip
        uploaded = time.perf_counter()
        world.calls.clear()
        with world.counting(DISPATCHER):
            for record in records:  # one S3 event per upload, as S3 sends them
                world.dispatch([record])
        dispatched = time.perf_counter()
        with world.counting(WORKER):
            world.run_worker(InstantEngine(), "faster-whisper", "instant", "cpu")
        worked = time.perf_counter()
        handled = world.run_llm_caller()
        corrected = time.perf_counter()
        if handled != files:
            raise RuntimeError(f"the LLM Caller handled {handled} of {files} files")
        calls = Counter(world.calls)
        components = dict(world.by_component)
    by_service: Counter[str] = Counter()
    for operation, count in calls.items():
        by_service[operation.split(".", 1)[0]] += count

    def per_file(seconds: float) -> float:
        return round(1000 * seconds / files, 2)

    return Orchestration(
        files=files,
        audio_seconds_per_file=round(audio_seconds, 2),
        upload_ms_per_file=per_file(uploaded - started),
        dispatch_ms_per_file=per_file(dispatched - uploaded),
        worker_ms_per_file=per_file(worked - dispatched),
        llm_caller_ms_per_file=per_file(corrected - worked),
        total_ms_per_file=per_file(corrected - uploaded),
        api_calls_per_file={s: round(n / files, 2) for s, n in sorted(by_service.items())},
        api_calls_by_operation=dict(sorted(calls.items())),
        api_calls_by_component_per_file={
            component: {op: round(n / files, 2) for op, n in sorted(counted.items())}
            for component, counted in components.items()
        },
        label=label,
    )
