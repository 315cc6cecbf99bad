"""Scale to zero: the worker leaves its Auto Scaling group when idle, and strands nothing.

The races are staged with botocore's own event hooks on the worker's clients: another
party's message is sent at the exact moment between two of the worker's AWS calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import stage_config
from moto.core import set_initial_no_auth_action_count
from support.worker_harness import FakeImds, Pipeline

from cloudformation.call_ledger import denied, ungranted
from cloudformation.emulated import function_role
from cloudformation.stack import load_template
from gpu_worker.daemon import EXIT_OK
from pipeline_core.contracts import AudioJob
from pipeline_core.jobs import JobState

TERMINATE = "before-call.auto-scaling.TerminateInstanceInAutoScalingGroup"
GIVE_BACK_ONLY = {"SuspendProcesses"}


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


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


def test_the_race_is_won_under_the_worker_role(
    pipeline: Pipeline, group: str, fake_imds: FakeImds
) -> None:
    """The same race with moto's IAM on: the worker calls as the template's role, whose one
    "*" grant (DescribeAutoScalingGroups, generated from GRANTS_WITHOUT_CALLS: the local-mode
    runs never meet this race) and whose raise of its own group are what the race needs; the
    late message is the Dispatcher's, sent under its own role."""
    aws, ledger, policies = pipeline.instance_role()
    dispatcher_policy = stage_config.dispatcher_policy(
        stage_config.StackOutputs.from_mapping(pipeline.stack.outputs), "test"
    )
    dispatcher = function_role(pipeline.stack, stage_config.DISPATCHER, dispatcher_policy)
    dispatcher_sqs = dispatcher.session().client("sqs")
    late = AudioJob(s3_key="late.mp3", language="en").to_json()

    def another_upload_arrives(**_: Any) -> None:
        dispatcher_sqs.send_message(QueueUrl=pipeline.stack.audio_queue_url, MessageBody=late)

    aws.autoscaling.meta.events.register(TERMINATE, another_upload_arrives)

    @set_initial_no_auth_action_count(0)
    def run_as_the_instance() -> int:
        return pipeline.worker(aws=aws, asg_name=group, imds_endpoint=fake_imds.url).run()

    assert run_as_the_instance() == EXIT_OK

    calls = ledger.records()
    assert denied(calls) == []
    assert ungranted(calls, policies) == []
    called = {call.action for call in calls}
    assert {"autoscaling:DescribeAutoScalingGroups", "autoscaling:SetDesiredCapacity"} <= called
    assert pipeline.group()["DesiredCapacity"] == 1
    assert pipeline.drain(pipeline.stack.audio_queue_url) == [late]


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
        action.removeprefix("autoscaling:"): statement["Resource"]
        for statement in statements
        for action in _listed(statement["Action"])
        if action.startswith("autoscaling:")
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


# ---- a fleet: each idle worker leaves on its own --------------------------------------


def test_an_idle_worker_leaves_while_another_works_and_the_group_keeps_the_busy_one(
    pipeline: Pipeline, fake_imds: FakeImds
) -> None:
    """Two workers, one busy (its message in flight), nothing waiting: the idle one leaves
    with a decrement; the busy one's instance and message are untouched."""
    asg = pipeline.stack.asg_name
    pipeline.autoscaling.update_auto_scaling_group(AutoScalingGroupName=asg, MaxSize=2)
    pipeline.autoscaling.set_desired_capacity(AutoScalingGroupName=asg, DesiredCapacity=2)
    idle, busy = [instance["InstanceId"] for instance in pipeline.group()["Instances"]]
    pipeline.send_audio(AudioJob(s3_key="long-lecture.mp3", language="en").to_json())
    held = pipeline.sqs.receive_message(
        QueueUrl=pipeline.stack.audio_queue_url, VisibilityTimeout=300
    )["Messages"]
    assert len(held) == 1  # the busy worker's job
    fake_imds.instance_id = idle

    assert pipeline.worker(asg_name=asg, imds_endpoint=fake_imds.url).run() == EXIT_OK

    after = pipeline.group()
    assert after["DesiredCapacity"] == 1
    assert [instance["InstanceId"] for instance in after["Instances"]] == [busy]
    attributes = pipeline.sqs.get_queue_attributes(
        QueueUrl=pipeline.stack.audio_queue_url, AttributeNames=["All"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_the_last_worker_stays_for_a_message_that_no_live_worker_holds(
    pipeline: Pipeline, group: str, fake_imds: FakeImds
) -> None:
    """One worker, a message in flight that it does not hold (its worker died): more in
    flight than the other workers (none) hold, so it stays, and leaves once it is gone."""
    pipeline.send_audio(AudioJob(s3_key="orphan.mp3", language="en").to_json())
    (orphan,) = pipeline.sqs.receive_message(
        QueueUrl=pipeline.stack.audio_queue_url, VisibilityTimeout=300
    )["Messages"]
    looks: list[int] = []

    def the_dead_workers_message_expires(**_: Any) -> None:
        looks.append(1)
        if len(looks) == 3:  # stayed twice; now the message is deleted (its job finished)
            pipeline.sqs.delete_message(
                QueueUrl=pipeline.stack.audio_queue_url, ReceiptHandle=orphan["ReceiptHandle"]
            )

    pipeline.autoscaling.meta.events.register(
        "before-call.auto-scaling.DescribeAutoScalingGroups", the_dead_workers_message_expires
    )
    assert pipeline.worker(asg_name=group, imds_endpoint=fake_imds.url).run() == EXIT_OK
    assert len(looks) >= 3
    assert pipeline.group()["DesiredCapacity"] == 0
