"""The local mode's stand-ins for Lambda event sources, against a real moto server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from support.waiting import wait_until

from local_mode.emulator import Emulator, environment, moto_server
from local_mode.lambda_runtime import AsyncInvocation, QueueTrigger, s3_notification_event
from pipeline_core.keys import decode_event_key
from pipeline_core.reconcile import InvocationFailure


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with moto_server() as emu:
        yield emu


@pytest.fixture
def emulated(emulator: Emulator) -> Iterator[Emulator]:
    with environment(emulator.environment()):
        yield emulator


def make_queue_with_dlq(name: str) -> tuple[str, str, str]:
    sqs = boto3.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": "30",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn, dlq_url


@pytest.mark.slow  # waits out real timeouts; the fast loop skips it
def test_sqs_trigger_deletes_on_success_and_redrives_poison(emulated: Emulator) -> None:
    sqs = boto3.client("sqs")
    url, arn, dlq_url = make_queue_with_dlq("llm")
    done: list[str] = []
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def handler(event: dict[str, Any], context: Any) -> None:
        (record,) = event["Records"]
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"] == arn
        assert context.get_remaining_time_in_millis() > 0
        body = record["body"]
        with lock:
            attempts[body] = attempts.get(body, 0) + 1
        time.sleep(0.3)
        if body == "poison":
            raise RuntimeError("cannot handle this one")
        with lock:
            done.append(body)

    for body in ["poison", *[f"ok-{i}" for i in range(8)]]:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    trigger = QueueTrigger(
        sqs, url, arn, handler, function_name="caller", max_concurrency=3, retry_after_seconds=1
    )
    trigger.start()
    try:
        wait_until(lambda: len(done) == 8, 30, "the eight good messages to be handled")
        wait_until(
            lambda: (
                int(
                    sqs.get_queue_attributes(
                        QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
                    )["Attributes"]["ApproximateNumberOfMessages"]
                )
                == 1
            ),
            30,
            "the poison message to reach the DLQ",
        )
    finally:
        trigger.stop()
    assert sorted(done) == sorted(f"ok-{i}" for i in range(8))
    assert attempts["poison"] == 3
    assert 1 < trigger.stats.max_concurrency_seen <= 3
    dead = sqs.receive_message(QueueUrl=dlq_url)["Messages"]
    assert dead[0]["Body"] == "poison"
    left = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", [])
    assert left == []


def test_s3_notifications_reach_the_handler_with_encoded_keys(emulated: Emulator) -> None:
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    url, arn, _ = make_queue_with_dlq("s3-events")
    s3.create_bucket(Bucket="uploads")
    s3.put_bucket_notification_configuration(
        Bucket="uploads",
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": "audio-input/"}]}
                    },
                }
            ]
        },
    )
    seen: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        seen.extend(r["s3"]["object"]["key"] for r in event["Records"])

    s3.put_object(Bucket="uploads", Key="audio-input/שיעור א.mp3", Body=b"x")
    s3.put_object(Bucket="uploads", Key="other/ignored.mp3", Body=b"x")
    trigger = QueueTrigger(
        sqs, url, arn, handler, function_name="dispatcher", make_event=s3_notification_event
    )
    trigger.start()
    try:
        wait_until(lambda: len(seen) == 1, 30, "the notification to reach the handler")
    finally:
        trigger.stop()
    assert seen[0] != "audio-input/שיעור א.mp3"  # S3 events carry keys URL-encoded
    assert decode_event_key(seen[0]) == "audio-input/שיעור א.mp3"


def test_an_asynchronous_invocation_is_retried_then_recorded_on_the_failure_destination(
    emulated: Emulator,
) -> None:
    """As Lambda handles an S3 event its function keeps failing: the first attempt and two
    retries, then the invocation record (the real shape) on the on-failure destination; an
    event that succeeds on a retry leaves no record."""
    sqs = boto3.client("sqs")
    url, arn, _ = make_queue_with_dlq("async-events")
    destination = sqs.create_queue(QueueName="on-failure")["QueueUrl"]
    attempts: dict[str, int] = {}
    request_ids: dict[str, set[str]] = {}
    lock = threading.Lock()

    def handler(event: dict[str, Any], context: Any) -> None:
        name = event["Records"][0]["s3"]["object"]["key"]
        with lock:
            attempts[name] = attempts.get(name, 0) + 1
            request_ids.setdefault(name, set()).add(context.aws_request_id)
            if name == "always-fails" or attempts[name] == 1:
                raise ConnectionError(
                    f"Could not connect to the endpoint URL (try {attempts[name]})"
                )

    def record_on(queue_url: str, body: str) -> None:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)

    function_arn = "arn:aws:lambda:us-east-1:123456789012:function:dispatcher:$LATEST"
    config = AsyncInvocation(
        function_arn=function_arn,
        max_retry_attempts=2,
        retry_delays_seconds=(0, 1),
        send_on_failure=lambda body: record_on(destination, body),
    )
    for name in ("always-fails", "fails-once"):
        event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": name}}}]}
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
    trigger = QueueTrigger(
        sqs, url, arn, handler, function_name="dispatcher", make_event=s3_notification_event,
        asynchronous=config,
    )  # fmt: skip
    trigger.start()
    try:
        records: list[dict[str, Any]] = []

        def recorded() -> bool:
            for message in sqs.receive_message(QueueUrl=destination).get("Messages", []):
                records.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=destination, ReceiptHandle=message["ReceiptHandle"])
            return bool(records)

        wait_until(recorded, 30, "the invocation record on the on-failure destination")
        wait_until(lambda: attempts.get("fails-once") == 2, 30, "the retried event to succeed")
    finally:
        trigger.stop()
    assert attempts == {"always-fails": 3, "fails-once": 2}
    assert all(len(ids) == 1 for ids in request_ids.values())  # one request across retries
    (record,) = records
    failed = InvocationFailure.from_json(json.dumps(record))
    assert failed.condition == "RetriesExhausted"
    assert failed.invoke_count == 3
    assert failed.function_arn == function_arn
    assert failed.request_id in request_ids["always-fails"]
    assert failed.payload["Records"][0]["s3"]["object"]["key"] == "always-fails"
    assert "try 3" in failed.error
    assert record["version"] == "1.0"
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["responsePayload"]["errorType"] == "ConnectionError"
    left = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", [])
    assert left == []
