"""S3, SQS and DynamoDB unavailable for a while (the moto server stopped, connections
refused, then started again with its state): every component backs off and recovers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from system.reliability.conftest import Report
from system.reliability.scenario import scenario

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 8.0


def test_aws_outage_mid_job_is_ridden_out(tmp_path: Path, fox_mp3: Path, report: Report) -> None:
    with scenario(tmp_path) as run:
        uploads = [run.upload(f"fox-{n}.mp3", fox_mp3) for n in range(3)]
        run.wait_worker_line(lambda line: line.get("message") == "claimed the job")
        emulator = run.deployment.emulator
        assert emulator is not None

        emulator.stop_server()  # every AWS call now fails: connection refused
        time.sleep(OUTAGE_SECONDS)  # the fault's length, not a wait for a result
        emulator.start_server()
        back = time.monotonic()

        run.wait_finished(uploads)
        recovered = time.monotonic() - back
        run.wait_scaled_in()
        figures = run.check()
        assert figures.succeeded == len(uploads)
        errors = [line for line in run.worker_lines() if line.get("level") == "ERROR"]
    report(
        fault=f"AWS endpoint (S3, SQS, DynamoDB) refused connections for {OUTAGE_SECONDS:.0f} s",
        happened=(
            "botocore retries and the components' own back-off (worker poll, Lambda event "
            "sources, scaler) rode it out"
        ),
        outcome="all files finished once; queues and DLQs empty",
        figures={
            **figures.as_dict(),
            "outage_s": OUTAGE_SECONDS,
            "worker_errors_logged": len(errors),
            "recover_s": round(recovered, 1),
        },
    )
