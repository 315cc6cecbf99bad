"""The reconciler: uploads whose dispatch failed are dispatched again.

Run on a schedule (``app.py``, every 15 minutes) and by hand. Two sources, both through the
Dispatcher's own ``dispatch_object``, so a second dispatch of the same object version is a
no-op decided by the job table:
- the Dispatcher DLQ: Lambda's record of each S3 event whose invocation failed all its
  retries; a record is deleted once every object of its event is dispatched, and left for the
  next run otherwise (an outage that still lasts);
- ``audio-input/``: the latest version of each object older than the grace period whose
  dispatch did not finish (``pipeline_core.reconcile.needs_dispatch``), for events whose
  record never reached the destination.
Each run ends with one log line that says what it did.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib.dispatch.dispatcher import (
    Dispatched,
    DispatcherClients,
    DispatchOutcome,
    dispatch_object,
)
from chalicelib.dispatch.s3_events import CreatedObject, created_objects
from pipeline_core.config import ReconcilerSettings
from pipeline_core.jobs import JobTable
from pipeline_core.jsonlog import log_context
from pipeline_core.reconcile import (
    InvocationFailure,
    InvocationRecordError,
    needs_dispatch,
    unfinished_uploads,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    """What one run did: outcomes by source, and what is left for the next run."""

    records_read: int = 0
    records_done: int = 0
    records_left: int = 0  # a dispatch failed again, or the record cannot be read
    uploads_found: int = 0  # unfinished uploads in audio-input/ past the grace period
    outcomes: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def count(self, dispatched: Dispatched) -> None:
        self.outcomes[dispatched.outcome.value] = self.outcomes.get(dispatched.outcome.value, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "records_read": self.records_read,
            "records_done": self.records_done,
            "records_left": self.records_left,
            "uploads_found": self.uploads_found,
            "outcomes": dict(self.outcomes),
            "failures": list(self.failures),
        }


def reconcile(
    clients: DispatcherClients, settings: ReconcilerSettings, now: datetime | None = None
) -> ReconcileReport:
    report = ReconcileReport()
    _drain_failure_records(clients, settings, report)
    moment = now or datetime.now(UTC)
    uploaded_before = moment - timedelta(seconds=settings.grace_seconds)
    table = JobTable(clients.dynamodb, settings.dispatcher.job_table)
    for upload in unfinished_uploads(
        clients.s3, table, settings.dispatcher.bucket, uploaded_before=uploaded_before
    ):
        report.uploads_found += 1
        with log_context(s3_key=upload.key):
            log.warning(
                "upload without a finished dispatch; dispatching it again",
                extra={"version_id": upload.version_id, "uploaded_at": str(upload.last_modified)},
            )
        _dispatch_all(created_objects(upload.s3_event()), clients, settings, report)
    level = logging.WARNING if report.records_left or report.failures else logging.INFO
    log.log(level, "reconciler run finished", extra=report.as_dict())
    return report


def _drain_failure_records(
    clients: DispatcherClients, settings: ReconcilerSettings, report: ReconcileReport
) -> None:
    url = settings.dispatcher_dlq_url
    while report.records_read < settings.max_records:
        messages = clients.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            return
        for message in messages:
            report.records_read += 1
            if _handle_record(message, clients, settings, report):
                clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                report.records_done += 1
            else:
                report.records_left += 1


def _handle_record(
    message: MessageTypeDef,
    clients: DispatcherClients,
    settings: ReconcilerSettings,
    report: ReconcileReport,
) -> bool:
    """Dispatch the objects of one record; True when all of them are dispatched."""
    try:
        record = InvocationFailure.from_json(message.get("Body", ""))
    except InvocationRecordError as exc:
        log.error(
            "a Dispatcher DLQ message is not an invocation record; left on the queue",
            extra={"message_id": message.get("MessageId"), "reason": str(exc)},
        )
        report.failures.append(f"message {message.get('MessageId')}: {exc}")
        return False
    objects = list(created_objects(record.payload))
    for obj in objects:
        with log_context(s3_key=obj.key):
            log.warning(
                "the Dispatcher failed this upload; dispatching it again",
                extra={
                    "request_id": record.request_id,
                    "condition": record.condition,
                    "invoke_count": record.invoke_count,
                    "error": record.error,
                },
            )
    return _dispatch_all(objects, clients, settings, report)


def _dispatch_all(
    objects: Iterable[CreatedObject],
    clients: DispatcherClients,
    settings: ReconcilerSettings,
    report: ReconcileReport,
) -> bool:
    done = True
    for obj in objects:
        with log_context(s3_key=obj.key):
            try:
                dispatched = dispatch_object(obj, clients, settings.dispatcher)
            except Exception as exc:
                log.exception("dispatching again failed; the next run tries again")
                report.failures.append(f"{obj.key}: {type(exc).__name__}: {exc}")
                done = False
                continue
            report.count(dispatched)
            log.info(
                "dispatched again",
                extra={"outcome": dispatched.outcome.value, "job_id": dispatched.job_id},
            )
            if dispatched.outcome is DispatchOutcome.DUPLICATE and _still_unfinished(
                dispatched, clients, settings
            ):
                # Another delivery holds the job's lease (Lambda's own retry, just now): its
                # claim lapses after the Dispatcher's timeout; the next run checks again.
                log.warning("another dispatch of it is under way; the next run checks again")
                report.failures.append(f"{obj.key}: another dispatch under way")
                done = False
    return done


def _still_unfinished(
    dispatched: Dispatched, clients: DispatcherClients, settings: ReconcilerSettings
) -> bool:
    if dispatched.job_id is None:
        return False
    table = JobTable(clients.dynamodb, settings.dispatcher.job_table)
    return needs_dispatch(table.get(dispatched.job_id))
