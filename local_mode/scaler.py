"""The Auto Scaling Group, honoured locally: the backlog alarm raises it, a worker process
stands in for each instance, and each worker's own scale-in brings it back to 0.

The scaler also plays systemd on the instance (``local_mode.systemd_unit``): a worker that
exits with a failure is started again, until its unit fails for good (a configuration
error, or the start limit); then the unit's ``OnFailure=`` program runs (it gives the
instance back), and that instance gets no worker again. A suspended ``AlarmNotification``
process keeps the alarm from raising the group, as in AWS.

moto's CloudFormation silently skips ``AWS::CloudWatch::Alarm`` and
``AWS::AutoScaling::ScalingPolicy``; this module evaluates the template's alarm rule against
the emulated queue and group and applies its policy, and it starts the worker daemon as a
separate process for each instance of the emulated ASG that has none.
"""

from __future__ import annotations

import logging
import math
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


def workers_for_backlog(backlog: int, target_backlog_per_worker: int) -> int:
    """The GPU workers the Audio Queue's backlog (messages visible and in flight) needs:
    CEIL(backlog / target), the template's ScaleOutAlarm expression (a test holds the two
    equal). The group's MaxSize (``MaxWorkers``) caps what is asked for."""
    return math.ceil(backlog / target_backlog_per_worker)


@dataclass(frozen=True)
class StepAdjustment:
    """One step of a step scaling policy: bounds relative to the alarm's threshold."""

    lower: float | None
    upper: float | None
    adjustment: int

    def holds(self, above_threshold: float) -> bool:
        return (self.lower is None or above_threshold >= self.lower) and (
            self.upper is None or above_threshold < self.upper
        )


@dataclass(frozen=True)
class Backlog:
    visible: int
    in_flight: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight


@dataclass(frozen=True)
class BacklogAlarm:
    """The template's scale-out alarm (workers the backlog needs beyond the group's desired
    capacity) and its step scaling policy (ChangeInCapacity: it only ever adds)."""

    queue_url: str
    target_backlog_per_worker: int
    comparison: str
    threshold: float
    steps: tuple[StepAdjustment, ...]

    def backlog(self, sqs: SQSClient) -> Backlog:
        response = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["All"])
        attributes: dict[str, str] = {str(k): v for k, v in response["Attributes"].items()}
        return Backlog(
            visible=int(attributes.get(METRIC_ATTRIBUTES["ApproximateNumberOfMessagesVisible"], 0)),
            in_flight=int(
                attributes.get(METRIC_ATTRIBUTES["ApproximateNumberOfMessagesNotVisible"], 0)
            ),
        )

    def shortfall(self, backlog: Backlog, desired: int) -> int:
        """The alarm's metric: workers the backlog needs that the group does not ask for."""
        return workers_for_backlog(backlog.total, self.target_backlog_per_worker) - desired

    def adjustment(self, backlog: Backlog, desired: int) -> int:
        """What the policy adds to the desired capacity now (0: the alarm is not in ALARM)."""
        shortfall = self.shortfall(backlog, desired)
        if not COMPARISONS[self.comparison](shortfall, self.threshold):
            return 0
        above = shortfall - self.threshold
        return next((step.adjustment for step in self.steps if step.holds(above)), 0)


@dataclass(frozen=True)
class ScalingEvent:
    at: float
    what: str


@dataclass(frozen=True)
class ScalingSample:
    """The group at one evaluation: what the scaling timeline plots."""

    at: float
    backlog: int
    desired: int
    workers: int


@dataclass
class ScalerState:
    events: list[ScalingEvent] = field(default_factory=list)
    samples: list[ScalingSample] = field(default_factory=list)
    workers_started: int = 0
    desired_capacity: int = 0
    most_workers_at_once: int = 0

    def record(self, what: str) -> None:
        self.events.append(ScalingEvent(time.time(), what))
        log.info(what, extra={"scaling_event": True})


WorkerFactory = Callable[[str], "subprocess.Popen[bytes]"]


