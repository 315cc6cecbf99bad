"""``onprem redrive``: show what is in the dead-letter queues, and send it back on request.

SQS does not record why a message was dead-lettered, so the reason is pieced together from
what there is: whether the body still follows its contract, how often it was received, and
the error the job table holds for its job.

Moving is receive -> send to the source queue -> delete, not SQS's StartMessageMoveTask:
moto (the test double for AWS here) does not implement the move task, and the task moves a
whole queue blindly and asynchronously, whereas this shows each message, leaves malformed
ones where they are (they would only fail again) and resets the job's state so the stage
that picks the message up does not skip it as already failed. Sending before deleting means
a crash in between duplicates a message rather than losing it; duplicates are harmless
downstream (the job table's state transitions skip them).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline_core.contracts import AudioJob, ContractError, LlmJob, Result, utc_timestamp
from pipeline_core.jobs import JobField, JobState, JobTable

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueOutputTypeDef, MessageTypeDef

log = logging.getLogger(__name__)

# How long inspected messages stay hidden from other readers while we look at them.
HOLD_SECONDS: Final = 300
BODY_PREVIEW: Final = 300
_ATTRIBUTE_FIELDS: Final = ("DataType", "StringValue", "BinaryValue")


class RedriveError(RuntimeError):
    pass


Contract = type[AudioJob] | type[LlmJob] | type[Result]


@dataclass(frozen=True)
class DlqSpec:
    name: str
    dlq_url: str
    source_url: str | None
    contract: Contract
    # The state the stage reading the source queue expects; a failed job goes back to it.
    reset_to: JobState | None


def dlq_specs(
    *,
    audio_dlq: str | None,
    llm_dlq: str | None,
    results_dlq: str | None,
    audio_queue: str | None = None,
    llm_queue: str | None = None,
    results_queue: str | None = None,
) -> list[DlqSpec]:
    specs = [
        DlqSpec("audio", audio_dlq, audio_queue, AudioJob, JobState.QUEUED) if audio_dlq else None,
        DlqSpec("llm", llm_dlq, llm_queue, LlmJob, JobState.TRANSCRIBED) if llm_dlq else None,
        DlqSpec("results", results_dlq, results_queue, Result, None) if results_dlq else None,
    ]
    return [spec for spec in specs if spec is not None]


@dataclass
class DlqMessage:
    queue: str
    message_id: str
    body: str
    receive_count: int | None
    sent_at: str | None
    s3_key: str | None = None
    job_id: str | None = None
    problem: str | None = None  # the contract error, if the body does not parse
    job_state: str | None = None
    job_error: str | None = None
    moved: bool = False
    receipt_handle: str = field(default="", repr=False)
    attributes: dict[str, MessageAttributeValueOutputTypeDef] = field(
        default_factory=dict, repr=False
    )

    @property
    def reason(self) -> str:
        if self.problem:
            return f"malformed: {self.problem}"
        if self.job_error:
            return self.job_error
        count = f" after {self.receive_count} receives" if self.receive_count else ""
        state = f" (job {self.job_state})" if self.job_state else ""
        return f"not processed{count}{state}; no error recorded"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("receipt_handle")
        data.pop("attributes")
        data["reason"] = self.reason
        return data


def _describe(spec: DlqSpec, message: MessageTypeDef, jobs: JobTable | None) -> DlqMessage:
    attributes = message.get("Attributes", {})
    sent = attributes.get("SentTimestamp")
    count = attributes.get("ApproximateReceiveCount")
    item = DlqMessage(
        queue=spec.name,
        message_id=message.get("MessageId", ""),
        body=message.get("Body", ""),
        receive_count=int(count) if count else None,
        sent_at=(utc_timestamp(datetime.fromtimestamp(int(sent) / 1000, UTC)) if sent else None),
        receipt_handle=message.get("ReceiptHandle", ""),
        attributes=dict(message.get("MessageAttributes", {})),
    )
    try:
        parsed = spec.contract.from_json(item.body)
    except ContractError as exc:
        item.problem = str(exc)
        with contextlib.suppress(ValueError, AttributeError):
            item.job_id = json.loads(item.body).get("job_id")
    else:
        item.job_id = parsed.job_id
        if isinstance(parsed, AudioJob):
            item.s3_key = parsed.object_key
        elif isinstance(parsed, LlmJob):
            item.s3_key = parsed.source_key or parsed.timed_key
        else:
            item.s3_key = parsed.source_file
    if jobs is not None and isinstance(item.job_id, str) and item.job_id:
        try:
            record = jobs.get(item.job_id)
        except (ClientError, BotoCoreError) as exc:
            item.job_error = f"(job table not readable: {exc})"
        else:
            if record is not None:
                item.job_state = record.state.value
                item.job_error = record.error
                item.s3_key = item.s3_key or record.s3_key
    return item


def inspect(
    sqs: SQSClient, spec: DlqSpec, jobs: JobTable | None, limit: int = 500
) -> list[DlqMessage]:
    """Receive every message of a DLQ (up to ``limit``), holding them hidden meanwhile."""
    found: dict[str, DlqMessage] = {}
    while len(found) < limit:
        response = sqs.receive_message(
            QueueUrl=spec.dlq_url,
            MaxNumberOfMessages=min(10, limit - len(found)),
            # Long polling asks every SQS server, so an empty answer means an empty queue.
            WaitTimeSeconds=1,
            VisibilityTimeout=HOLD_SECONDS,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            break
        for message in messages:
            found.setdefault(message.get("MessageId", ""), _describe(spec, message, jobs))
    return list(found.values())


def release(sqs: SQSClient, spec: DlqSpec, items: list[DlqMessage]) -> None:
    """Make messages that were only looked at visible again at once."""
    for item in items:
        if item.moved:
            continue
        with contextlib.suppress(ClientError, BotoCoreError):
            sqs.change_message_visibility(
                QueueUrl=spec.dlq_url, ReceiptHandle=item.receipt_handle, VisibilityTimeout=0
            )


def source_queue(sqs: SQSClient, spec: DlqSpec) -> str:
    if spec.source_url:
        return spec.source_url
    urls = sqs.list_dead_letter_source_queues(QueueUrl=spec.dlq_url).get("queueUrls", [])
    if len(urls) != 1:
        raise RedriveError(
            f"the {spec.name} DLQ {spec.dlq_url} is the dead-letter queue of "
            f"{len(urls)} queues; set {spec.name}_queue_url in the config to choose one"
        )
    return urls[0]


def move(sqs: SQSClient, spec: DlqSpec, items: list[DlqMessage], jobs: JobTable | None) -> int:
    """Send each well-formed message back to its source queue; returns how many moved."""
    target = source_queue(sqs, spec)
    moved = 0
    for item in items:
        if item.problem:
            log.warning(
                "left in the %s DLQ (malformed, it would fail again): %s",
                spec.name,
                item.problem,
                extra={"message_id": item.message_id},
            )
            continue
        if spec.reset_to and jobs and item.job_id and item.job_state == JobState.FAILED.value:
            # Otherwise the stage would skip the job as already finished; and the next
            # outcome's Result is a new one to send (its record must not say it was sent).
            jobs.transition(
                item.job_id,
                spec.reset_to,
                expected=[JobState.FAILED],
                fields={JobField.REDRIVEN_AT: utc_timestamp()},
                clear=(JobField.RESULT_SENT_AT, JobField.FAILED_BY),
            )
        send: dict[str, Any] = {"QueueUrl": target, "MessageBody": item.body}
        if item.attributes:
            send["MessageAttributes"] = {
                name: {
                    k: v
                    for k, v in value.items()
                    if k in ("DataType", "StringValue", "BinaryValue")
                }
                for name, value in item.attributes.items()
            }
        sqs.send_message(**send)
        sqs.delete_message(QueueUrl=spec.dlq_url, ReceiptHandle=item.receipt_handle)
        item.moved = True
        moved += 1
        log.info(
            "moved back to %s",
            target,
            extra={"message_id": item.message_id, "s3_key": item.s3_key, "job_id": item.job_id},
        )
    return moved


def render(items: list[DlqMessage], console: Console) -> None:
    table = Table(title=f"{len(items)} dead-lettered message(s)")
    for column in ("queue", "sent (UTC)", "receives", "key", "job", "reason", "body"):
        table.add_column(column, overflow="fold")
    for item in items:
        body = item.body if len(item.body) <= BODY_PREVIEW else item.body[:BODY_PREVIEW] + "…"
        table.add_row(
            item.queue,
            Text(item.sent_at or ""),
            str(item.receive_count or ""),
            Text(item.s3_key or ""),
            Text(item.job_state or ""),
            Text(item.reason),
            Text(body),
        )
    console.print(table)
