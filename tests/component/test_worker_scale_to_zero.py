"""Scale to zero: the worker leaves its Auto Scaling group when idle, and strands nothing.

The races are staged with botocore's own event hooks on the worker's clients: another
party's message is sent at the exact moment between two of the worker's AWS calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.worker_harness import FakeImds, Pipeline

from cloudformation.stack import load_template
from gpu_worker.daemon import EXIT_OK
from pipeline_core.contracts import AudioJob
from pipeline_core.jobs import JobState

TERMINATE = "before-call.auto-scaling.TerminateInstanceInAutoScalingGroup"
GIVE_BACK_ONLY = {"SuspendProcesses"}


@pytest.fixture
def group(pipeline: Pipeline, fake_imds: FakeImds) -> str:
    name = pipeline.start_gpu_instance()
    assert pipeline.instance_id is not None
    fake_imds.instance_id = pipeline.instance_id
    return name


def test_idle_worker_terminates_itself_and_the_group_goes_to_zero(
    pipeline: Pipeline, group: str, fake_imds: FakeImds
) -> None:
    assert pipeline.group()["DesiredCapacity"] == 1

    worker = pipeline.worker(asg_name=group, imds_endpoint=fake_imds.url)
    assert worker.run() == EXIT_OK

    after = pipeline.group()
    assert after["DesiredCapacity"] == 0
    assert after["Instances"] == []  # no replacement is launched


def test_idle_worker_without_a_group_just_exits(pipeline: Pipeline) -> None:
    assert pipeline.worker(asg_name=None).run() == EXIT_OK


def test_message_arriving_while_terminating_raises_the_group_again(
    pipeline: Pipeline, group: str, fake_imds: FakeImds
) -> None:
    late = AudioJob(s3_key="late.mp3", language="en").to_json()

    def another_upload_arrives(**_: Any) -> None:
        pipeline.send_audio(late)  # after the worker's last look, before its terminate

    pipeline.autoscaling.meta.events.register(TERMINATE, another_upload_arrives)
    worker = pipeline.worker(asg_name=group, imds_endpoint=fake_imds.url)
    assert worker.run() == EXIT_OK

    after = pipeline.group()
    assert after["DesiredCapacity"] == 1  # a fresh instance comes for the late message
    assert [i["InstanceId"] for i in after["Instances"]] != [pipeline.instance_id]
    assert pipeline.drain(pipeline.stack.audio_queue_url) == [late]  # not taken, not lost


def test_the_worker_role_grants_the_auto_scaling_calls_of_leaving_and_no_other(
    pipeline: Pipeline, group: str, fake_imds: FakeImds
) -> None:
    """Every Auto Scaling call of the scale-in race, recorded, is granted by the template's
    WorkerPolicy (the group's ARN where the action has resource-level permissions), and no
    Auto Scaling grant is left that nothing calls. moto cannot check this under its IAM
    enforcement: it authorises Auto Scaling actions against resource "*" only."""
    called: set[str] = set()

    def record(event_name: str, **_: Any) -> None:
        called.add(event_name.rsplit(".", 1)[-1])

    def another_upload_arrives(**_: Any) -> None:
        pipeline.send_audio(AudioJob(s3_key="late.mp3", language="en").to_json())

    pipeline.autoscaling.meta.events.register("before-call.auto-scaling", record)
    pipeline.autoscaling.meta.events.register(TERMINATE, another_upload_arrives)
    worker = pipeline.worker(asg_name=group, imds_endpoint=fake_imds.url)
    assert worker.run() == EXIT_OK

    statements = load_template()["Resources"]["WorkerPolicy"]["Properties"]["PolicyDocument"][
        "Statement"
    ]
    granted = {
        statement["Action"].removeprefix("autoscaling:"): statement["Resource"]
        for statement in statements
        if str(statement["Action"]).startswith("autoscaling:")
    }
    # The give-back of a worker that cannot work also suspends the group's alarm scaling
    # (tests/component/test_worker_give_back.py records its calls).
    assert set(granted) == called | GIVE_BACK_ONLY
    own_group = ":autoScalingGroup:*:autoScalingGroupName/${AWS::StackName}-gpu-workers"
    for action, resource in granted.items():
        if action.startswith("Describe"):  # no resource-level permissions
            assert resource == "*"
        else:
            assert resource["Fn::Sub"].endswith(own_group), action


def test_message_arriving_before_the_last_look_is_served_first(
    pipeline: Pipeline, group: str, fox_mp3: Path
) -> None:
    key = pipeline.upload("fox.mp3", fox_mp3)
    sent: list[str] = []

    def upload_lands_after_an_empty_poll(parsed: dict[str, Any], **_: Any) -> None:
        if not sent and not parsed.get("Messages"):
            sent.append(pipeline.dispatch(key))

    pipeline.sqs.meta.events.register(
        "after-call.sqs.ReceiveMessage", upload_lands_after_an_empty_poll
    )
    # Local mode's stand-in instances have no IMDS; the id comes from the environment.
    worker = pipeline.worker(asg_name=group, instance_id=pipeline.instance_id)
    assert worker.run() == EXIT_OK

    [job_id] = sent
    assert [job.job_id for job in pipeline.llm_jobs()] == [job_id]
    assert pipeline.job(job_id).state is JobState.TRANSCRIBED
    assert pipeline.group()["DesiredCapacity"] == 0  # and then it left


def test_rebalance_advice_hands_waiting_work_to_a_replacement(
    pipeline: Pipeline, group: str, fake_imds: FakeImds
) -> None:
    waiting = AudioJob(s3_key="waiting.mp3", language="en").to_json()
    pipeline.send_audio(waiting)
    fake_imds.recommend_rebalance()

    worker = pipeline.worker(asg_name=group, imds_endpoint=fake_imds.url, poll_wait_seconds=1)
    assert worker.run() == EXIT_OK

    after = pipeline.group()
    assert after["DesiredCapacity"] == 1  # not shrunk: the group replaces the instance
    assert pipeline.instance_id not in [i["InstanceId"] for i in after["Instances"]]
    assert pipeline.drain(pipeline.stack.audio_queue_url) == [waiting]
