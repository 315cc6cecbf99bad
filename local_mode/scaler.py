"""The Auto Scaling Group, honoured locally: the queue-depth alarm raises it, a worker
process stands in for the instance, and the worker's own scale-in brings it back to 0.

The scaler also plays systemd on the instance (``local_mode.systemd_unit``): a worker that
exits with a failure is started again, until its unit fails for good (a configuration
error, or the start limit); then the unit's ``OnFailure=`` program runs (it gives the
instance back), and that instance gets no worker again. A suspended ``AlarmNotification``
process keeps the alarm from raising the group, as in AWS.

moto's CloudFormation silently skips ``AWS::CloudWatch::Alarm`` and
``AWS::AutoScaling::ScalingPolicy``; this module evaluates the template's alarm rule against
the emulated queue and applies its policy, and it starts the worker daemon as a separate
process whenever the emulated ASG has desired capacity and an instance without a worker.
"""

from __future__ import annotations

import logging
import operator
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from gpu_worker.lifecycle.give_back import ALARM_SCALING_PROCESS
from local_mode.systemd_unit import RestartPolicy

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

COMPARISONS: Final = {
    "GreaterThanOrEqualToThreshold": operator.ge,
    "GreaterThanThreshold": operator.gt,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}

# CloudWatch's AWS/SQS metric names -> the queue attributes that carry the same figure.
METRIC_ATTRIBUTES: Final = {
    "ApproximateNumberOfMessagesVisible": "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible": "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed": "ApproximateNumberOfMessagesDelayed",
}


@dataclass(frozen=True)
class QueueDepthAlarm:
    """A CloudWatch alarm on an SQS queue attribute, with the capacity its policy sets."""

    queue_url: str
    metric: str
    comparison: str
    threshold: float
    capacity: int

    def breached(self, sqs: SQSClient) -> bool:
        response = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["All"])
        attributes: dict[str, str] = {str(k): v for k, v in response["Attributes"].items()}
        value = float(attributes.get(METRIC_ATTRIBUTES[self.metric], "0"))
        return bool(COMPARISONS[self.comparison](value, self.threshold))


@dataclass(frozen=True)
class ScalingEvent:
    at: float
    what: str


@dataclass
class ScalerState:
    events: list[ScalingEvent] = field(default_factory=list)
    workers_started: int = 0
    desired_capacity: int = 0

    def record(self, what: str) -> None:
        self.events.append(ScalingEvent(time.time(), what))
        log.info(what, extra={"scaling_event": True})


WorkerFactory = Callable[[str], "subprocess.Popen[bytes]"]


@dataclass(frozen=True)
class GroupView:
    desired: int
    instances: list[str]  # in service or pending
    suspended: frozenset[str]  # suspended scaling processes


