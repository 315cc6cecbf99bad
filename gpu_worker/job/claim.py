"""Step 2: find the job in the job table and decide what this delivery still has to do.

The job table, not the queue, says what is done: a redelivered or duplicate message for
a job that was already handed to the LLM Caller (or failed) is only deleted; a job that
was transcribed but whose LLM job may not have gone out is handed off again without
transcribing; anything else is (re)transcribed, counting the attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from gpu_worker.storage.download import SourceMissingError
from pipeline_core.errors import WORKER_READER, is_missing_object
from pipeline_core.jobs import JobField, JobRecord, JobState, JobTable, at_or_after, job_id_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from pipeline_core.contracts import AudioJob


class Action(StrEnum):
    TRANSCRIBE = "transcribe"
    HAND_OFF = "hand_off"  # transcribed, but the LLM job may not have been sent
    SKIP = "skip"  # handed off, corrected or failed already: only delete the message


@dataclass(frozen=True)
class Claim:
    job_id: str
    action: Action
    state: JobState
    attempt: int = 0
    record: JobRecord | None = None  # the row as the claim left (or found) it


class ClaimConflictError(RuntimeError):
    """The job changed state between our read and our write twice in a row."""


def object_version(job: AudioJob) -> str | None:
    """The S3 version to read, when the message pins one (``"null"``: unversioned)."""
    return job.version_id if job.version_id not in (None, "null") else None


def resolve_job_id(s3: S3Client, bucket: str, job: AudioJob) -> str:
    """The Dispatcher's job id, or (for a hand-sent message) one from the object's version."""
    if job.job_id:
        return job.job_id
    version = job.version_id or job.etag
    if version is None:
        try:
            head = s3.head_object(Bucket=bucket, Key=job.object_key)
        except ClientError as exc:
            if is_missing_object(exc, WORKER_READER, bucket, job.object_key):
                raise SourceMissingError(
                    f"the audio object {job.object_key} does not exist"
                ) from None
            raise
        head_version = head.get("VersionId")
        version = head_version if head_version not in (None, "null") else head["ETag"].strip('"')
    return job_id_for(bucket, job.object_key, version)


def _decide(record: JobRecord) -> Action | None:
    if record.state is JobState.TRANSCRIBED and JobField.LLM_JOB_SENT_AT not in record.attributes:
        return Action.HAND_OFF
    if at_or_after(record.state, JobState.TRANSCRIBED):
        return Action.SKIP
    return None


def claim_job(table: JobTable, job_id: str, job: AudioJob, bucket: str, worker_id: str) -> Claim:
    """Mark the job ``transcribing`` (creating it if the message came without one).

    One conditional UpdateItem does it: it moves a ``queued`` or ``transcribing`` job and
    counts the attempt, and a refused move answers with the row, which says what is left
    to do (hand off, or nothing). Only a job the message brought no row for takes a put.
    """
    for _ in range(2):
        moved = table.move(
            job_id,
            JobState.TRANSCRIBING,
            expected=[JobState.QUEUED, JobState.TRANSCRIBING],
            fields={JobField.WORKER_ID: worker_id},
            count=JobField.ATTEMPTS,
        )
        record = moved.record
        if moved.moved and record is not None:
            attempt = int(record.attributes.get(JobField.ATTEMPTS, 1))
            return Claim(job_id, Action.TRANSCRIBE, JobState.TRANSCRIBING, attempt, record)
        if record is None:
            if table.create(
                job_id=job_id,
                bucket=bucket,
                s3_key=job.object_key,
                version=job.version_id or job.etag or "",
                language=job.language_code,
                details=job.details,
                state=JobState.TRANSCRIBING,
                extra={
                    JobField.OUTPUT_NAME: job.resolved_output_name,
                    JobField.ATTEMPTS: 1,
                    JobField.WORKER_ID: worker_id,
                },
            ):
                return Claim(job_id, Action.TRANSCRIBE, JobState.TRANSCRIBING, 1)
            continue  # another delivery created it meanwhile: claim it as any other
        action = _decide(record)
        if action is not None:
            return Claim(job_id, action, record.state, record=record)
    raise ClaimConflictError(f"job {job_id} keeps changing state under this worker")


def give_back_claim(table: JobTable, claim: Claim, worker_id: str) -> bool:
    """Undo ``claim`` for a message that goes back unworked (a prefetched job at a stop):
    the job is queued again and the attempt uncounted. Nothing changes (False) once another
    delivery has claimed the job since, or the job moved on."""
    return table.move(
        claim.job_id,
        JobState.QUEUED,
        expected=[JobState.TRANSCRIBING],
        count=JobField.ATTEMPTS,
        count_by=-1,
        when={JobField.WORKER_ID: worker_id, JobField.ATTEMPTS: claim.attempt},
    ).moved
