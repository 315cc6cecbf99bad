"""Sending a ``Result`` to the Results Queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline_core.contracts import Result

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


def send_result(sqs: SQSClient, queue_url: str, result: Result) -> str:
    """Send ``result``; returns the SQS message id."""
    response = sqs.send_message(QueueUrl=queue_url, MessageBody=result.to_json())
    return response["MessageId"]
