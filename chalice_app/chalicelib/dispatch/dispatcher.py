"""The Dispatcher: one uploaded recording becomes one job on the Audio Queue.

For each object an S3 event announces:
- a job id from bucket + key + version (S3 delivers events at least once: a second
  delivery of the same upload finds its job and does nothing);
- bad input (unsupported file type, empty file, unreadable metadata, unknown language, no
  language, unknown glossary, unsafe key, object gone) is refused here, before it costs GPU
  time: the job is recorded ``failed`` with the reason and a failure ``Result`` goes to the
  Results Queue;
- a good one is recorded ``queued``, sent to the Audio Queue as an ``AudioJob`` and the GPU
  Auto Scaling Group is raised to 1;
- every upload that can be named gets its output name reserved first (accepted or refused;
  ``JobTable.reserve_output_name``): it travels in the ``AudioJob``, the job row and the
  failure ``Result``, so no two recordings share output files.
A Lambda that dies between the job-table put and the send leaves the job ``queued``
without ``enqueued_at``; the retried event (Lambda retries failed S3 invocations) finds it
so and sends it then. Only one delivery re-sends, under a claim that lapses after the
Dispatcher's timeout, so a live first attempt is never doubled.
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.dispatch.capacity import ensure_gpu_capacity
from chalicelib.dispatch.s3_events import CreatedObject, created_objects
from pipeline_core import keys
from pipeline_core.config import DispatcherSettings
from pipeline_core.contracts import (
    SCHEMA_VERSION,
    AudioJob,
    ContractError,
    Result,
    ResultTopic,
    send_result,
    send_to_queue,
    utc_timestamp,
)
from pipeline_core.errors import DISPATCHER_READER, is_missing_object
from pipeline_core.glossary import UnknownGlossaryError, choose
from pipeline_core.jobs import (
    RESULT_NOT_SENDABLE,
    JobField,
    JobRecord,
    JobState,
    JobTable,
    Lease,
    job_id_for,
)
from pipeline_core.jsonlog import log_context
from pipeline_core.languages import UnknownLanguageError, normalize_language
from pipeline_core.metadata import MetadataError, decode_metadata

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

REJECTED_BY = "dispatcher"


@dataclass(frozen=True)
class DispatcherClients:
    s3: S3Client
    sqs: SQSClient
    dynamodb: DynamoDBClient
    autoscaling: AutoScalingClient
    sns: Any = None  # an SNS client, for the notification topic when the settings name one


class DispatchOutcome(StrEnum):
    ENQUEUED = "enqueued"  # a new job, sent to the Audio Queue
    RESENT = "resent"  # a job whose first delivery died before its message was sent
    DUPLICATE = "duplicate"  # a redelivery of a job already handled
    REJECTED = "rejected"  # bad input: failed with a reason, a failure Result sent
    IGNORED = "ignored"  # not an upload of ours (folder marker, other prefix or bucket)


@dataclass(frozen=True)
class Dispatched:
    key: str
    outcome: DispatchOutcome
    job_id: str | None = None
    reason: str | None = None


class UploadRejectedError(Exception):
    """Input that must not reach the GPU; the message is the reason the user reads."""


@dataclass(frozen=True)
class _Accepted:
    job: AudioJob
    size: int


def handle_s3_event(
    event: Mapping[str, Any], clients: DispatcherClients, settings: DispatcherSettings
) -> list[Dispatched]:
    """Dispatch every object of one S3 event.

    An AWS error on one object is raised after the others are done, so that Lambda retries
    the event; the objects already handled are then skipped as duplicates.
    """
    outcomes: list[Dispatched] = []
    failure: Exception | None = None
    for obj in created_objects(event):
        try:
            outcomes.append(dispatch_object(obj, clients, settings))
        except Exception as exc:
            with log_context(s3_key=obj.key):
                log.exception("dispatch failed; the event will be retried")
            failure = failure or exc
    if failure is not None:
        raise failure
    return outcomes


def dispatch_object(
    obj: CreatedObject, clients: DispatcherClients, settings: DispatcherSettings
) -> Dispatched:
    with log_context(s3_key=obj.key):
        if obj.bucket != settings.bucket:
            log.warning("event for another bucket ignored", extra={"bucket": obj.bucket})
            return Dispatched(obj.key, DispatchOutcome.IGNORED, reason=f"bucket {obj.bucket!r}")
        if obj.key_error is None and not obj.key.startswith(keys.AUDIO_PREFIX):
            log.warning("object outside %s ignored", keys.AUDIO_PREFIX)
            return Dispatched(obj.key, DispatchOutcome.IGNORED, reason="outside audio-input/")
        if obj.key.endswith("/") and not obj.size:
            log.info("folder marker ignored")
            return Dispatched(obj.key, DispatchOutcome.IGNORED, reason="folder marker")
        version = obj.version_id or obj.etag or obj.sequencer or "unversioned"
        job_id = job_id_for(obj.bucket, obj.key, version)
        with log_context(job_id=job_id):
            return _Dispatch(obj, version, job_id, clients, settings).run()


class _Dispatch:
    """One object of one event, from job id to outcome."""

    def __init__(
        self,
        obj: CreatedObject,
        version: str,
        job_id: str,
        clients: DispatcherClients,
        settings: DispatcherSettings,
    ) -> None:
        self.obj = obj
        self.version = version
        self.job_id = job_id
        self.clients = clients
        self.settings = settings
        self.table = JobTable(clients.dynamodb, settings.job_table)
        self.lease = Lease(
            JobField.ENQUEUE_LEASE_UNTIL, str(uuid.uuid4()), settings.enqueue_lease_seconds
        )

    def run(self) -> Dispatched:
        # No GetItem first: the conditional put that records the job answers with the row a
        # redelivery finds (``JobTable.create_or_read``). A redelivery pays the checks again
        # (its HEAD, its name's reservation, which finds its own name); a first delivery,
        # the usual case, saves a read.
        try:
            accepted = self._accept()
        except UploadRejectedError as exc:
            return self._reject(str(exc))
        return self._enqueue_new(accepted)

    # -- checks -------------------------------------------------------------------------

    def _accept(self) -> _Accepted:
        obj = self.obj
        if obj.key_error:
            raise UploadRejectedError(obj.key_error)
        try:
            keys.audio_key(obj.key)
        except keys.InvalidKeyError as exc:
            raise UploadRejectedError(f"unsafe object key: {exc}") from None
        if not keys.has_audio_suffix(obj.key):
            extension = posixpath.splitext(obj.key)[1] or "(none)"
            raise UploadRejectedError(
                f"unsupported file type {extension!r}; accepted are "
                f"{', '.join(keys.AUDIO_SUFFIXES)}"
            )
        head = self._head()
        size = int(head.get("ContentLength", 0))
        if size == 0:
            raise UploadRejectedError("the file is empty (0 bytes)")
        try:
            metadata = decode_metadata(head.get("Metadata", {}))
        except MetadataError as exc:
            raise UploadRejectedError(f"the object's metadata cannot be read: {exc}") from None
        language = metadata.language or self.settings.default_language
        if not language:
            raise UploadRejectedError(
                "the object has no 'language' metadata and no DEFAULT_LANGUAGE is configured; "
                "upload it with metadata language=<name>, e.g. hebrew"
            )
        try:
            normalize_language(language)
        except UnknownLanguageError as exc:
            raise UploadRejectedError(str(exc)) from None
        try:
            glossary = choose(metadata.glossary, metadata.details, self.settings.default_glossary)
        except UnknownGlossaryError as exc:
            raise UploadRejectedError(f"the object's 'glossary' metadata: {exc}") from None
        output_name = self._reserve_output_name()
        try:
            job = AudioJob.from_dict(
                {
                    "s3_key": obj.key,
                    "language": language,
                    "details": metadata.details,
                    "job_id": self.job_id,
                    "bucket": obj.bucket,
                    "etag": obj.etag or str(head.get("ETag", "")).strip('"') or None,
                    "version_id": obj.version_id,
                    "output_name": output_name,
                    "schema_version": SCHEMA_VERSION,
                    "speakers": metadata.speakers,
                    "glossary": glossary,
                }
            )
        except ContractError as exc:
            raise UploadRejectedError(str(exc)) from None
        return _Accepted(job, size)

    def _reserve_output_name(self) -> str:
        try:
            return self.table.reserve_output_name(self.obj.bucket, self.obj.key)
        except keys.InvalidKeyError as exc:
            raise UploadRejectedError(f"the file name cannot name its transcripts: {exc}") from None

    def _head(self) -> Mapping[str, Any]:
        kwargs: dict[str, Any] = {"Bucket": self.obj.bucket, "Key": self.obj.key}
        if self.obj.version_id:
            kwargs["VersionId"] = self.obj.version_id
        try:
            return self.clients.s3.head_object(**kwargs)
        except ClientError as exc:
            if is_missing_object(exc, DISPATCHER_READER, self.obj.bucket, self.obj.key):
                reason = "the object was deleted before it could be processed"
                raise UploadRejectedError(reason) from None
            raise

    # -- outcomes -----------------------------------------------------------------------

    def _enqueue_new(self, accepted: _Accepted) -> Dispatched:
        job = accepted.job
        created = self.table.create_or_read(
            job_id=self.job_id,
            bucket=self.obj.bucket,
            s3_key=self.obj.key,
            version=self.version,
            language=job.language,
            details=job.details,
            extra={
                JobField.OUTPUT_NAME: job.output_name,
                JobField.ETAG: job.etag,
                JobField.VERSION_ID: job.version_id,
                JobField.SIZE_BYTES: accepted.size,
                JobField.SPEAKERS: job.speakers,
                JobField.GLOSSARY: job.glossary,
            },
            lease=self.lease,
        )
        if not created.moved:  # an earlier or concurrent delivery of the upload recorded it
            return self._redelivered(self._recorded(created.record))
        self._send(job)
        log.info("job queued", extra={"language": job.language, "size_bytes": accepted.size})
        return Dispatched(self.obj.key, DispatchOutcome.ENQUEUED, self.job_id)

    def _send(self, job: AudioJob) -> None:
        message_id = send_to_queue(self.clients.sqs, self.settings.audio_queue_url, job)
        self.table.update_fields(
            self.job_id,
            {JobField.ENQUEUED_AT: utc_timestamp(), JobField.AUDIO_MESSAGE_ID: message_id},
        )
        ensure_gpu_capacity(self.clients.autoscaling, self.settings.asg_name)

    def _reject(self, reason: str) -> Dispatched:
        log.warning("upload refused: %s", reason, extra={"reason": reason})
        output_name = None
        if self.obj.key_error is None:
            # Named too (the re-upload that fixes it gets the same name), unless the key
            # cannot name files at all.
            try:
                output_name = self._reserve_output_name()
            except UploadRejectedError:
                output_name = None
        created = self.table.create_or_read(
            job_id=self.job_id,
            bucket=self.obj.bucket,
            s3_key=self.obj.key,
            version=self.version,
            language=None,
            details="",
            state=JobState.FAILED,
            error=reason,
            extra={JobField.REJECTED_BY: REJECTED_BY, JobField.OUTPUT_NAME: output_name},
            lease=self.lease,
        )
        if not created.moved:
            return self._redelivered(self._recorded(created.record))
        self._send_failure(reason, output_name)
        return Dispatched(self.obj.key, DispatchOutcome.REJECTED, self.job_id, reason)

    def _send_failure(self, reason: str, output_name: str | None) -> None:
        try:
            keys.audio_key(self.obj.key)
        except keys.InvalidKeyError:
            # The Result contract cannot name an unsafe key; the job table and this log
            # line are where the refusal is recorded.
            log.error(
                "no failure result can name this key; see the job table", extra={"reason": reason}
            )
            self.table.update_fields(self.job_id, {JobField.RESULT_SENT_AT: RESULT_NOT_SENDABLE})
            return
        result = Result.failure(self.obj.key, reason, job_id=self.job_id, output_name=output_name)
        topic = ResultTopic.configured(self.clients.sns, self.settings.notification_topic_arn)
        send_result(self.clients.sqs, self.settings.results_queue_url, result, topic=topic)
        self.table.update_fields(self.job_id, {JobField.RESULT_SENT_AT: utc_timestamp()})

    def _redelivered(self, record: JobRecord) -> Dispatched:
        attributes = record.attributes
        if record.state is JobState.QUEUED:
            if JobField.ENQUEUED_AT not in attributes and self._claim(
                JobState.QUEUED, JobField.ENQUEUED_AT
            ):
                if record.language is None:
                    raise RuntimeError(f"queued job {self.job_id} has no language")
                job = AudioJob(
                    s3_key=record.s3_key,
                    language=record.language,
                    details=record.details,
                    job_id=record.job_id,
                    bucket=record.bucket,
                    etag=attributes.get(JobField.ETAG),
                    version_id=attributes.get(JobField.VERSION_ID),
                    output_name=attributes.get(JobField.OUTPUT_NAME),
                    schema_version=SCHEMA_VERSION,
                    speakers=attributes.get(JobField.SPEAKERS),
                    glossary=attributes.get(JobField.GLOSSARY),
                )
                self._send(job)
                log.warning("job re-sent: an earlier delivery died before sending it")
                return Dispatched(self.obj.key, DispatchOutcome.RESENT, self.job_id)
            # Still waiting for a worker: make sure one is coming.
            ensure_gpu_capacity(self.clients.autoscaling, self.settings.asg_name)
        elif (
            record.state is JobState.FAILED
            and attributes.get(JobField.REJECTED_BY) == REJECTED_BY
            and JobField.RESULT_SENT_AT not in attributes
            and self._claim(JobState.FAILED, JobField.RESULT_SENT_AT)
        ):
            self._send_failure(
                record.error or "refused by the Dispatcher",
                attributes.get(JobField.OUTPUT_NAME),
            )
            log.warning("failure result re-sent: an earlier delivery died before sending it")
            return Dispatched(self.obj.key, DispatchOutcome.RESENT, self.job_id, record.error)
        log.info("duplicate delivery of a known upload", extra={"state": record.state.value})
        return Dispatched(self.obj.key, DispatchOutcome.DUPLICATE, self.job_id)

    def _claim(self, state: JobState, done_field: str) -> bool:
        return self.table.claim(self.job_id, self.lease, states=[state], unless_present=done_field)

    def _recorded(self, record: JobRecord | None) -> JobRecord:
        if record is None:
            raise RuntimeError(f"job {self.job_id} vanished from the job table")
        return record
