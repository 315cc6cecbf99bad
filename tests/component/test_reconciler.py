"""The reconciler Lambda, invoked through chalice.test.Client against the stack in moto:
the Dispatcher's failed invocations (their records on the Dispatcher DLQ) and unfinished
uploads in audio-input/ are dispatched again, once."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import stage_config
from chalice.test import Client
from support.chalice_deploy import Deployment, deploy, s3_event

from cloudformation.call_ledger import denied, ungranted
from pipeline_core.contracts import AudioJob
from pipeline_core.jobs import JobField, JobState, Lease, job_id_for
from pipeline_core.jsonlog import configure_logging
from pipeline_core.metadata import encode_metadata
from pipeline_core.reconcile import invocation_record

GRACE_NONE = {"RECONCILE_GRACE_SECONDS": "0"}


@pytest.fixture
def stack(tmp_path: Path, aws: None) -> Deployment:
    return deploy(tmp_path, versioned=True)


def upload(stack: Deployment, key: str) -> str:
    put = stack.s3.put_object(
        Bucket=stack.bucket, Key=key, Body=b"ID3fake", Metadata=encode_metadata("english", "")
    )
    return str(put["VersionId"])


def begin_job(stack: Deployment, key: str, version: str, *, lease_seconds: int) -> str:
    """The job row a Dispatcher writes before its Audio Queue send, holding its lease."""
    job_id = job_id_for(stack.bucket, key, version)
    assert stack.table().create(
        job_id=job_id,
        bucket=stack.bucket,
        s3_key=key,
        version=version,
        language="english",
        details="",
        extra={JobField.VERSION_ID: version},
        lease=Lease(JobField.ENQUEUE_LEASE_UNTIL, "a-dispatcher-invocation", lease_seconds),
    )
    return job_id


def audio_jobs(stack: Deployment) -> list[AudioJob]:
    return [AudioJob.from_json(b) for b in stack.drain(stack.outputs["AudioQueueUrl"])]


def send_failure_record(stack: Deployment, event: dict[str, Any]) -> None:
    """What Lambda sends to the on-failure destination after the last retry."""
    try:
        raise ConnectionError("Could not connect to the endpoint URL: dynamodb")
    except ConnectionError as exc:
        record = invocation_record(
            payload=event,
            function_arn="arn:aws:lambda:us-east-1:123456789012:function:x-dispatcher:$LATEST",
            request_id="8ea123e4-1db7-4aca-ad10-d9ca1234c1fd",
            invoke_count=3,
            error=exc,
        )
    stack.sqs.send_message(
        QueueUrl=stack.outputs["DispatcherDlqUrl"], MessageBody=json.dumps(record)
    )


def dlq_depth(stack: Deployment) -> int:
    attributes = stack.sqs.get_queue_attributes(
        QueueUrl=stack.outputs["DispatcherDlqUrl"], AttributeNames=["All"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def reconcile(client: Client) -> dict[str, Any]:
    """One run, invoked with the event its EventBridge schedule sends."""
    event = client.events.generate_cw_event(
        source="aws.events",
        detail_type="Scheduled Event",
        detail={},
        resources=["arn:aws:events:us-east-1:123456789012:rule/reconciler"],
    )
    report: dict[str, Any] = client.lambda_.invoke("reconciler", event).payload
    return report


def test_a_failed_invocations_record_is_dispatched_once_and_deleted(stack: Deployment) -> None:
    stream = io.StringIO()
    configure_logging("INFO", service="reconciler", stream=stream)
    client = stack.client()
    key = "audio-input/שיעור 1.mp3"
    version = upload(stack, key)
    event = s3_event(client, stack, key)
    send_failure_record(stack, event)

    report = reconcile(client)

    assert report["records_read"] == report["records_done"] == 1
    assert report["outcomes"] == {"enqueued": 1}
    [job] = audio_jobs(stack)
    # The job the Dispatcher would have made from that event: same id, same version.
    assert job.job_id == job_id_for(stack.bucket, key, version)
    assert job.version_id == version
    assert stack.job(job.job_id).state is JobState.QUEUED
    assert stack.desired_capacity() == 1
    assert dlq_depth(stack) == 0
    # JSON lines: each one about the upload names it; the run's last line says what it did.
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    ours = [line for line in lines if line["logger"].startswith("chalicelib")]
    *about, summary = ours
    assert about
    assert all(line["s3_key"] == key for line in about)
    assert any(line.get("error", "").startswith("Could not connect") for line in about)
    assert (summary["message"], summary["outcomes"]) == ("reconciler run finished", {"enqueued": 1})

    # Lambda's own late delivery, or a second run, changes nothing.
    client.lambda_.invoke("dispatcher", event)
    assert reconcile(stack.client(reconciler_env=GRACE_NONE))["outcomes"] == {}
    assert audio_jobs(stack) == []
    assert len(list(stack.table().scan())) == 1


def test_unfinished_uploads_past_the_grace_period_are_dispatched(stack: Deployment) -> None:
    client = stack.client()
    never = "audio-input/never-dispatched.mp3"
    never_version = upload(stack, never)
    done = "audio-input/dispatched.mp3"
    upload(stack, done)
    client.lambda_.invoke("dispatcher", s3_event(client, stack, done))
    half = "audio-input/died-before-sending.mp3"
    half_version = upload(stack, half)
    # A Dispatcher that died between the job row and the Audio Queue send, its lease lapsed.
    begin_job(stack, half, half_version, lease_seconds=0)
    stack.drain(stack.outputs["AudioQueueUrl"])

    # Young uploads are left to Lambda, which may still deliver their event.
    assert reconcile(client)["uploads_found"] == 0
    assert audio_jobs(stack) == []

    report = reconcile(stack.client(reconciler_env=GRACE_NONE))
    assert report["uploads_found"] == 2
    assert report["outcomes"] == {"enqueued": 1, "resent": 1}
    jobs = {job.object_key: job for job in audio_jobs(stack)}
    assert set(jobs) == {never, half}
    assert jobs[never].job_id == job_id_for(stack.bucket, never, never_version)
    assert reconcile(stack.client(reconciler_env=GRACE_NONE))["uploads_found"] == 0


def test_the_reconcilers_policy_is_all_it_needs(stack: Deployment) -> None:
    """Run under moto's access control with exactly the policy stage_config renders: no call
    refused, none beyond the policy, and the record and the listing both dispatched."""
    client = stack.client(reconciler_env=GRACE_NONE)
    first, second = "audio-input/a.mp3", "audio-input/b.mp3"
    upload(stack, first)
    send_failure_record(stack, s3_event(client, stack, first))
    upload(stack, second)
    outputs = stage_config.StackOutputs.from_mapping(stack.outputs)
    policy = stage_config.reconciler_policy(outputs, "test")
    results: list[dict[str, Any]] = []
    ledger, policies = stack.invoke_as_role(
        stage_config.RECONCILER, policy, lambda: results.append(reconcile(client))
    )
    calls = ledger.records()
    assert denied(calls) == []
    assert ungranted(calls, policies) == []
    [report] = results
    assert report["outcomes"] == {"enqueued": 2}
    assert {c.action for c in calls} >= {"s3:ListBucketVersions", "sqs:ReceiveMessage"}


def test_a_redispatched_upload_gets_its_own_output_name_under_the_reconcilers_policy(
    stack: Deployment,
) -> None:
    """lecture.mp3 was dispatched and named ``lecture``; lecture.wav's dispatch failed. The
    reconciler's dispatch reserves lecture.wav's name as the Dispatcher would, with only
    the grants its policy has."""
    client = stack.client(reconciler_env=GRACE_NONE)
    upload(stack, "audio-input/lecture.mp3")
    client.lambda_.invoke("dispatcher", s3_event(client, stack, "audio-input/lecture.mp3"))
    wav_version = upload(stack, "audio-input/lecture.wav")
    send_failure_record(stack, s3_event(client, stack, "audio-input/lecture.wav"))
    policy = stage_config.reconciler_policy(
        stage_config.StackOutputs.from_mapping(stack.outputs), "test"
    )

    ledger, policies = stack.invoke_as_role(
        stage_config.RECONCILER, policy, lambda: reconcile(client)
    )

    assert denied(ledger.records()) == []
    assert ungranted(ledger.records(), policies) == []
    names = {job.object_key: job.output_name for job in audio_jobs(stack)}
    assert names == {
        "audio-input/lecture.mp3": "lecture",
        "audio-input/lecture.wav": "lecture (wav)",
    }
    wav_job = job_id_for(stack.bucket, "audio-input/lecture.wav", wav_version)
    assert stack.job(wav_job).output_name == "lecture (wav)"


def test_a_record_that_fails_again_or_cannot_be_read_stays_for_the_next_run(
    stack: Deployment,
) -> None:
    client = stack.client()
    key = "audio-input/still-failing.mp3"
    upload(stack, key)
    send_failure_record(stack, s3_event(client, stack, key))
    stack.sqs.send_message(QueueUrl=stack.outputs["DispatcherDlqUrl"], MessageBody="not json")
    outputs = stage_config.StackOutputs.from_mapping(stack.outputs)
    policy = stage_config.reconciler_policy(outputs, "test")
    # The job table still unreachable for it: its grants taken away.
    policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] != "JobTable"]
    results: list[dict[str, Any]] = []
    stack.invoke_as_role(stage_config.RECONCILER, policy, lambda: results.append(reconcile(client)))
    [report] = results
    assert (report["records_read"], report["records_done"], report["records_left"]) == (2, 0, 2)
    assert len(report["failures"]) == 2
    assert dlq_depth(stack) == 2  # both still there, for the next run and the alarm
    assert audio_jobs(stack) == []


def test_a_record_whose_job_another_delivery_is_dispatching_stays_until_it_is_done(
    stack: Deployment,
) -> None:
    """Lambda's last retry still holds the job's lease when the reconciler runs: it leaves
    the job to that delivery and keeps the record; once the lease has lapsed (after the
    Dispatcher's timeout) a later run finishes the job."""
    client = stack.client()
    key = "audio-input/lease-held.mp3"
    version = upload(stack, key)
    job_id = begin_job(stack, key, version, lease_seconds=3600)
    send_failure_record(stack, s3_event(client, stack, key))
    report = reconcile(client)
    assert report["outcomes"] == {"duplicate": 1}
    assert report["records_left"] == 1
    assert audio_jobs(stack) == []

    assert dlq_depth(stack) == 1  # kept (in flight until its visibility timeout)

    stack.table().update_fields(job_id, {JobField.ENQUEUE_LEASE_UNTIL: 0})  # it lapsed
    report = reconcile(stack.client(reconciler_env=GRACE_NONE))
    assert (report["uploads_found"], report["outcomes"]) == (1, {"resent": 1})
    [job] = audio_jobs(stack)
    assert job.job_id == job_id
