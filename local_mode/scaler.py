"""The Auto Scaling Group, honoured locally: the queue-depth alarm raises it, a worker
process stands in for the instance, and the worker's own scale-in brings it back to 0.

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
    ) -> None:
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

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("scaler step failed; retrying")
            self._stop.wait(self._interval)

    def _group(self) -> tuple[int, list[str]]:
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
        return group["DesiredCapacity"], instances

    def step(self) -> None:
        """One evaluation: alarm -> policy, capacity -> worker process."""
        desired, instances = self._group()
        if (
            self._alarm is not None
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
            desired, instances = self._group()
        if desired != self.state.desired_capacity:
            self.state.record(f"ASG desired capacity {self.state.desired_capacity} -> {desired}")
            self.state.desired_capacity = desired

        if self._worker is not None and self._worker.poll() is not None:
            code = self._worker.returncode
            self.state.record(f"worker on {self._worker_instance} exited with code {code}")
            self._worker = None
            self._worker_instance = None

        if self._worker is None and desired > 0 and instances:
            self._worker_instance = instances[0]
            self._worker = self._start_worker(instances[0])
            self.state.workers_started += 1
            self.state.record(f"worker started on instance {instances[0]} (pid {self._worker.pid})")
        elif self._worker is not None and self._worker_instance not in instances:
            # The instance left the group (the worker terminated it): the machine is gone.
            self._stop_worker(f"instance {self._worker_instance} left the group")

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
