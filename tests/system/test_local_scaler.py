"""The local scaler: alarm -> ASG capacity -> a worker process -> the worker's own scale-in."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import boto3
import pytest
from support.waiting import wait_until

from local_mode.emulator import Emulator, environment, moto_server
from local_mode.scaler import BacklogAlarm, LocalScaler, StepAdjustment

pytestmark = pytest.mark.slow  # processes of their own: not in the fast loop

# A process that behaves as the worker does at the end of its life: it scales its own
# instance in through the Auto Scaling API, then exits.
SELF_TERMINATING = textwrap.dedent(
    """
    import os, sys, time, boto3
    time.sleep(1)
    boto3.client("autoscaling").terminate_instance_in_auto_scaling_group(
        InstanceId=sys.argv[1], ShouldDecrementDesiredCapacity=True)
    """
)


@pytest.fixture
def emulated() -> Iterator[Emulator]:
    with moto_server() as emu, environment(emu.environment()):
        yield emu


def make_asg() -> str:
    ec2 = boto3.client("ec2")
    ec2.create_launch_template(
        LaunchTemplateName="gpu",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "g4dn.xlarge"},
    )
    boto3.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName="gpu-asg",
        LaunchTemplate={"LaunchTemplateName": "gpu", "Version": "$Latest"},
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=0,
        AvailabilityZones=["us-east-1a"],
    )
    return "gpu-asg"


def desired(asg: str) -> int:
    group = boto3.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[asg])
    return group["AutoScalingGroups"][0]["DesiredCapacity"]


def test_alarm_starts_worker_and_self_termination_scales_to_zero(emulated: Emulator) -> None:
    asg = make_asg()
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="audio")["QueueUrl"]
    alarm = BacklogAlarm(
        queue, 1, "GreaterThanOrEqualToThreshold", 1, (StepAdjustment(0, None, 1),)
    )

    def start_worker(instance_id: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", SELF_TERMINATING, instance_id], env=dict(os.environ)
        )

    scaler = LocalScaler(
        boto3.client("autoscaling"), sqs, asg, alarm, start_worker, interval_seconds=0.2
    )
    scaler.step()
    assert desired(asg) == 0
    assert not scaler.worker_running

    sqs.send_message(QueueUrl=queue, MessageBody="{}")
    scaler.step()
    assert desired(asg) == 1
    assert scaler.worker_running
    # The message is consumed (as the worker would), so the backlog is gone.
    sqs.delete_message(
        QueueUrl=queue,
        ReceiptHandle=sqs.receive_message(QueueUrl=queue)["Messages"][0]["ReceiptHandle"],
    )

    def scaled_in() -> bool:
        scaler.step()
        return not scaler.worker_running and desired(asg) == 0

    wait_until(scaled_in, 30, "the worker to scale its group in", interval=0.2)
    assert desired(asg) == 0
    assert not scaler.worker_running
    assert scaler.state.workers_started == 1
    history = [event.what for event in scaler.state.events]
    assert any("desired capacity 0 -> 1" in what for what in history)
    # Either the process exited after scaling itself in, or the scaler saw its instance leave
    # the group first and stopped it, as EC2 stops a terminated instance: both end the worker.
    assert any(
        "exited with code 0" in what or f"{scaler_instance(history)} left the group" in what
        for what in history
    ), history
    assert "ASG desired capacity 1 -> 0" in history
    scaler.stop()


def scaler_instance(history: list[str]) -> str:
    started = next(what for what in history if what.startswith("worker started on instance"))
    return started.split()[4]
