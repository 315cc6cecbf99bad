"""A worker that cannot work gives its instance back, and says why.

systemd starts ``gpu-worker-give-back`` (``transcription-worker-give-back.service``, which
the worker's unit names in ``OnFailure=``) once the worker's unit has failed for good: a
configuration error (exit 2, which systemd does not restart) or a failure that reaches the
unit's start limit (5 starts in 10 minutes: a model that does not load). Local mode's scaler
plays systemd's part. In order:

1. log the cause, as the daemon left it in ``$STATE_DIRECTORY/fatal-exit.json``;
2. count one ``WorkerFatalExits`` for the group (the template's ``WorkerFatalExitAlarm``);
3. suspend the group's ``AlarmNotification`` process, so that the queue-depth alarm does not
   start the next instance into the same failure (the Dispatcher still starts one for a new
   upload; the operator resumes the process after the fix: docs/operations.md);
4. terminate the own instance with ``ShouldDecrementDesiredCapacity``: the group returns to 0.

No message is touched: a worker that failed before it polled holds none, and the message of
one that died mid-job comes back when its visibility timeout runs out. Only the group and the
instance are read from the environment, so a broken worker configuration (the usual cause)
does not stop this.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.config import Config

from gpu_worker.lifecycle.imds import ImdsClient
from pipeline_core.config import ENV_ASG_NAME, ENV_IMDS_ENDPOINT, ENV_INSTANCE_ID, Env
from pipeline_core.contracts import utc_timestamp
from pipeline_core.jsonlog import configure_logging

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_cloudwatch import CloudWatchClient

logger = logging.getLogger(__name__)

# The metric the template's WorkerFatalExitAlarm watches (tests hold the two equal).
FATAL_EXIT_NAMESPACE: Final = "TranscriptionPipeline"
FATAL_EXIT_METRIC: Final = "WorkerFatalExits"
FATAL_EXIT_DIMENSION: Final = "AutoScalingGroupName"
# The scaling process through which the queue-depth alarm raises the group.
ALARM_SCALING_PROCESS: Final = "AlarmNotification"
# systemd's StateDirectory= (shared by the worker's unit and this one) names it here.
ENV_STATE_DIRECTORY: Final = "STATE_DIRECTORY"
FATAL_EXIT_FILE: Final = "fatal-exit.json"
EXIT_GIVEN_BACK: Final = 0
EXIT_NOT_GIVEN_BACK: Final = 1


def _fatal_exit_path(environ: Mapping[str, str]) -> Path | None:
    directory = environ.get(ENV_STATE_DIRECTORY, "").split(":")[0]
    return Path(directory) / FATAL_EXIT_FILE if directory else None


def record_fatal_exit(exit_code: int, cause: str, environ: Mapping[str, str] | None = None) -> None:
    """Leave the cause of the daemon's exit for the give-back (no state directory: nothing)."""
    path = _fatal_exit_path(os.environ if environ is None else environ)
    if path is None:
        return
    record = {"exit_code": exit_code, "cause": cause, "at": utc_timestamp()}
    try:
        path.write_text(json.dumps(record), encoding="utf-8")
    except OSError:
        logger.warning("could not record the cause of the exit", exc_info=True)


def clear_fatal_exit(environ: Mapping[str, str] | None = None) -> None:
    """A worker that starts forgets an earlier run's cause."""
    path = _fatal_exit_path(os.environ if environ is None else environ)
    if path is not None:
        path.unlink(missing_ok=True)


def read_fatal_exit(environ: Mapping[str, str]) -> dict[str, Any]:
    path = _fatal_exit_path(environ)
    if path is None or not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class Instance:
    asg_name: str
    instance_id: str


def own_instance(environ: Mapping[str, str]) -> Instance | None:
    """The group and instance to give back; None where the worker runs outside a group."""
    env = Env(environ)
    asg_name = env.optional(ENV_ASG_NAME)
    if asg_name is None:
        return None
    instance_id = env.optional(ENV_INSTANCE_ID)
    if instance_id is None:
        endpoint = env.required(ENV_IMDS_ENDPOINT)
        instance_id = ImdsClient(endpoint).instance_id()
    return Instance(asg_name, instance_id)


def give_back(
    autoscaling: AutoScalingClient, cloudwatch: CloudWatchClient, instance: Instance
) -> None:
    """Steps 2-4: count the failure, stop alarm-driven relaunches, leave with a decrement."""
    try:
        cloudwatch.put_metric_data(
            Namespace=FATAL_EXIT_NAMESPACE,
            MetricData=[
                {
                    "MetricName": FATAL_EXIT_METRIC,
                    "Dimensions": [{"Name": FATAL_EXIT_DIMENSION, "Value": instance.asg_name}],
                    "Value": 1.0,
                    "Unit": "Count",
                }
            ],
        )
    except Exception:  # the instance must go all the same; the log says what failed
        logger.exception("could not count the fatal exit in CloudWatch")
    try:
        autoscaling.suspend_processes(
            AutoScalingGroupName=instance.asg_name, ScalingProcesses=[ALARM_SCALING_PROCESS]
        )
    except Exception:
        logger.exception("could not suspend the group's alarm-driven scaling")
    autoscaling.terminate_instance_in_auto_scaling_group(
        InstanceId=instance.instance_id, ShouldDecrementDesiredCapacity=True
    )


def main(environ: Mapping[str, str] | None = None) -> int:
    """Entry point of ``gpu-worker-give-back``."""
    values = os.environ if environ is None else environ
    configure_logging("INFO", service="gpu-worker-give-back")
    fatal = read_fatal_exit(values)
    # systemd (250 and newer) tells an OnFailure= unit how the failed unit ended.
    monitor = {
        key.lower(): value
        for key, value in values.items()
        if key in ("MONITOR_UNIT", "MONITOR_SERVICE_RESULT", "MONITOR_EXIT_STATUS")
    }
    cause = fatal.get("cause") or "unknown: read the worker's log lines before this one"
    try:
        instance = own_instance(values)
    except Exception:
        logger.exception("the worker cannot work, and its instance is unknown: %s", cause)
        return EXIT_NOT_GIVEN_BACK
    if instance is None:
        logger.error("the worker cannot work (no Auto Scaling group to leave): %s", cause)
        return EXIT_GIVEN_BACK
    logger.error(
        "the worker cannot work; giving its instance back: %s",
        cause,
        extra={
            "cause": cause,
            "exit_code": fatal.get("exit_code"),
            "asg_name": instance.asg_name,
            "instance_id": instance.instance_id,
            **monitor,
        },
    )
    config = Config(retries={"mode": "standard", "max_attempts": 8})
    try:
        give_back(
            boto3.client("autoscaling", config=config),
            boto3.client("cloudwatch", config=config),
            instance,
        )
    except Exception:
        logger.exception("could not give the instance back")
        return EXIT_NOT_GIVEN_BACK
    logger.warning(
        "gave the instance back: the group shrank by it, and its alarm-driven scaling is "
        "suspended until the cause is fixed",
        extra={"asg_name": instance.asg_name, "instance_id": instance.instance_id},
    )
    return EXIT_GIVEN_BACK
