"""``onprem status --reconcile`` against the stack in moto, calling as the on-prem user
(the template's OnPremPolicy, moto's access control on), then the reconciler's run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from moto.core import set_initial_no_auth_action_count
from support.chalice_deploy import Deployment, deploy, s3_event

from cloudformation.emulated import ONPREM, Credentials, create_identities
from pipeline_core.contracts import AudioJob
from pipeline_core.jobs import job_id_for
from pipeline_core.metadata import encode_metadata
from pipeline_core.reconcile import RECONCILE_REQUESTED, InvocationFailure


@pytest.fixture
def stack(tmp_path: Path, aws: None) -> Deployment:
    return deploy(tmp_path / "chalice", versioned=True)


@pytest.fixture
def onprem_user(stack: Deployment) -> Credentials:
    return create_identities(stack.stack, {}).components[ONPREM]


def upload(stack: Deployment, key: str) -> str:
    put = stack.s3.put_object(
        Bucket=stack.bucket, Key=key, Body=b"ID3fake", Metadata=encode_metadata("hebrew", "")
    )
    return str(put["VersionId"])


def run_as_onprem(
    stack: Deployment,
    user: Credentials,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[int, Any]:
    """``onprem status --reconcile --json`` with the on-prem user's credentials, enforced."""
    from onprem.cli import main

    for name, value in user.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PIPELINE_BUCKET", stack.bucket)
    monkeypatch.setenv("JOB_TABLE", stack.stack.job_table)
    monkeypatch.setenv("DISPATCHER_DLQ_URL", stack.outputs["DispatcherDlqUrl"])
    capsys.readouterr()
    code = set_initial_no_auth_action_count(0)(main)(["status", "--reconcile", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_unfinished_uploads_are_handed_to_the_reconciler_which_dispatches_them_once(
    stack: Deployment,
    onprem_user: Credentials,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = stack.client()
    dispatched = "audio-input/dispatched.mp3"
    upload(stack, dispatched)
    client.lambda_.invoke("dispatcher", s3_event(client, stack, dispatched))
    stack.drain(stack.outputs["AudioQueueUrl"])
    dropped = "audio-input/שיעור שנשמט.mp3"  # its S3 event's invocation failed, record lost
    version = upload(stack, dropped)

    code, young = run_as_onprem(stack, onprem_user, monkeypatch, capsys)  # within the grace period
    assert (code, young) == (0, [])
    code, handed = run_as_onprem(stack, onprem_user, monkeypatch, capsys, "--grace-minutes", "0")
    assert code == 0
    assert handed == [
        {
            "s3_key": dropped,
            "version_id": version,
            "uploaded_at": handed[0]["uploaded_at"],
            "job_id": job_id_for(stack.bucket, dropped, version),
        }
    ]
    [message] = stack.sqs.receive_message(
        QueueUrl=stack.outputs["DispatcherDlqUrl"], VisibilityTimeout=0
    )["Messages"]
    request = InvocationFailure.from_json(message["Body"])
    assert request.condition == RECONCILE_REQUESTED

    # The reconciler's next run dispatches it, as the Dispatcher would have.
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    report = client.lambda_.invoke("reconciler", event).payload
    assert report["outcomes"] == {"enqueued": 1}
    [job] = [AudioJob.from_json(b) for b in stack.drain(stack.outputs["AudioQueueUrl"])]
    assert (job.object_key, job.version_id) == (dropped, version)
    code, again = run_as_onprem(stack, onprem_user, monkeypatch, capsys, "--grace-minutes", "0")
    assert (code, again) == (0, [])
