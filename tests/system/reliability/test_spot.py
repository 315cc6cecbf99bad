"""A Spot interruption notice (IMDSv2 imitation) while the worker is mid-file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.waiting import wait_until
from support.worker_harness import FakeImds
from system.reliability.conftest import Report
from system.reliability.scenario import scenario

from pipeline_core.jobs import JobField

pytestmark = pytest.mark.slow


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    server = FakeImds()
    yield server
    server.close()


def test_spot_notice_releases_the_message_at_once_and_another_worker_completes_it(
    tmp_path: Path, fox_mp3: Path, imds: FakeImds, report: Report
) -> None:
    # A long visibility timeout: only an explicit release lets another worker in soon.
    worker = {
        "IMDS_ENDPOINT": imds.url,
        "WORKER_PAUSE_AFTER_STEP": "mid_transcription",
        "VISIBILITY_TIMEOUT_SECONDS": "900",
        "HEARTBEAT_SECONDS": "60",
    }
    with scenario(tmp_path, worker=worker) as run:
        upload = run.upload("fox.mp3", fox_mp3)
        run.wait_worker_line(lambda line: line.get("pause_step") == "mid_transcription")
        for name in ("IMDS_ENDPOINT", "WORKER_PAUSE_AFTER_STEP"):  # the next instance is fine
            del run.deployment.options.worker_overrides[name]
        noticed = time.monotonic()
        # Less time than the job needs (with the worker's 20 s margin): it must let go now.
        imds.announce_spot_interruption(in_seconds=15)

        def released() -> bool:
            return any(line.get("stop_reason") == "spot terminate" for line in run.worker_lines())

        wait_until(released, 60, "the worker to stop on the Spot notice")
        run.wait_finished(timeout=120)  # well inside the 900 s the message was hidden for
        recovered = time.monotonic() - noticed
        run.wait_scaled_in()
        figures = run.check()

        record = run.record(upload)
        assert record is not None
        assert record.attributes[JobField.ATTEMPTS] == 2  # the interrupted delivery and the next
        assert figures.succeeded == 1
        assert imds.refused == 0  # every IMDS read carried a session token (IMDSv2)
    report(
        fault="Spot interruption notice mid-transcription (IMDSv2)",
        happened="worker released the message at once and exited; a new worker completed it",
        outcome="finished once (message hidden 900 s, back in seconds)",
        figures={**figures.as_dict(), "recover_s": round(recovered, 1)},
    )
