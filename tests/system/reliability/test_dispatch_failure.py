"""The Dispatcher cut off from DynamoDB or SQS for longer than Lambda's retries: the S3
event's invocation fails all three attempts and its record goes to the Dispatcher DLQ (the
on-failure destination, as Lambda sends it). The reconciler then dispatches the upload
again, from the record, or from the bucket listing when the record is lost, and the upload
ends in exactly one outcome."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import stage_config
from support.waiting import wait_until
from system.reliability.conftest import Report
from system.reliability.scenario import scenario

from pipeline_core.jobs import JobField
from pipeline_core.reconcile import InvocationFailure

pytestmark = pytest.mark.slow

RECORD_TIMEOUT = 180.0  # three attempts, each through botocore's retries with back-off
DISPATCHED = {"enqueued", "resent"}


@pytest.mark.parametrize(
    ("service", "record_lost"),
    [("dynamodb", False), ("sqs", True)],
    ids=["dynamodb-outage", "sqs-outage-record-lost"],
)
def test_a_dispatcher_outage_beyond_its_retries_is_reconciled(
    tmp_path: Path, fox_mp3: Path, report: Report, service: str, record_lost: bool
) -> None:
    lambdas = {
        # The Dispatcher's lease on a job it began, as short as the retry delays here (the
        # function timeout in AWS, where the retries come minutes apart).
        "ENQUEUE_LEASE_SECONDS": "1",
        # The listing considers every upload (in AWS: those older than the maximum event age).
        "RECONCILE_GRACE_SECONDS": "0",
    }
    with scenario(tmp_path, lambdas=lambdas) as run:
        with run.deployment.unreachable(stage_config.DISPATCHER, service):
            upload = run.upload("fox.mp3", fox_mp3)
            run.wait_until_queued("DispatcherDlq", 1, RECORD_TIMEOUT)
        record = run.peek("DispatcherDlq")
        failure = InvocationFailure.from_json(record)
        assert failure.condition == "RetriesExhausted"
        assert failure.invoke_count == 1 + stage_config.DISPATCHER_MAX_RETRY_ATTEMPTS
        # The record's count, not the trigger's: its last failure may be counted only after
        # the record is in the DLQ (the report said 2 or 3 attempts from run to run).
        attempts = failure.invoke_count
        left_by_dispatcher = run.record(upload)
        if service == "dynamodb":
            assert left_by_dispatcher is None  # not even a job row: the upload was dropped
        else:
            assert left_by_dispatcher is not None  # queued, its Audio Queue message unsent
            assert JobField.ENQUEUED_AT not in left_by_dispatcher.attributes
        if record_lost:
            run.purge("DispatcherDlq")

        # The reconciler's schedule, shortened: runs until one has dispatched the upload (a
        # run while Lambda's last attempt still holds the job's lease leaves it for later).
        runs: list[dict[str, Any]] = []

        def dispatched_again() -> bool:
            runs.append(run.deployment.run_reconciler())
            return any(DISPATCHED & set(done["outcomes"]) for done in runs)

        wait_until(dispatched_again, 60, "the reconciler to dispatch the upload", interval=1.0)
        run.wait_finished([upload])
        run.wait_scaled_in()
        again = run.deployment.run_reconciler()  # nothing left to do
        figures = run.check()
    assert figures.succeeded == 1
    outcomes = Counter[str]()
    for done in runs:
        outcomes.update(done["outcomes"])
    assert sum(outcomes[outcome] for outcome in DISPATCHED) == 1  # once, whatever the runs
    assert sum(done["records_done"] for done in runs) == (0 if record_lost else 1)
    assert (sum(done["uploads_found"] for done in runs) > 0) is record_lost
    assert again["outcomes"] == {}
    reconciled = dict(outcomes)
    source = "the bucket listing (record lost)" if record_lost else "the Dispatcher DLQ record"
    report(
        case=service,
        fault=(
            f"the Dispatcher could not reach {service.upper() if service == 'sqs' else 'DynamoDB'}"
            f" through its {attempts} attempts (first try and Lambda's retries)"
        ),
        happened=(
            "the invocation record went to the Dispatcher DLQ; "
            f"the reconciler dispatched the upload again from {source}"
        ),
        outcome="1 job, 1 Result; a second reconciler run did nothing; every queue empty",
        figures={
            **figures.as_dict(),
            "dispatcher_attempts": attempts,
            "reconciler_runs": len(runs),
            "reconciled": reconciled,
        },
    )
