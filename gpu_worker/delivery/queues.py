"""The worker's Audio Queue calls: one message at a time (sends go through ``send_to_queue``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


@dataclass(frozen=True)
class Received:
    """One delivery of an Audio Queue message (a redelivery has a new receipt handle)."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


@dataclass(frozen=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int

    @property
    def nothing_waiting(self) -> bool:
        """No message a worker could take now or soon (in flight: other workers' jobs)."""
        return self.visible == 0 and self.delayed == 0


class AudioQueue:
    def __init__(
        self, sqs: SQSClient, url: str, wait_seconds: int, visibility_seconds: int
    ) -> None:
        self.sqs = sqs
        self.url = url
        self.wait_seconds = wait_seconds
        self.visibility_seconds = visibility_seconds

    def receive_one(self) -> Received | None:
        """Long-poll for one message; None when the wait ends with nothing."""
        response = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=self.visibility_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return None
        message = messages[0]
        return Received(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            body=message.get("Body", ""),
            receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
        )

    def delete(self, message: Received) -> None:
        self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message.receipt_handle)

    def set_visibility(self, message: Received, seconds: int) -> None:
        self.sqs.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=message.receipt_handle, VisibilityTimeout=seconds
        )

    def depth(self) -> QueueDepth:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return QueueDepth(
            visible=int(attributes.get("ApproximateNumberOfMessages", "0")),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0")),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", "0")),
        )
