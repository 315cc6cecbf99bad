"""Reading the CloudFormation template for what moto does not emulate: its alarms and
scaling policy."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from local_mode.scaler import COMPARISONS, BacklogAlarm, StepAdjustment

# The stack parameter that sets the scale-out alarm's backlog per worker.
TARGET_BACKLOG_PARAMETER: Final = "TargetBacklogPerWorker"

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient


def referenced_id(value: Any) -> str | None:
    """Logical id named by ``!Ref X`` or ``!GetAtt X.Attr``."""
    if isinstance(value, dict):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            return str(value["Fn::GetAtt"][0])
    return None


def parameter_value(template: dict[str, Any], parameters: Mapping[str, str], name: str) -> str:
    """A stack parameter's value: the one the stack was created with, else the default."""
    if name in parameters:
        return parameters[name]
    return str(template["Parameters"][name]["Default"])


def _steps(policy: dict[str, Any]) -> tuple[StepAdjustment, ...]:
    props = policy["Properties"]
    if props.get("PolicyType") != "StepScaling" or props.get("AdjustmentType") != (
        "ChangeInCapacity"
    ):
        raise ValueError("the scaling policy is not the ChangeInCapacity step scaling emulated")

    def bound(step: dict[str, Any], key: str) -> float | None:
        return float(step[key]) if key in step else None

    return tuple(
        StepAdjustment(
            bound(step, "MetricIntervalLowerBound"),
            bound(step, "MetricIntervalUpperBound"),
            int(step["ScalingAdjustment"]),
        )
        for step in props["StepAdjustments"]
    )


def _metric_stat_queue(metrics: list[dict[str, Any]], metric_name: str) -> str | None:
    for metric in metrics:
        stat = metric.get("MetricStat", {}).get("Metric", {})
        if stat.get("Namespace") == "AWS/SQS" and stat.get("MetricName") == metric_name:
            (queue,) = [d["Value"] for d in stat["Dimensions"] if d["Name"] == "QueueName"]
            return referenced_id(queue)
    return None


def scaling_alarm(
    template: dict[str, Any], physical_ids: dict[str, str], parameters: Mapping[str, str]
) -> BacklogAlarm:
    """The backlog alarm whose action is an Auto Scaling policy, with the stack's
    ``TargetBacklogPerWorker``.

    ``physical_ids`` maps logical ids to what the stack created (for a queue: its URL);
    ``parameters`` are those the stack was created with (the rest take their defaults).
    """
    resources: dict[str, Any] = template["Resources"]
    for alarm in resources.values():
        if alarm.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        props = alarm["Properties"]
        actions = [referenced_id(action) for action in props.get("AlarmActions", [])]
        policies = [
            resources[name]
            for name in actions
            if name and resources.get(name, {}).get("Type") == "AWS::AutoScaling::ScalingPolicy"
        ]
        if not policies:
            continue
        metrics: list[dict[str, Any]] = props.get("Metrics", [])
        queue = _metric_stat_queue(metrics, "ApproximateNumberOfMessagesVisible")
        if queue is None or queue not in physical_ids:
            raise ValueError(f"the scaling alarm's queue {queue!r} is not in the stack")
        return BacklogAlarm(
            queue_url=physical_ids[queue],
            target_backlog_per_worker=int(
                parameter_value(template, parameters, TARGET_BACKLOG_PARAMETER)
            ),
            comparison=str(props["ComparisonOperator"]),
            threshold=float(props["Threshold"]),
            steps=_steps(policies[0]),
        )
    raise ValueError("the template has no alarm that triggers a scaling policy")


def alarm_condition_met(
    template: dict[str, Any],
    logical_id: str,
    physical_ids: dict[str, str],
    cloudwatch: CloudWatchClient,
) -> bool:
    """Whether the template's metric alarm ``logical_id`` would be in ALARM now, from the
    datapoints in (emulated) CloudWatch: a statistic of its last ``EvaluationPeriods`` that
    meets its threshold. Dimension values name stack resources (``!Ref X``) or are literal.
    """
    props = template["Resources"][logical_id]["Properties"]
    dimensions = []
    for dimension in props.get("Dimensions", []):
        named = referenced_id(dimension["Value"])
        value = physical_ids[named] if named is not None else str(dimension["Value"])
        dimensions.append({"Name": str(dimension["Name"]), "Value": value})
    period = int(props["Period"])
    statistic = str(props["Statistic"])
    now = datetime.now(UTC)
    end = now + timedelta(seconds=period)  # the period in progress counts too
    datapoints = cloudwatch.get_metric_statistics(
        Namespace=str(props["Namespace"]),
        MetricName=str(props["MetricName"]),
        Dimensions=dimensions,  # type: ignore[arg-type]
        StartTime=now - timedelta(seconds=period * int(props["EvaluationPeriods"])),
        EndTime=end,
        Period=period,
        Statistics=[statistic],  # type: ignore[list-item]
    )["Datapoints"]
    compare = COMPARISONS[str(props["ComparisonOperator"])]
    threshold = float(props["Threshold"])
    return any(compare(float(point[statistic]), threshold) for point in datapoints)  # type: ignore[literal-required]