class LocalScaler:
    def __init__(
        self,
        autoscaling: AutoScalingClient,
        sqs: SQSClient,
        asg_name: str,
        alarm: QueueDepthAlarm | None,
        start_worker: WorkerFactory,
        *,
        interval_seconds: float = 1.0,
        stop_grace_seconds: float = 30.0,
        restart_policy: RestartPolicy | None = None,
        on_failure: WorkerFactory | None = None,
    ) -> None:
        """``restart_policy`` None: a failed worker is always started again;
        ``on_failure(instance_id)`` starts the unit's OnFailure= program."""
        self._autoscaling = autoscaling
        self._sqs = sqs
        self._asg_name = asg_name
        self._alarm = alarm
        self._start_worker = start_worker
        self._interval = interval_seconds
        self._stop_grace = stop_grace_seconds
        self.state = ScalerState()
        self._worker: subprocess.Popen[bytes] | None = None
        self._worker_instance: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-scaler")
        self._restart_policy = restart_policy
        self._on_failure = on_failure
        self._starts: dict[str, list[float]] = {}  # instance -> its worker's start times
        self._failed_units: set[str] = set()  # instances whose worker unit failed for good
        self._on_failure_runs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def worker_pid(self) -> int | None:
        """The running worker process's id (a test may kill it as a crash would)."""
        worker = self._worker
        return worker.pid if worker is not None and worker.poll() is None else None

    @property
    def worker_running(self) -> bool:
        return self._worker is not None and self._worker.poll() is None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        self._stop_worker("local mode is stopping")
        for run in self._on_failure_runs.values():
            if run.poll() is None:
                run.kill()
                run.wait()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("scaler step failed; retrying")
            self._stop.wait(self._interval)

    def _group(self) -> GroupView:
        groups = self._autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[self._asg_name]
        )["AutoScalingGroups"]
        if not groups:
            raise RuntimeError(f"Auto Scaling Group {self._asg_name!r} does not exist")
        group = groups[0]
        instances = [
            i["InstanceId"]
            for i in group.get("Instances", [])
            if i.get("LifecycleState") in ("InService", "Pending")
        ]
        suspended = frozenset(p["ProcessName"] for p in group.get("SuspendedProcesses", []))
        return GroupView(group["DesiredCapacity"], instances, suspended)

    def step(self) -> None:
        """One evaluation: alarm -> policy, capacity -> worker process."""
        group = self._group()
        desired, instances = group.desired, group.instances
        if (
            self._alarm is not None
            and ALARM_SCALING_PROCESS not in group.suspended
            and desired < self._alarm.capacity
            and self._alarm.breached(self._sqs)
        ):
            self._autoscaling.set_desired_capacity(
                AutoScalingGroupName=self._asg_name,
                DesiredCapacity=self._alarm.capacity,
                HonorCooldown=False,
            )
            self.state.record(
                f"alarm {self._alarm.metric} {self._alarm.comparison} {self._alarm.threshold:g}: "
                f"desired capacity {desired} -> {self._alarm.capacity}"
            )
            group = self._group()
            desired, instances = group.desired, group.instances
        if desired != self.state.desired_capacity:
            self.state.record(f"ASG desired capacity {self.state.desired_capacity} -> {desired}")
            self.state.desired_capacity = desired

        if self._worker is not None and self._worker.poll() is not None:
            code = self._worker.returncode
            exited_on = self._worker_instance
            self.state.record(f"worker on {exited_on} exited with code {code}")
            self._worker = None
            self._worker_instance = None
            if code != 0 and exited_on is not None:
                self._after_failure(exited_on, code)
        self._note_on_failure_exits()

        workable = [instance for instance in instances if instance not in self._failed_units]
        if self._worker is None and desired > 0 and workable:
            self._worker_instance = workable[0]
            self._worker = self._start_worker(workable[0])
            self._starts.setdefault(workable[0], []).append(time.monotonic())
            self.state.workers_started += 1
            self.state.record(f"worker started on instance {workable[0]} (pid {self._worker.pid})")
        elif self._worker is not None and self._worker_instance not in instances:
            # The instance left the group (the worker terminated it): the machine is gone.
            self._stop_worker(f"instance {self._worker_instance} left the group")

    def _after_failure(self, instance: str, code: int) -> None:
        """systemd's part: restart (on the next step), or the unit failed and OnFailure= runs."""
        policy = self._restart_policy
        starts = self._starts.get(instance, [])
        if policy is None or not policy.failed_for_good(code, starts, time.monotonic()):
            return
        self._failed_units.add(instance)
        self.state.record(
            f"worker unit on {instance} failed for good (exit code {code}, {len(starts)} starts)"
        )
        if self._on_failure is not None:
            run = self._on_failure(instance)
            self._on_failure_runs[instance] = run
            self.state.record(f"OnFailure= started on {instance}: {', '.join(policy.on_failure)}")

    def _note_on_failure_exits(self) -> None:
        for instance, run in list(self._on_failure_runs.items()):
            if run.poll() is not None:
                self.state.record(f"OnFailure= on {instance} exited with code {run.returncode}")
                del self._on_failure_runs[instance]

    def _stop_worker(self, why: str) -> None:
        worker = self._worker
        if worker is None:
            return
        if worker.poll() is None:
            deadline = time.monotonic() + self._stop_grace
            worker.terminate()
            while worker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        self.state.record(f"worker on {self._worker_instance} stopped: {why}")
        self._worker = None
        self._worker_instance = None
