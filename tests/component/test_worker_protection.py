"""Scale-in protection: a worker holding a job is protected, an idle one is not, so that a
group whose desired capacity drops (an operator, a stack update) loses only idle instances.

The worker runs in-process on the real tiny.en engine; the group's state is read from moto
at the moment of the worker's own calls (botocore's event hooks on its clients).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.worker_harness import FakeImds, Pipeline

from cloudformation.call_ledger import ungranted
from gpu_worker.daemon import EXIT_OK
from pipeline_core.jobs import JobState

# Mid-job: the transcript's first write. (The download may come before the job starts: a
# prefetched job is fetched while the engine still works on the one before.)
WRITING = "before-call.s3.PutObject"
LEAVE = "before-call.auto-scaling.TerminateInstanceInAutoScalingGroup"


def _protection(pipeline: Pipeline) -> dict[str, bool]:
    return {
        instance["InstanceId"]: instance["ProtectedFromScaleIn"]
        for instance in pipeline.group()["Instances"]
    }


def test_busy_worker_is_protected_and_only_idle_instances_go_when_the_group_shrinks(
    pipeline: Pipeline, fox_mp3: Path, fake_imds: FakeImds
) -> None:
    """Two instances, one worker busy on a job; the group is lowered to 1 by hand mid-job:
    the idle instance goes, the busy one stays and finishes; idle, it clears its protection
    and leaves. Every call the worker made is granted by its role's policies."""
    asg = pipeline.stack.asg_name
    pipeline.autoscaling.update_auto_scaling_group(AutoScalingGroupName=asg, MaxSize=2)
    pipeline.autoscaling.set_desired_capacity(AutoScalingGroupName=asg, DesiredCapacity=2)
    busy, idle = [instance["InstanceId"] for instance in pipeline.group()["Instances"]]
    fake_imds.instance_id = busy
    job_id = pipeline.dispatch(pipeline.upload("fox.mp3", fox_mp3))
    aws, ledger, policies = pipeline.instance_role()
    seen: dict[str, dict[str, bool]] = {}

    def operator_lowers_the_group(**_: Any) -> None:
        if "during the job" not in seen:
            seen["during the job"] = _protection(pipeline)
            pipeline.autoscaling.set_desired_capacity(AutoScalingGroupName=asg, DesiredCapacity=1)
            seen["after the group shrank"] = _protection(pipeline)

    def leaving(**_: Any) -> None:
        seen["leaving"] = _protection(pipeline)

    aws.s3.meta.events.register(WRITING, operator_lowers_the_group)
    aws.autoscaling.meta.events.register(LEAVE, leaving)

    worker = pipeline.worker(aws=aws, asg_name=asg, imds_endpoint=fake_imds.url)
    assert worker.run() == EXIT_OK

    assert seen["during the job"] == {busy: True, idle: False}
    assert seen["after the group shrank"] == {busy: True}  # the idle one went
    assert seen["leaving"] == {busy: False}
    assert pipeline.job(job_id).state is JobState.TRANSCRIBED
    assert pipeline.group()["DesiredCapacity"] == 0
    calls = ledger.records()
    assert ungranted(calls, policies) == []
    protection_calls = [
        call.action for call in calls if call.action == "autoscaling:SetInstanceProtection"
    ]
    assert len(protection_calls) == 2  # on at the job, off when idle: not once per poll
