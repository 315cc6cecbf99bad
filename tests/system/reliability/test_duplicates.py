"""At-least-once S3 events: the same upload announced 2 and 5 times, and a key uploaded
twice with different content (a new version is a new job)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from support.audio_factory import speech_mp3
from system.reliability.conftest import Report
from system.reliability.invariant import Upload
from system.reliability.scenario import Scenario, scenario

from local_mode.pipeline import NOTIFICATION_QUEUE
from pipeline_core.jobs import JobField, JobState
from pipeline_core.ownership import Owner

pytestmark = pytest.mark.slow


def announce_again(run: Scenario, upload: Upload, size: int) -> None:
    """One more delivery of the upload's ObjectCreated event (what S3 may send twice)."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": run.bucket, "arn": f"arn:aws:s3:::{run.bucket}"},
            "object": {
                "key": quote_plus(upload.key),
                "size": size,
                "eTag": run.s3.head_object(
                    Bucket=run.bucket, Key=upload.key, VersionId=upload.version
                )["ETag"].strip('"'),
                "versionId": upload.version,
            },
        },
    }
    url = run.sqs.get_queue_url(QueueName=NOTIFICATION_QUEUE)["QueueUrl"]
    run.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Records": [record]}))


@pytest.mark.parametrize("workers", [1, 3], ids=["one-worker", "three-workers"])
def test_duplicate_events_and_new_versions(
    tmp_path: Path, fox_mp3: Path, report: Report, workers: int
) -> None:
    """With one worker, and with a fleet of up to 3 racing over the same jobs."""
    other = speech_mp3(tmp_path / "dog.mp3", "A lazy dog sleeps in the sun all day.")
    copies = {"twice.mp3": 2, "five-times.mp3": 5}
    with scenario(tmp_path / "run", max_workers=workers) as run:
        announced = []
        for name, count in copies.items():
            upload = run.upload(name, fox_mp3)
            for _ in range(count - 1):  # moto sent the first
                announce_again(run, upload, fox_mp3.stat().st_size)
            announced.append(upload)
        first = run.upload("talk.mp3", fox_mp3)
        second = run.upload("talk.mp3", other)  # same key, different bytes, at once
        assert first.version != second.version
        took = run.wait_finished()
        run.wait_scaled_in()
        figures = run.check()

        assert figures.files == 4
        assert figures.failed == 0
        # The older talk.mp3 ends superseded when its outputs would have replaced the newer
        # one's (the jobs ran side by side), else success; the newer one always delivers.
        assert figures.succeeded + figures.superseded == 4
        rows = {r.job_id: r for r in run.table.scan()}
        assert sorted(r.s3_key for r in rows.values()) == sorted(
            ["audio-input/twice.mp3", "audio-input/five-times.mp3", *["audio-input/talk.mp3"] * 2]
        )
        older, newer = rows[first.job_id(run.bucket)], rows[second.job_id(run.bucket)]
        assert newer.state is JobState.SUCCEEDED
        superseded = [r for r in rows.values() if r.state is JobState.FAILED]
        assert superseded in ([], [older])
        final = run.s3.head_object(Bucket=run.bucket, Key="final-output/talk.txt")
        assert Owner.of(final["Metadata"]).job_id == newer.job_id
        text = run.s3.get_object(Bucket=run.bucket, Key="final-output/talk.txt")["Body"].read()
        assert "dog" in text.decode().lower()
        # One model call per job, none for a duplicate event, none for a job the worker
        # found superseded (one the LLM Caller found superseded was corrected first).
        before_correction = [r for r in superseded if JobField.LLM_JOB_SENT_AT not in r.attributes]
        calls = run.model.converse_calls()
        assert len(calls) == 4 - len(before_correction)
        # Each version was transcribed from its own bytes (the worker read that version).
        assert any("dog" in call.user.lower() and "fox" not in call.user.lower() for call in calls)
        trigger = run.deployment.dispatch_trigger
        assert trigger is not None
        invocations = trigger.stats.invocations
        assert invocations >= sum(copies.values()) + 2
        scaler = run.deployment.scaler
        assert scaler is not None
        assert 1 <= scaler.state.most_workers_at_once <= workers
    fleet = f" (up to {workers} workers)" if workers > 1 else ""
    for name, count in copies.items():
        report(
            case=name,
            fault=f"the same S3 event delivered {count} times{fleet}",
            happened=f"{count} Dispatcher invocations; one job row, the rest seen as duplicates",
            outcome="1 job, 1 Result, 1 Bedrock call",
            figures={"events": count, "jobs": 1, "bedrock_calls": 1},
        )
    report(
        case="new-version",
        fault=f"the same key uploaded twice with different content, at once{fleet}",
        happened="two versions -> two jobs; each worker delivery read its own version",
        outcome=(
            "2 jobs, 2 outcomes: the newer upload's transcript under the name; the older one "
            "succeeded before it, or ended superseded"
        ),
        figures={**figures.as_dict(), "dispatcher_invocations": invocations,
                 "finish_s": round(took, 1),
                 "most_workers_at_once": scaler.state.most_workers_at_once},
    )  # fmt: skip
