"""``onprem redrive`` over moto queues that dead-letter for real (maxReceiveCount 1)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import boto3
import pytest
from support.onprem_helpers import BUCKET, REGION

from onprem.cli import main
from pipeline_core.contracts import AudioJob, LlmJob, Result
from pipeline_core.jobs import JobField, JobState, JobTable

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


def queue_pair(sqs: SQSClient, name: str) -> tuple[str, str]:
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 1})
    source = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": policy})["QueueUrl"]
    return source, dlq


def dead_letter(sqs: SQSClient, source: str, body: str) -> None:
    """Send to the source queue and let a consumer fail it until SQS dead-letters it."""
    sqs.send_message(
        QueueUrl=source,
        MessageBody=body,
        MessageAttributes={"trace": {"DataType": "String", "StringValue": "t-1"}},
    )
    received = sqs.receive_message(QueueUrl=source, VisibilityTimeout=0)
    assert len(received["Messages"]) == 1
    assert "Messages" not in sqs.receive_message(QueueUrl=source, VisibilityTimeout=0)


def bodies(sqs: SQSClient, queue: str) -> list[str]:
    messages = sqs.receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0, MessageAttributeNames=["All"]
    ).get("Messages", [])
    return sorted(m["Body"] for m in messages)


@pytest.fixture
def setup(
    job_table_name: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[SQSClient, JobTable, dict[str, tuple[str, str]]]:
    sqs: SQSClient = boto3.client("sqs", region_name=REGION)
    jobs = JobTable(boto3.client("dynamodb", region_name=REGION), job_table_name)
    queues = {name: queue_pair(sqs, name) for name in ("audio", "llm", "results")}
    monkeypatch.setenv("AUDIO_DLQ_URL", queues["audio"][1])
    monkeypatch.setenv("LLM_DLQ_URL", queues["llm"][1])
    monkeypatch.setenv("RESULTS_DLQ_URL", queues["results"][1])
    monkeypatch.setenv("JOB_TABLE", job_table_name)

    jobs.create(
        job_id="j-audio", bucket=BUCKET, s3_key="audio-input/שיעור.mp3", version="1",
        language="he", details="",
    )  # fmt: skip
    jobs.fail("j-audio", "worker crashed 3 times: CUDA out of memory")
    # Its failure Result went out (a stage that records it did).
    jobs.update_fields(
        "j-audio", {JobField.RESULT_SENT_AT: "2026-12-02T10:00:00Z", JobField.FAILED_BY: "x"}
    )
    audio = AudioJob(s3_key="שיעור.mp3", language="hebrew", details="בבא קמא", job_id="j-audio")
    dead_letter(sqs, queues["audio"][0], audio.to_json())
    llm = LlmJob(timed_key="transcriptions/x.timed.txt", language="he", job_id="j-unknown")
    dead_letter(sqs, queues["llm"][0], llm.to_json())
    dead_letter(sqs, queues["results"][0], '{"status": "success"}')
    return sqs, jobs, queues


@pytest.mark.slow  # waits out retries or runs an external tool; not in the fast loop
def test_shows_dead_letters_with_reasons_and_moves_nothing_without_yes(
    setup: tuple[SQSClient, JobTable, dict[str, tuple[str, str]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sqs, _, queues = setup
    assert main(["redrive", "--json"]) == 0
    shown = {item["queue"]: item for item in json.loads(capsys.readouterr().out)}
    assert shown["audio"]["reason"] == "worker crashed 3 times: CUDA out of memory"
    assert shown["audio"]["s3_key"] == "audio-input/שיעור.mp3"
    assert shown["audio"]["job_state"] == "failed"
    assert shown["audio"]["receive_count"] >= 2
    assert "בבא קמא" in shown["audio"]["body"]
    assert shown["llm"]["reason"].startswith("not processed after")
    assert shown["results"]["reason"].startswith("malformed: invalid result message")
    assert not any(item["moved"] for item in shown.values())
    # Looked at, not taken: every message is visible in its DLQ again at once.
    for _, dlq in queues.values():
        assert len(bodies(sqs, dlq)) == 1

    assert main(["redrive", "--queue", "audio"]) == 0
    table = capsys.readouterr().out
    assert "CUDA out of memory" in table
    assert "--yes" in table


@pytest.mark.slow  # waits out retries or runs an external tool; not in the fast loop
def test_yes_moves_messages_back_and_reopens_failed_jobs(
    setup: tuple[SQSClient, JobTable, dict[str, tuple[str, str]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sqs, jobs, queues = setup
    assert main(["redrive", "--yes", "--json"]) == 0
    moved = {item["queue"]: item["moved"] for item in json.loads(capsys.readouterr().out)}
    assert moved == {"audio": True, "llm": True, "results": False}

    audio_source, audio_dlq = queues["audio"]
    [message] = sqs.receive_message(QueueUrl=audio_source, MessageAttributeNames=["All"])[
        "Messages"
    ]
    assert AudioJob.from_json(message["Body"]).job_id == "j-audio"
    assert message["MessageAttributes"]["trace"]["StringValue"] == "t-1"
    assert bodies(sqs, audio_dlq) == []
    record = jobs.get("j-audio")
    assert record is not None
    assert record.state is JobState.QUEUED, "the worker would skip a job still marked failed"
    # The next outcome's Result is still to be sent: no record may say it was.
    assert JobField.RESULT_SENT_AT not in record.attributes
    assert JobField.FAILED_BY not in record.attributes
    assert JobField.REDRIVEN_AT in record.attributes

    assert len(bodies(sqs, queues["llm"][0])) == 1
    # The malformed result would only fail again: it stays where it is.
    assert bodies(sqs, queues["results"][1]) == ['{"status": "success"}']
    assert bodies(sqs, queues["results"][0]) == []


def test_a_configured_source_queue_wins_over_discovery(
    setup: tuple[SQSClient, JobTable, dict[str, tuple[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sqs, _, queues = setup
    elsewhere = sqs.create_queue(QueueName="elsewhere")["QueueUrl"]
    monkeypatch.setenv("LLM_QUEUE_URL", elsewhere)
    assert main(["redrive", "--queue", "llm", "--yes"]) == 0
    assert len(bodies(sqs, elsewhere)) == 1
    assert bodies(sqs, queues["llm"][0]) == []


def test_result_messages_are_checked_against_their_contract(
    setup: tuple[SQSClient, JobTable, dict[str, tuple[str, str]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sqs, _, queues = setup
    good = Result.failure("audio-input/a.mp3", "bedrock throttled", job_id="j-audio")
    dead_letter(sqs, queues["results"][0], good.to_json())
    assert main(["redrive", "--queue", "results", "--yes", "--json"]) == 0
    moved = sorted(item["moved"] for item in json.loads(capsys.readouterr().out))
    assert moved == [False, True]
    assert bodies(sqs, queues["results"][0]) == [good.to_json()]


def test_no_dlq_configured_is_a_usage_error(aws: None) -> None:
    assert main(["redrive"]) == 2
