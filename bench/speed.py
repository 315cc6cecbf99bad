"""Real-time factor: each engine bare, batched decoding, and the whole worker loop.

RTF = processing seconds / audio seconds (0.05: twenty times faster than real time).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.engines import FASTER_WHISPER, EngineSpec, load, model_dir
from bench.world import moto_world
from gpu_worker.transcription.audio import SAMPLE_RATE, decode_audio

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from bench.clips import Clip
    from gpu_worker.transcription.engines import AsrEngine

BARE_SETTINGS = (
    "the worker's engine class with the worker's decoding options (listed above), on audio "
    "decoded beforehand; one warm-up run, best of the timed runs"
)
BATCHED_SETTINGS = (
    "faster_whisper.BatchedInferencePipeline (Silero VAD chunks, beam 5, word timestamps); "
    "not the worker's path: shows what batching would give"
)
LOOP_SETTINGS = (
    "gpu_worker.daemon.Worker.run on moto: S3 download, decode, claim in the job table, "
    "transcribe with progress, transcripts to S3, LLM Queue message, job handed off; engine "
    "preloaded; compared with the same engine bare on the same files in the same run"
)


@dataclass(frozen=True)
class BareRun:
    engine: str
    model: str
    compute_type: str
    batch_size: int | None
    device: str
    audio_seconds: float
    load_seconds: float
    seconds: float  # best of the timed runs
    seconds_median: float
    runs: int
    rtf: float
    settings: str = BARE_SETTINGS


@dataclass(frozen=True)
class BatchedRun:
    engine: str
    model: str
    compute_type: str
    device: str
    batch_size: int
    audio_seconds: float
    seconds: float
    rtf: float
    settings: str = BATCHED_SETTINGS


@dataclass(frozen=True)
class LoopRun:
    engine: str
    model: str
    compute_type: str
    device: str
    files: int
    audio_seconds: float
    seconds_per_file: float  # a fixed cost per file weighs less on longer files
    bare_seconds: float  # engine only, audio decoded beforehand (best of the repeats)
    decode_seconds: float  # decoding the same files, part of the loop's extra work
    loop_seconds: float  # the worker loop, queue to hand-off (best of the repeats)
    bare_rtf: float
    loop_rtf: float
    overhead: float  # loop / bare - 1 (target < 0.05)
    repeats: int
    settings: str = LOOP_SETTINGS


def _run_engine(engine: AsrEngine, audio: npt.NDArray[np.float32], language: str) -> float:
    started = time.perf_counter()
    for _ in engine.transcribe(audio, language):
        pass
    return time.perf_counter() - started


def bare(spec: EngineSpec, device: str, clip: Clip, runs: int) -> BareRun:
    engine, load_seconds = load(spec, device)
    audio = decode_audio(clip.path)
    _run_engine(engine, audio[: 10 * SAMPLE_RATE], clip.language)  # warm-up
    times = [_run_engine(engine, audio, clip.language) for _ in range(runs)]
    seconds = audio.size / SAMPLE_RATE
    return BareRun(
        engine=spec.engine,
        model=spec.model,
        compute_type=spec.compute_type,
        batch_size=spec.batch_size,
        device=device,
        audio_seconds=round(seconds, 2),
        load_seconds=round(load_seconds, 3),
        seconds=round(min(times), 3),
        seconds_median=round(statistics.median(times), 3),
        runs=runs,
        rtf=round(min(times) / seconds, 4),
    )


def batched(spec: EngineSpec, device: str, clip: Clip, batch_sizes: list[int]) -> list[BatchedRun]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    assert spec.engine == FASTER_WHISPER
    model = WhisperModel(
        str(model_dir(spec.engine, spec.model)), device=device, compute_type=spec.compute_type
    )
    pipeline = BatchedInferencePipeline(model=model)
    audio = decode_audio(clip.path)
    seconds = audio.size / SAMPLE_RATE

    def once(batch_size: int, samples: npt.NDArray[np.float32]) -> float:
        started = time.perf_counter()
        segments, _ = pipeline.transcribe(
            samples, language=clip.language, batch_size=batch_size, word_timestamps=True
        )
        for _ in segments:
            pass
        return time.perf_counter() - started

    once(1, audio[: 10 * SAMPLE_RATE])  # warm-up
    rows = []
    for batch_size in batch_sizes:
        took = once(batch_size, audio)
        rows.append(
            BatchedRun(
                engine=spec.engine,
                model=spec.model,
                compute_type=spec.compute_type,
                device=device,
                batch_size=batch_size,
                audio_seconds=round(seconds, 2),
                seconds=round(took, 3),
                rtf=round(took / seconds, 4),
            )
        )
    return rows


def _loop_once(engine: AsrEngine, spec: EngineSpec, device: str, clips: list[Clip]) -> float:
    with moto_world() as world:
        records = [world.upload(c.path.name, c.path, c.language)[1] for c in clips]
        world.dispatch(records)
        started = time.perf_counter()
        world.run_worker(engine, spec.engine, str(model_dir(spec.engine, spec.model)), device)
        took = time.perf_counter() - started
        handed_off = world.clients.sqs.get_queue_attributes(
            QueueUrl=world.stack.llm_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        if int(handed_off) != len(clips):
            raise RuntimeError(f"the worker handed off {handed_off} of {len(clips)} files")
        return took


def worker_loop(spec: EngineSpec, device: str, clips: list[Clip], repeats: int) -> LoopRun:
    """Bare engine and worker loop on the same files, alternating, best of ``repeats``."""
    engine, _ = load(spec, device)
    started = time.perf_counter()
    decoded = [(decode_audio(c.path), c.language) for c in clips]
    decode_seconds = time.perf_counter() - started
    audio_seconds = sum(a.size for a, _ in decoded) / SAMPLE_RATE
    _run_engine(engine, decoded[0][0], decoded[0][1])  # warm-up
    bare_times, loop_times = [], []
    for _ in range(repeats):
        bare_times.append(sum(_run_engine(engine, audio, lang) for audio, lang in decoded))
        loop_times.append(_loop_once(engine, spec, device, clips))
    bare_best, loop_best = min(bare_times), min(loop_times)
    return LoopRun(
        engine=spec.engine,
        model=spec.model,
        compute_type=spec.compute_type,
        device=device,
        files=len(clips),
        audio_seconds=round(audio_seconds, 2),
        seconds_per_file=round(audio_seconds / len(clips), 1),
        bare_seconds=round(bare_best, 3),
        decode_seconds=round(decode_seconds, 3),
        loop_seconds=round(loop_best, 3),
        bare_rtf=round(bare_best / audio_seconds, 4),
        loop_rtf=round(loop_best / audio_seconds, 4),
        overhead=round(loop_best / bare_best - 1, 4),
        repeats=repeats,
    )
