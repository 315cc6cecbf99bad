"""Reading the CloudFormation template for what moto does not emulate: its alarms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from local_mode.scaler import COMPARISONS, QueueDepthAlarm

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


def _policy_capacity(policy: dict[str, Any]) -> int:
    props = policy["Properties"]
    if "StepAdjustments" in props:
        adjustments = [int(step["ScalingAdjustment"]) for step in props["StepAdjustments"]]
        return max(adjustments)
    return int(props["ScalingAdjustment"])


def scaling_alarm(template: dict[str, Any], physical_ids: dict[str, str]) -> QueueDepthAlarm:
    """The alarm on a queue's depth whose action is an Auto Scaling policy.

    ``physical_ids`` maps logical ids to what the stack created (for a queue: its URL).
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
        if not policies or props.get("Namespace") != "AWS/SQS":
            continue
        (queue_dimension,) = [d for d in props["Dimensions"] if d["Name"] == "QueueName"]
        queue = referenced_id(queue_dimension["Value"])
        if queue is None or queue not in physical_ids:
            raise ValueError(f"the scaling alarm's queue {queue!r} is not in the stack")
        return QueueDepthAlarm(
            queue_url=physical_ids[queue],
            metric=str(props["MetricName"]),
            comparison=str(props["ComparisonOperator"]),
            threshold=float(props["Threshold"]),
            capacity=_policy_capacity(policies[0]),
        )
    raise ValueError("the template has no queue-depth alarm that triggers a scaling policy")


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
