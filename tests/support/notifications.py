"""A subscriber of the stack's notification topic: an SQS queue, as an operator would attach
one (docs/operations.md, "Notifications"), read back as Results with their attributes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline_core.contracts import Result

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from cloudformation.emulated import EmulatedStack


@dataclass(frozen=True)
class Notification:
    """One published Result as its subscriber received it."""

    result: Result
    attributes: dict[str, str]  # message attribute -> its string value
    subject: str | None  # the envelope's (non-raw delivery only)


@dataclass(frozen=True)
class QueueSubscriber:
    sqs: SQSClient
    queue_url: str
    raw: bool

    def notifications(self) -> list[Notification]:
        """Every notification now on the queue (deleted as read)."""
        received: list[Notification] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                return received
            for message in messages:
                received.append(self._read(message))
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )

    def _read(self, message: Mapping[str, Any]) -> Notification:
        if self.raw:
            # The message itself is the body; its attributes become the SQS message's.
            attributes = {
                name: value["StringValue"]
                for name, value in message.get("MessageAttributes", {}).items()
            }
            return Notification(Result.from_json(message["Body"]), attributes, None)
        envelope = json.loads(message["Body"])
        assert envelope["Type"] == "Notification"
        attributes = {
            name: value["Value"] for name, value in envelope.get("MessageAttributes", {}).items()
        }
        return Notification(
            Result.from_json(envelope["Message"]), attributes, envelope.get("Subject")
        )


def subscribe_queue(
    stack: EmulatedStack,
    name: str,
    *,
    raw: bool,
    filter_policy: Mapping[str, Any] | None = None,
) -> QueueSubscriber:
    """A new SQS queue subscribed to the stack's notification topic. (In AWS the queue also
    needs a policy that lets the topic send to it; moto does not ask for one.)"""
    sqs: SQSClient = stack.client("sqs")
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    attributes = {"RawMessageDelivery": "true" if raw else "false"}
    if filter_policy is not None:
        attributes["FilterPolicy"] = json.dumps(filter_policy)
    stack.client("sns").subscribe(
        TopicArn=stack.notification_topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes=attributes,
    )
    return QueueSubscriber(sqs, queue_url, raw)
