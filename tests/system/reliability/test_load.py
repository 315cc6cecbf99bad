"""Load: 200 short recordings uploaded at once through the local mode, with a fleet of up to
3 workers (the one-worker run took as long again; one worker's kills, duplicates and scale to
zero are in the rest of the suite). All complete once, the LLM Caller never runs more than its
concurrency (3) at a time, queues and DLQs end empty, the job table is consistent, and the
GPU group is back at 0. Bounded: a one-word clip each, tiny model."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.audio_factory import speech_mp3
from system.reliability.conftest import Report
from system.reliability.scenario import scenario

pytestmark = [pytest.mark.slow, pytest.mark.load]

FILES = 200
LOAD_TIMEOUT = 600.0  # the whole run fails rather than hangs (a shared 2-CPU machine)
# A slow model: LLM jobs pile up (the 3 workers hand off faster than 3 corrections at a time
# finish), so the concurrency cap is actually exercised; 2 s cost the run 48 s more.
MODEL_SECONDS = 1.0


WORKERS = 3


def test_two_hundred_files_at_once(tmp_path: Path, report: Report) -> None:
    """With a fleet of up to 3 (one per waiting recording)."""
    workers = WORKERS
    clip = speech_mp3(tmp_path / "word.mp3", "Hello.", speed=200).read_bytes()
    with scenario(tmp_path / "run", max_workers=workers) as run:
        run.model.script.delay_seconds = MODEL_SECONDS
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:  # "at once": the uploads race each other
            uploads = list(pool.map(lambda n: run.upload(f"batch/{n:03d}.mp3", clip), range(FILES)))
        run.wait_finished(uploads, timeout=LOAD_TIMEOUT)
        took = time.monotonic() - started
        run.wait_scaled_in(timeout=60)
        figures = run.check(uploads)

        trigger = run.deployment.llm_trigger
        assert trigger is not None
        assert figures.files == FILES
        assert figures.succeeded == FILES
        assert 1 <= trigger.stats.max_concurrency_seen <= run.deployment.llm_caller_concurrency
        assert trigger.stats.failures == 0
        assert run.deployment.desired_capacity() == 0
        assert len(run.model.converse_calls()) == FILES  # each transcript once
        scaler = run.deployment.scaler
        assert scaler is not None
        started_workers = scaler.state.workers_started
        at_once = scaler.state.most_workers_at_once
        assert 1 <= at_once <= workers
    report(
        fault=f"load: {FILES} one-word recordings uploaded at once (local mode, up to "
        f"{workers} worker{'s' if workers > 1 else ''})",
        happened=(
            f"{at_once} worker{'s' if at_once > 1 else ''} at once took them in turn; the "
            f"LLM Caller ran at most "
            f"{trigger.stats.max_concurrency_seen} at once against a {MODEL_SECONDS:g} s model"
        ),
        outcome="all complete once; queues and DLQs empty; job table final; ASG back at 0",
        figures={
            **figures.as_dict(),
            "llm_max_concurrency": trigger.stats.max_concurrency_seen,
            "llm_invocations": trigger.stats.invocations,
            "workers_started": started_workers,
            "most_workers_at_once": at_once,
            "total_s": round(took, 1),
            "per_file_s": round(took / FILES, 2),
        },
    )
