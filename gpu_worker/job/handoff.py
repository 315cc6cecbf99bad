"""Step 6 and the failure path: what the worker tells the rest of the pipeline.

Order on success: mark ``transcribed`` -> send the LLM job -> record that it was sent ->
delete the audio message. Marking first means the LLM Caller always finds the job
``transcribed`` when its message arrives; a crash before the record makes the next
delivery send the LLM job again (a harmless duplicate in a window of milliseconds), and
a crash after it only deletes the message. The record is what tells a duplicate message
(another delivery of the same upload) that the LLM job went out.

Order on failure: send the failed ``Result`` (and publish it to the notification topic,
``send_result``) -> mark ``failed`` -> delete. A crash before the mark repeats the
(identical) failure; none loses it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pipeline_core.contracts import (
    AudioJob,
    LlmJob,
    Result,
    ResultTopic,
    send_result,
    send_to_queue,
    utc_timestamp,
)
from pipeline_core.jobs import JobField, JobState, JobTable, at_or_after

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from gpu_worker.storage.outputs import WrittenTranscript

logger = logging.getLogger(__name__)


class JobStateError(RuntimeError):
    """The job is not in a state this step can move it from."""


def mark_transcribed(table: JobTable, job_id: str, written: WrittenTranscript) -> bool:
    """True when this delivery marked the job; False when another delivery already had
    (it then also sends the LLM job, or its redelivery does)."""
    moved = table.move(
        job_id, JobState.TRANSCRIBED, expected=[JobState.TRANSCRIBING], fields=written.job_fields()
    )
    if moved.moved:
        return True
    record = moved.record
    if record is not None and at_or_after(record.state, JobState.TRANSCRIBED):
        return False
    state = None if record is None else record.state.value
    raise JobStateError(f"job {job_id} is {state}, cannot mark it transcribed")


def send_llm_job(
    sqs: SQSClient,
    llm_queue_url: str,
    job: AudioJob,
    job_id: str,
    *,
    timed_key: str,
    timed_version_id: str | None,
) -> None:
    message = LlmJob(
        timed_key=timed_key,
        details=job.details,
        language=job.language,
        job_id=job_id,
        source_key=job.object_key,
        timed_version_id=timed_version_id,
        glossary=job.glossary,
    )
    message_id = send_to_queue(sqs, llm_queue_url, message)
    logger.info("sent the LLM job", extra={"timed_key": timed_key, "llm_message_id": message_id})


def record_handed_off(table: JobTable, job_id: str) -> None:
    table.update_fields(job_id, {JobField.LLM_JOB_SENT_AT: utc_timestamp()})


def report_failure(
    sqs: SQSClient,
    results_queue_url: str,
    table: JobTable,
    *,
    source_key: str,
    job_id: str | None,
    reason: str,
    topic: ResultTopic | None = None,
    language: str | None = None,
    output_name: str | None = None,
    superseded: bool = False,
) -> None:
    """Tell the user the job failed and why (or was superseded by a newer upload of the
    same file), and record it; the caller deletes the message."""
    result = Result.failure(
        source_key, reason, job_id=job_id, output_name=output_name, superseded=superseded
    )
    send_result(sqs, results_queue_url, result, topic=topic, language=language)
    if job_id is not None and table.get(job_id) is not None:
        table.fail(job_id, reason, superseded=superseded)
    if superseded:
        logger.warning("the job was superseded: %s", reason, extra={"error": reason})
    else:
        logger.error("the job failed: %s", reason, extra={"error": reason})
