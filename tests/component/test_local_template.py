"""The local scaler reads the scale-out rule from the real template's alarm and policy."""

from __future__ import annotations

import boto3

from cloudformation.emulated import create_emulated_stack
from cloudformation.stack import load_template
from local_mode.template import scaling_alarm


def test_scaling_alarm_comes_from_the_template(aws: None) -> None:
    stack = create_emulated_stack()
    alarm = scaling_alarm(load_template(), stack.ids)
    assert alarm.queue_url == stack.audio_queue_url
    assert alarm.metric == "ApproximateNumberOfMessagesVisible"
    assert alarm.comparison == "GreaterThanOrEqualToThreshold"
    assert alarm.threshold == 1
    assert alarm.capacity == 1
    sqs = boto3.client("sqs")
    assert not alarm.breached(sqs)
    sqs.send_message(QueueUrl=alarm.queue_url, MessageBody="{}")
    assert alarm.breached(sqs)
