"""Handlers run in-process under their own IAM identity, moto's access control on.

The quick counterpart of the local mode's enforced identities: the Dispatcher invoked through
the Chalice test client with the role ``chalice deploy`` would give it, every call recorded
and refused if its policy does not grant it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import stage_config
from support.chalice_deploy import Deployment, deploy, s3_event

from cloudformation.call_ledger import CallLedger, denied, ungranted
from pipeline_core.jobs import JobState
from pipeline_core.metadata import encode_metadata


@pytest.fixture
def stack(tmp_path: Path, aws: None) -> Deployment:
    return deploy(tmp_path)


def _dispatch_as_role(
    stack: Deployment, key: str, policy: dict[str, Any]
) -> tuple[CallLedger, dict[str, list[dict[str, Any]]]]:
    """Upload ``key`` and invoke the Dispatcher for it with a role carrying ``policy``."""
    stack.s3.put_object(
        Bucket=stack.bucket, Key=key, Body=b"ID3fake", Metadata=encode_metadata("hebrew", "")
    )
    client = stack.client()
    event = s3_event(client, stack, key)
    return stack.invoke_as_role(
        stage_config.DISPATCHER, policy, lambda: client.lambda_.invoke("dispatcher", event)
    )


def _dispatcher_policy(stack: Deployment) -> dict[str, Any]:
    return stage_config.dispatcher_policy(
        stage_config.StackOutputs.from_mapping(stack.outputs), "test"
    )


def test_the_dispatcher_dispatches_with_only_its_own_role(stack: Deployment) -> None:
    ledger, policies = _dispatch_as_role(stack, "audio-input/lesson.mp3", _dispatcher_policy(stack))

    calls = ledger.records()
    assert {call.action for call in calls} >= {
        "s3:GetObject",
        "dynamodb:PutItem",
        "sqs:SendMessage",
        "autoscaling:SetDesiredCapacity",
    }
    assert denied(calls) == []
    assert ungranted(calls, policies) == []
    [job] = list(stack.table().scan())
    assert job.state is JobState.QUEUED
    assert stack.desired_capacity() == 1


def test_a_grant_missing_from_the_role_is_refused_and_named(stack: Deployment) -> None:
    policy = _dispatcher_policy(stack)
    policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] != "SendJobsAndResults"]

    ledger, _ = _dispatch_as_role(stack, "audio-input/lesson.mp3", policy)

    refused = [call.describe() for call in denied(ledger.records())]
    assert refused == [f"dispatcher may not sqs:SendMessage on {stack.outputs['AudioQueueArn']}"]
    assert stack.drain(stack.stack.audio_queue_url) == []
