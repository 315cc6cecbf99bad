"""The local scaler reads the scale-out rule from the real template's alarm and policy."""

from __future__ import annotations

import boto3

from cloudformation.stack import create_stack, emulator_parameters, load_template, physical_ids
from local_mode.template import scaling_alarm


def test_scaling_alarm_comes_from_the_template(aws: None) -> None:
    cfn = boto3.client("cloudformation")
    outputs = create_stack(cfn, emulator_parameters(cfn, boto3.client("ec2")), stack_name="t")
    alarm = scaling_alarm(load_template(), physical_ids(cfn, "t"))
    assert alarm.queue_url == outputs["AudioQueueUrl"]
    assert alarm.metric == "ApproximateNumberOfMessagesVisible"
    assert alarm.comparison == "GreaterThanOrEqualToThreshold"
    assert alarm.threshold == 1
    assert alarm.capacity == 1
    sqs = boto3.client("sqs")
    assert not alarm.breached(sqs)
    sqs.send_message(QueueUrl=alarm.queue_url, MessageBody="{}")
    assert alarm.breached(sqs)
