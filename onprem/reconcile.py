"""``onprem status --reconcile``: recordings in ``audio-input/`` whose dispatch did not finish.

The on-prem side sees what it uploaded and what the job table says about it. An upload past
the grace period without a finished dispatch (``pipeline_core.reconcile.needs_dispatch``:
the S3 event's Dispatcher invocation failed and its record was lost, or nobody has acted on it
yet) is handed to the pipeline's reconciler: a record asking for it goes to the Dispatcher
DLQ, and the reconciler (every 15 minutes) dispatches it through the Dispatcher's own code,
once, whatever else delivers the same upload. The on-prem user needs no dispatch rights.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline_core.jobs import JobTable
from pipeline_core.jsonlog import log_context
from pipeline_core.reconcile import reconcile_request, unfinished_uploads

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

REQUESTER: Final = "onprem status --reconcile"


@dataclass(frozen=True)
class HandedOver:
    s3_key: str
    version_id: str | None
    uploaded_at: str
    job_id: str

    def to_dict(self) -> dict[str, str | None]:
        return {
            "s3_key": self.s3_key,
            "version_id": self.version_id,
            "uploaded_at": self.uploaded_at,
            "job_id": self.job_id,
        }


def hand_over_unfinished(
    s3: S3Client,
    sqs: SQSClient,
    table: JobTable,
    *,
    bucket: str,
    dispatcher_dlq_url: str,
    grace: timedelta,
    now: datetime | None = None,
) -> list[HandedOver]:
    """Find the unfinished uploads older than ``grace`` and ask the reconciler for each."""
    uploaded_before = (now or datetime.now(UTC)) - grace
    handed: list[HandedOver] = []
    for upload in unfinished_uploads(s3, table, bucket, uploaded_before=uploaded_before):
        uploaded_at = upload.last_modified.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        reason = f"no finished dispatch since the upload at {uploaded_at}"
        record = reconcile_request(
            upload, requester=REQUESTER, request_id=str(uuid.uuid4()), reason=reason
        )
        sqs.send_message(QueueUrl=dispatcher_dlq_url, MessageBody=json.dumps(record))
        with log_context(s3_key=upload.key, job_id=upload.job_id):
            log.warning("upload without a finished dispatch handed to the reconciler")
        handed.append(HandedOver(upload.key, upload.version_id, uploaded_at, upload.job_id))
    return handed


def to_json(handed: Sequence[HandedOver]) -> str:
    return json.dumps([item.to_dict() for item in handed], ensure_ascii=False, indent=2)


def render(handed: Sequence[HandedOver], console: Console) -> None:
    if not handed:
        console.print("every upload past the grace period has its job", highlight=False)
        return
    table = Table(title=f"{len(handed)} upload(s) handed to the reconciler (runs every 15 min)")
    for column in ("uploaded (UTC)", "key", "version", "job id"):
        table.add_column(column, no_wrap=column != "key")
    for item in handed:
        table.add_row(
            Text(item.uploaded_at.replace("T", " ").removesuffix("Z")),
            Text(item.s3_key),
            Text(item.version_id or ""),
            Text(item.job_id),
        )
    console.print(table)
