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
from local_mode.lambda_runtime import QueueTrigger, s3_notification_event
from pipeline_core.keys import decode_event_key


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
