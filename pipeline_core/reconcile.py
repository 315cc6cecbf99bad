"""Uploads the Dispatcher did not finish, and Lambda's record of an invocation that failed.

S3 invokes the Dispatcher asynchronously. When an invocation fails all its attempts, Lambda
sends an *invocation record* to the function's on-failure destination (the stack's
Dispatcher DLQ): ``requestContext`` (request id, function ARN, ``condition``:
``RetriesExhausted`` or ``EventAgeExceeded``, ``approximateInvokeCount``), ``requestPayload``
(the S3 event), ``responseContext`` and ``responsePayload`` (the error). The reconciler
dispatches the payload's objects again; the local mode writes these records as Lambda does.

An upload is *unfinished* when its latest version has no job row, or a row the Dispatcher
began but did not finish (queued without its Audio Queue message, refused without its
failure Result): the reconciler lists those in ``audio-input/`` as a backstop for records
that never reached the destination. Dispatching one again is harmless: the job table keys
the job on (bucket, key, version), so the same version is never two jobs.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from pipeline_core.jobs import JobField, JobRecord, JobState, JobTable, job_id_for
from pipeline_core.keys import AUDIO_PREFIX, encode_event_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

RECORD_VERSION: Final = "1.0"
RETRIES_EXHAUSTED: Final = "RetriesExhausted"
# Not Lambda's: the condition of a record that asks the reconciler to look at an upload.
RECONCILE_REQUESTED: Final = "ReconcileRequested"
# S3 versioning's id of an object written while versioning was off (or suspended).
_NULL_VERSION: Final = "null"


class InvocationRecordError(ValueError):
    """A message on the Dispatcher DLQ that is not a Lambda invocation record."""


@dataclass(frozen=True)
class InvocationFailure:
    """One on-failure invocation record, as Lambda sends it to an SQS destination."""

    request_id: str
    function_arn: str
    condition: str
    invoke_count: int
    error: str
    payload: Mapping[str, Any]  # the event the function was invoked with

    @classmethod
    def from_json(cls, body: str) -> InvocationFailure:
        try:
            record = json.loads(body)
            context = record["requestContext"]
            payload = record["requestPayload"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvocationRecordError(f"not a Lambda invocation record: {exc}") from None
        if not isinstance(payload, Mapping):
            raise InvocationRecordError("the record's requestPayload is not an event object")
        response = record.get("responsePayload")
        error = response.get("errorMessage", "") if isinstance(response, Mapping) else ""
        return cls(
            request_id=str(context.get("requestId", "")),
            function_arn=str(context.get("functionArn", "")),
            condition=str(context.get("condition", "")),
            invoke_count=int(context.get("approximateInvokeCount", 0)),
            error=str(error or response or ""),
            payload=payload,
        )


def _iso_millis(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def invocation_record(
    *,
    payload: Mapping[str, Any],
    function_arn: str,
    request_id: str,
    invoke_count: int,
    error: BaseException,
    condition: str = RETRIES_EXHAUSTED,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The record Lambda sends on failure (its Python runtime's shape for a raised error)."""
    return _record(
        payload=payload,
        function_arn=function_arn,
        request_id=request_id,
        invoke_count=invoke_count,
        condition=condition,
        now=now,
        response={
            "errorMessage": str(error),
            "errorType": type(error).__name__,
            "requestId": request_id,
            "stackTrace": traceback.format_tb(error.__traceback__),
        },
    )


def reconcile_request(
    upload: StoredUpload, *, requester: str, request_id: str, reason: str
) -> dict[str, Any]:
    """A record in the same shape asking the reconciler to dispatch ``upload`` (what
    ``onprem status --reconcile`` puts on the Dispatcher DLQ); nothing was invoked."""
    return _record(
        payload=upload.s3_event(),
        function_arn=requester,
        request_id=request_id,
        invoke_count=0,
        condition=RECONCILE_REQUESTED,
        now=None,
        response={"errorMessage": reason},
    )


def _record(
    *,
    payload: Mapping[str, Any],
    function_arn: str,
    request_id: str,
    invoke_count: int,
    condition: str,
    now: datetime | None,
    response: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "version": RECORD_VERSION,
        "timestamp": _iso_millis(now or datetime.now(UTC)),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": dict(payload),
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": dict(response),
    }


@dataclass(frozen=True)
class StoredUpload:
    """The latest version of an object in ``audio-input/``, as a bucket listing shows it."""

    bucket: str
    key: str
    version_id: str | None  # None where the bucket was not versioned when it was written
    etag: str
    size: int
    last_modified: datetime

    @property
    def job_version(self) -> str:
        """What the Dispatcher keys the job on for this object (its S3 event's fields)."""
        return self.version_id or self.etag

    @property
    def job_id(self) -> str:
        return job_id_for(self.bucket, self.key, self.job_version)

    def s3_event(self) -> dict[str, Any]:
        """The ``ObjectCreated`` notification S3 sent (or should have sent) for it."""
        obj: dict[str, Any] = {
            "key": encode_event_key(self.key),
            "size": self.size,
            "eTag": self.etag,
        }
        if self.version_id:
            obj["versionId"] = self.version_id
        return {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventTime": _iso_millis(self.last_modified),
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": self.bucket}, "object": obj},
                }
            ]
        }


def needs_dispatch(record: JobRecord | None) -> bool:
    """True when the Dispatcher did not finish this upload: no job row, a queued job whose
    Audio Queue message was never sent, or a refusal whose failure Result was never sent."""
    if record is None:
        return True
    attributes = record.attributes
    if record.state is JobState.QUEUED:
        return JobField.ENQUEUED_AT not in attributes
    return (
        record.state is JobState.FAILED
        and JobField.REJECTED_BY in attributes
        and JobField.RESULT_SENT_AT not in attributes
    )


def stored_uploads(s3: S3Client, bucket: str) -> Iterator[StoredUpload]:
    """The latest version of every object under ``audio-input/`` (folder markers left out)."""
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=AUDIO_PREFIX):
        for version in page.get("Versions", []):
            key = version.get("Key", "")
            if not version.get("IsLatest") or key.endswith("/"):
                continue
            version_id = version.get("VersionId")
            yield StoredUpload(
                bucket=bucket,
                key=key,
                version_id=None if version_id in (None, _NULL_VERSION) else version_id,
                etag=str(version.get("ETag", "")).strip('"'),
                size=int(version.get("Size", 0)),
                last_modified=version["LastModified"],
            )


def unfinished_uploads(
    s3: S3Client, table: JobTable, bucket: str, *, uploaded_before: datetime
) -> Iterator[StoredUpload]:
    """Uploads older than ``uploaded_before`` whose dispatch did not finish (``needs_dispatch``).

    The grace period keeps the reconciler clear of uploads whose S3 event Lambda may still
    deliver (a retry, or an invocation throttled up to the maximum event age)."""
    for upload in stored_uploads(s3, bucket):
        if upload.last_modified <= uploaded_before and needs_dispatch(table.get(upload.job_id)):
            yield upload
