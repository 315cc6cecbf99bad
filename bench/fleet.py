"""Throughput of a fleet: files per hour with 1 and 2 workers, and the scaling timeline.

The whole pipeline in local mode (``local_mode.pipeline.LocalDeployment``: the template's
stack in a moto server, the Dispatcher and LLM Caller (no corrector) behind their event
sources, the emulated group scaled by the template's backlog alarm), the same recordings
uploaded at once for each fleet size. Each worker is a process with one CPU thread for the
model (``OMP_NUM_THREADS=1``), so on a machine with at least as many cores as workers the
ideal is N times one worker's rate; what falls short of it is the pipeline's share of the
cores (moto, the Lambdas, the scaler) and the start of each extra worker.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, Final

import boto3

from gpu_worker.weights.bundled import tiny_en_ct2
from local_mode.pipeline import LocalDeployment, LocalOptions
from pipeline_core.metadata import encode_metadata

SETTINGS: Final = (
    "local mode (moto server, the template's stack and backlog alarm, TargetBacklogPerWorker "
    "1); faster-whisper tiny.en int8 on CPU, one thread per worker process; corrector none; "
    "timed from the uploads to every job's outcome"
)
THREADS_PER_WORKER: Final = 1
FINISH_TIMEOUT_S: Final = 1800.0
SCALE_IN_TIMEOUT_S: Final = 120.0


def _wait(condition: Any, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def changes(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples where backlog, desired capacity or workers changed, and the last one:
    the same step plot from a fraction of the points."""
    kept: list[dict[str, Any]] = []
    for point in timeline:
        if not kept or any(point[k] != kept[-1][k] for k in ("backlog", "desired", "workers")):
            kept.append(point)
    if timeline and kept[-1] is not timeline[-1]:
        kept.append(timeline[-1])
    return kept


def run_fleet(
    recordings: list[tuple[Path, float]], max_workers: int, work_dir: Path
) -> dict[str, Any]:
    """Upload ``recordings`` (path, audio seconds) at once; time them with up to
    ``max_workers`` workers; the group's timeline until it is back at 0."""
    options = LocalOptions(
        work_dir=work_dir,
        models={"*": str(tiny_en_ct2())},
        corrector="none",
        idle_shutdown_seconds=2,
        max_workers=max_workers,
        target_backlog_per_worker=1,
        log_file=work_dir / "worker.log",
        worker_overrides={"OMP_NUM_THREADS": str(THREADS_PER_WORKER), "POLL_WAIT_SECONDS": "1"},
        reconcile_every_seconds=None,
    )
    with LocalDeployment(options) as deployment:
        scaler = deployment.scaler
        assert scaler is not None
        s3 = boto3.client("s3")
        started = time.time()
        keys = []
        for number, (path, _) in enumerate(recordings):
            key = f"audio-input/fleet/{number:03d}{path.suffix}"
            s3.put_object(
                Bucket=deployment.stack.bucket,
                Key=key,
                Body=path.read_bytes(),
                Metadata=encode_metadata("english", ""),
            )
            keys.append(key)

        def finished() -> bool:
            return all(status.finished for status in deployment.file_statuses(keys))

        if not _wait(finished, FINISH_TIMEOUT_S):
            raise TimeoutError(f"{len(keys)} files did not finish in {FINISH_TIMEOUT_S:g} s")
        seconds = time.time() - started
        statuses = deployment.file_statuses(keys)

        def scaled_in() -> bool:  # as the timeline has it: the scaler samples on its own beat
            samples = scaler.state.samples
            return bool(samples) and samples[-1].desired == 0 and samples[-1].workers == 0

        _wait(scaled_in, SCALE_IN_TIMEOUT_S)
        timeline = changes(
            [
                {
                    "t": round(sample.at - started, 2),
                    "backlog": sample.backlog,
                    "desired": sample.desired,
                    "workers": sample.workers,
                }
                for sample in scaler.state.samples
                if sample.at >= started - 1
            ]
        )
    failed = [s.name for s in statuses if s.stage != "done"]
    return {
        "max_workers": max_workers,
        "files": len(keys),
        "failed": failed,
        "audio_s": round(sum(duration for _, duration in recordings), 1),
        "seconds": round(seconds, 1),
        "files_per_hour": round(len(keys) * 3600 / seconds, 1),
        "transcribe_s": round(sum(s.transcribe_seconds or 0.0 for s in statuses), 1),
        "most_workers_at_once": scaler.state.most_workers_at_once,
        "workers_started": scaler.state.workers_started,
        "timeline": timeline,
    }


def measure(
    recordings: list[tuple[Path, float]], fleet_sizes: tuple[int, ...], files: int, work_dir: Path
) -> dict[str, Any]:
    """Each fleet size over the same ``files`` recordings (``recordings`` cycled)."""
    batch = list(itertools.islice(itertools.cycle(recordings), files))
    runs = [run_fleet(batch, size, work_dir / f"fleet-{size}") for size in fleet_sizes]
    base = runs[0]["files_per_hour"] / runs[0]["max_workers"]
    for run in runs:
        run["ideal_files_per_hour"] = round(base * run["max_workers"], 1)
        run["of_ideal"] = round(run["files_per_hour"] / run["ideal_files_per_hour"], 3)
    return {"settings": SETTINGS, "threads_per_worker": THREADS_PER_WORKER, "runs": runs}
