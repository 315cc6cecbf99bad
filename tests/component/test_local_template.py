"""The local scaler reads the scale-out rule from the real template's alarm and policy, and
the emulated group follows the Audio Queue's backlog up to MaxWorkers, never below the busy
workers (moto's group, the template's stack)."""

from __future__ import annotations

import subprocess
from typing import cast

import boto3

from cloudformation.emulated import create_emulated_stack
from cloudformation.stack import load_template
from local_mode.scaler import Backlog, LocalScaler
from local_mode.template import scaling_alarm


class StandInWorker:
    """What the scaler needs of a worker process, without a process: it runs until told."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self) -> None:
        self.returncode = 0

    kill = terminate

    def wait(self) -> int:
        return self.returncode or 0


def test_the_group_follows_the_backlog_up_to_max_workers_and_never_below_the_busy(
    aws: None,
) -> None:
    stack = create_emulated_stack({"MaxWorkers": "3", "TargetBacklogPerWorker": "2"})
    alarm = scaling_alarm(load_template(), stack.ids, stack.parameters)
    assert alarm.queue_url == stack.audio_queue_url
    assert alarm.target_backlog_per_worker == 2
    assert (alarm.comparison, alarm.threshold) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm.adjustment(Backlog(0, 0), desired=2) == 0  # never a negative step
    assert alarm.adjustment(Backlog(70, 0), desired=0) == 20  # the last step is open
    sqs, autoscaling = boto3.client("sqs"), boto3.client("autoscaling")
    workers: dict[str, StandInWorker] = {}

    def start_worker(instance_id: str) -> subprocess.Popen[bytes]:
        workers[instance_id] = StandInWorker(len(workers) + 1)
        return cast("subprocess.Popen[bytes]", workers[instance_id])

    scaler = LocalScaler(autoscaling, sqs, stack.asg_name, alarm, start_worker)

    def group() -> tuple[int, int]:
        scaler.step()
        (found,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[stack.asg_name])[
            "AutoScalingGroups"
        ]
        return found["DesiredCapacity"], len(scaler.worker_pids)

    def send(count: int) -> None:
        for _ in range(count):
            sqs.send_message(QueueUrl=stack.audio_queue_url, MessageBody="{}")

    assert group() == (0, 0)
    send(3)  # CEIL(3 / 2) = 2
    sqs.receive_message(QueueUrl=stack.audio_queue_url)  # in flight counts too
    assert alarm.backlog(sqs) == Backlog(visible=2, in_flight=1)
    assert group() == (2, 2)
    send(1)  # 4 -> 2: no change
    assert group() == (2, 2)
    send(1)  # 5 -> 3
    assert group() == (3, 3)
    send(10)  # 15 -> 8, capped at MaxWorkers
    assert group() == (3, 3)

    # Three busy workers (protected, as gpu_worker/lifecycle/protection.py does), the rest of
    # the backlog gone: the policy takes nothing away.
    instances = list(workers)
    autoscaling.set_instance_protection(
        AutoScalingGroupName=stack.asg_name, InstanceIds=instances, ProtectedFromScaleIn=True
    )
    sqs.purge_queue(QueueUrl=stack.audio_queue_url)
    assert group() == (3, 3)
    # Even lowered by hand, the group keeps its busy instances.
    autoscaling.set_desired_capacity(AutoScalingGroupName=stack.asg_name, DesiredCapacity=1)
    assert group() == (1, 3)
    # Idle, each clears its protection and leaves with a decrement (gpu_worker/lifecycle/
    # scale_to_zero.py); the group, above its desired capacity, may take the others first.
    autoscaling.set_instance_protection(
        AutoScalingGroupName=stack.asg_name, InstanceIds=instances, ProtectedFromScaleIn=False
    )
    for instance in instances:
        if instance in scaler.worker_pids:
            autoscaling.terminate_instance_in_auto_scaling_group(
                InstanceId=instance, ShouldDecrementDesiredCapacity=True
            )
            group()
    assert group() == (0, 0)
    assert scaler.state.most_workers_at_once == 3
    desired = [sample.desired for sample in scaler.state.samples]
    assert desired[:7] == [0, 2, 2, 3, 3, 3, 1]
    assert desired[-1] == 0
