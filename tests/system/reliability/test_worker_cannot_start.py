"""A worker that cannot work: its instance leaves the group, the upload waits for the fix.

The emulated instance plays systemd from the worker's unit file (``local_mode.systemd_unit``):
a configuration error (exit 2) is not restarted, a model that does not load is restarted
until the start limit; either way the unit's ``OnFailure=`` program
(``gpu_worker.lifecycle.give_back``) runs under the worker's role. Then the operator's fix of
docs/operations.md (correct the setting, resume the group's alarm-driven scaling) lets the
upload end in exactly one outcome.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.waiting import wait_until
from system.reliability.conftest import Report
from system.reliability.invariant import queue_count
from system.reliability.scenario import scenario

from cloudformation.stack import load_template
from gpu_worker.lifecycle.give_back import ALARM_SCALING_PROCESS
from local_mode.systemd_unit import RestartPolicy
from local_mode.template import alarm_condition_met

pytestmark = pytest.mark.slow

POLICY = RestartPolicy.from_unit()
# case -> (the broken setting, the starts before the unit fails, what the cause names)
BROKEN = {
    "bad_configuration": (
        {"WORKER_ENGINE": "whisper.cpp"},
        1,
        "bad configuration: environment variable WORKER_ENGINE='whisper.cpp' is not one of",
    ),
    "model_does_not_load": (
        {"WORKER_MODELS": "*=/nonexistent/model"},
        POLICY.start_limit_burst,
        "could not load the default model '/nonexistent/model'",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_worker_that_cannot_work_gives_its_instance_back_and_the_upload_waits(
    tmp_path: Path, fox_mp3: Path, report: Report, case: str
) -> None:
    broken, starts_expected, cause = BROKEN[case]
    with scenario(tmp_path, worker=broken) as run:
        scaler = run.deployment.scaler
        assert scaler is not None
        stack = run.deployment.stack
        autoscaling = stack.client("autoscaling")
        upload = run.upload("fox.mp3", fox_mp3)

        def given_back() -> bool:
            return any(
                "OnFailure= on" in e.what and "exited" in e.what for e in scaler.state.events
            )

        gave_back_after = wait_until(given_back, 240, "the OnFailure= program to finish")
        history = [event.what for event in scaler.state.events]
        assert any("OnFailure=" in what and "exited with code 0" in what for what in history)
        assert scaler.state.workers_started == starts_expected
        group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[stack.asg_name])[
            "AutoScalingGroups"
        ][0]
        assert group["DesiredCapacity"] == 0
        assert [i for i in group["Instances"] if i["LifecycleState"] == "InService"] == []
        suspended = [p["ProcessName"] for p in group["SuspendedProcesses"]]
        assert suspended == [ALARM_SCALING_PROCESS]
        # Nothing lost: the message waits in the Audio Queue, the job is not failed.
        assert queue_count(run.sqs, stack.audio_queue_url) == 1
        record = run.record(upload)
        assert record is not None
        assert not record.state.is_final
        # Reported: a log line that names the cause, and the alarm's condition is met.
        [line] = [
            line
            for line in run.worker_lines()
            if line["message"].startswith("the worker cannot work; giving its instance back")
        ]
        assert line["level"] == "ERROR"
        assert cause in line["cause"]
        assert line["instance_id"] in " ".join(history)
        assert alarm_condition_met(
            load_template(), "WorkerFatalExitAlarm", stack.ids, stack.client("cloudwatch")
        )
        # The group stays at 0 while the message waits: no instance is started into the
        # same failure (the scaler evaluates the queue-depth alarm every second).
        scaler.step()
        assert scaler.state.desired_capacity == 0

        # The operator's fix (docs/operations.md): the setting, then the group's scaling.
        for name in broken:
            del run.deployment.options.worker_overrides[name]
        autoscaling.resume_processes(
            AutoScalingGroupName=stack.asg_name, ScalingProcesses=[ALARM_SCALING_PROCESS]
        )
        fixed_after = run.wait_finished()
        run.wait_scaled_in()
        figures = run.check()
        assert figures.succeeded == 1
    report(
        case=case,
        fault=f"worker cannot work: {cause} ({', '.join(f'{k}={v}' for k, v in broken.items())})",
        happened=(
            f"{starts_expected} start(s), then OnFailure= gave the instance back (group 0, "
            "alarm scaling suspended, WorkerFatalExitAlarm condition met); the message waited"
        ),
        outcome="finished once after the fix and the resume",
        figures={
            **figures.as_dict(),
            "given_back_after_s": round(gave_back_after, 1),
            "finished_after_fix_s": round(fixed_after, 1),
        },
    )
