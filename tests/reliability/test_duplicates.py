"""At-least-once S3 events: the same upload announced 2 and 5 times, and a key uploaded
twice with different content (a new version is a new job)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from audio_factory import speech_mp3
from reliability.conftest import Report
from reliability.invariant import Upload
from reliability.scenario import Scenario, scenario

from local_mode.pipeline import NOTIFICATION_QUEUE

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


@pytest.mark.parametrize("copies", [2, 5])
def test_duplicate_events_make_one_job_one_result_one_bedrock_call(
    tmp_path: Path, fox_mp3: Path, report: Report, copies: int
) -> None:
    with scenario(tmp_path) as run:
        upload = run.upload("fox.mp3", fox_mp3)
        for _ in range(copies - 1):  # moto sent the first
            announce_again(run, upload, fox_mp3.stat().st_size)
        took = run.wait_finished()
        run.wait_scaled_in()
        figures = run.check()

        assert figures.succeeded == 1
        assert len(run.model.converse_calls()) == 1
        assert len(list(run.table.scan())) == 1
        assert run.deployment.dispatch_trigger is not None
        assert run.deployment.dispatch_trigger.stats.invocations >= copies
    report(
        fault=f"the same S3 event delivered {copies} times",
        happened=f"{copies} Dispatcher invocations; one job row, the rest seen as duplicates",
        outcome="1 job, 1 Result, 1 Bedrock call",
        figures={**figures.as_dict(), "events": copies, "finish_s": round(took, 1)},
    )


def test_a_new_version_of_a_key_is_a_new_job(tmp_path: Path, fox_mp3: Path, report: Report) -> None:
    other = speech_mp3(tmp_path / "dog.mp3", "A lazy dog sleeps in the sun all day.")
    with scenario(tmp_path / "run") as run:
        first = run.upload("talk.mp3", fox_mp3)
        second = run.upload("talk.mp3", other)  # same key, different bytes, at once
        assert first.version != second.version
        took = run.wait_finished()
        run.wait_scaled_in()
        figures = run.check()

        assert figures.files == 2
        assert figures.succeeded == 2
        calls = run.model.converse_calls()
        # Each version was transcribed from its own bytes (the worker read that version).
        assert any("fox" in call.user.lower() for call in calls)
        assert any("dog" in call.user.lower() and "fox" not in call.user.lower() for call in calls)
    report(
        fault="the same key uploaded twice with different content",
        happened="two versions -> two jobs, each worker delivery read its own version",
        outcome="2 jobs, 2 outcomes",
        figures={**figures.as_dict(), "finish_s": round(took, 1)},
    )