@dataclass(frozen=True)
class GroupView:
    desired: int
    max_size: int
    instances: list[str]  # in service or pending
    suspended: frozenset[str]  # suspended scaling processes


class LocalScaler:
    """One worker process per in-service instance of the group, up to its MaxSize."""

    def __init__(
        self,
        autoscaling: AutoScalingClient,
        sqs: SQSClient,
        asg_name: str,
        alarm: BacklogAlarm | None,
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
        self._workers: dict[str, subprocess.Popen[bytes]] = {}  # instance -> its worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-scaler")
        self._restart_policy = restart_policy
        self._on_failure = on_failure
        self._starts: dict[str, list[float]] = {}  # instance -> its worker's start times
        self._failed_units: set[str] = set()  # instances whose worker unit failed for good
        self._on_failure_runs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def worker_pids(self) -> dict[str, int]:
        """Instance -> its running worker process's id (a test may kill one as a crash would)."""
        return {
            instance: worker.pid
            for instance, worker in list(self._workers.items())
            if worker.poll() is None
        }

    @property
    def worker_pid(self) -> int | None:
        """A running worker process's id (the first instance's)."""
        return next(iter(self.worker_pids.values()), None)

    @property
    def worker_running(self) -> bool:
        return bool(self.worker_pids)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        for instance in list(self._workers):
            self._stop_worker(instance, "local mode is stopping")
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
        return GroupView(group["DesiredCapacity"], group["MaxSize"], instances, suspended)

    def step(self) -> None:
        """One evaluation: alarm -> policy, each instance -> its worker process."""
        group = self._group()
        backlog = self._alarm.backlog(self._sqs) if self._alarm is not None else None
        if (
            self._alarm is not None
            and backlog is not None
            and ALARM_SCALING_PROCESS not in group.suspended
        ):
            added = self._alarm.adjustment(backlog, group.desired)
            wanted = min(group.desired + added, group.max_size)
            if wanted > group.desired:
                self._autoscaling.set_desired_capacity(
                    AutoScalingGroupName=self._asg_name,
                    DesiredCapacity=wanted,
                    HonorCooldown=False,
                )
                self.state.record(
                    f"alarm: backlog {backlog.total} needs "
                    f"{workers_for_backlog(backlog.total, self._alarm.target_backlog_per_worker)}"
                    f" workers: desired capacity {group.desired} -> {wanted}"
                )
                group = self._group()
        desired, instances = group.desired, group.instances
        if desired != self.state.desired_capacity:
            self.state.record(f"ASG desired capacity {self.state.desired_capacity} -> {desired}")
            self.state.desired_capacity = desired

        for instance, worker in list(self._workers.items()):
            if worker.poll() is None:
                continue
            code = worker.returncode
            self.state.record(f"worker on {instance} exited with code {code}")
            del self._workers[instance]
            if code != 0:
                self._after_failure(instance, code)
        self._note_on_failure_exits()

        for instance in list(self._workers):
            if instance not in instances:
                # The instance left the group (the worker terminated it): the machine is gone.
                self._stop_worker(instance, f"instance {instance} left the group")
        # moto may hold more instances than desired (two raises at once each launch one);
        # AWS would terminate the extra, so they get no worker here.
        occupied = sum(1 for i in instances if i in self._workers or i in self._failed_units)
        for instance in instances:
            if instance in self._workers or instance in self._failed_units:
                continue
            if occupied >= desired:
                break
            occupied += 1
            worker = self._start_worker(instance)
            self._workers[instance] = worker
            self._starts.setdefault(instance, []).append(time.monotonic())
            self.state.workers_started += 1
            self.state.record(f"worker started on instance {instance} (pid {worker.pid})")
        running = len(self._workers)
        self.state.most_workers_at_once = max(self.state.most_workers_at_once, running)
        self.state.samples.append(
            ScalingSample(time.time(), backlog.total if backlog else 0, desired, running)
        )

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

    def _stop_worker(self, instance: str, why: str) -> None:
        worker = self._workers.pop(instance, None)
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
        self.state.record(f"worker on {instance} stopped: {why}")
