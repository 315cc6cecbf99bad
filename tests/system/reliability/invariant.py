"""The pipeline's promise, checked after every fault: one final outcome per upload.

For every uploaded object version (key + the version the Dispatcher keyed the job on):
- there is exactly one job row, in a final state (``succeeded`` or ``failed``);
- a succeeded job has its ``final-output/`` text and timed text, and the timed text has the
  transcript's lines with the transcript's timestamps, none dropped, none invented (never a
  truncated output), and exactly one success Result names it; its corrected ``.json`` has
  the transcript's segments, and its ``.srt`` and ``.vtt`` parse and say the JSON's text;
- a failed job has a non-empty reason, and exactly one failed Result carries it (or, for a
  key no Result can name, the job row says the result was not sendable); a job a newer
  upload of the same key superseded (its row's result status says so) has exactly one
  ``superseded`` Result with its reason instead;
- no job has more than one Result; no Result names a job nobody uploaded;
- the queues are empty and each DLQ holds what the test expects (usually nothing).
It returns figures (files, outcomes, retries) for the reliability report.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import srt
import webvtt
from botocore.exceptions import ClientError

from pipeline_core import keys
from pipeline_core.contracts import Result
from pipeline_core.errors import ObjectReader, is_missing_object
from pipeline_core.jobs import (
    RESULT_NOT_SENDABLE,
    JobField,
    JobRecord,
    JobState,
    JobTable,
    job_id_for,
)
from pipeline_core.subtitles import RLM
from pipeline_core.timed_text import TIMED_PREFIX
from pipeline_core.transcript_document import TranscriptDocument

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


@dataclass(frozen=True)
class Upload:
    """One uploaded object version, as the Dispatcher names its job."""

    key: str
    version: str  # VersionId, else ETag: what the Dispatcher keys the job on

    def job_id(self, bucket: str) -> str:
        return job_id_for(bucket, self.key, self.version)


@dataclass
class Figures:
    files: int = 0
    succeeded: int = 0
    uncorrected: int = 0
    failed: int = 0
    superseded: int = 0  # older uploads of a key uploaded again while they were processed
    attempts: int = 0  # worker deliveries that claimed a job, summed
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "success": self.succeeded,
            "success_uncorrected": self.uncorrected,
            "failed": self.failed,
            "superseded": self.superseded,
            "worker_attempts": self.attempts,
        }


class InvariantError(AssertionError):
    pass


def queue_count(sqs: SQSClient, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return sum(
        int(attributes.get(name, "0"))
        for name in (
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        )
    )


def _timestamps(text: str) -> list[str]:
    stamps = []
    for line in text.splitlines():
        match = TIMED_PREFIX.match(line)
        if match:
            stamps.append(match[0])
    return stamps


CHECKER = ObjectReader("the invariant checker", (keys.FINAL_PREFIX,))


def _text(s3: S3Client, bucket: str, key: str) -> str | None:
    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_missing_object(exc, CHECKER, bucket, key):
            return None
        raise
    return body.decode("utf-8")


def _corrected_formats_problems(
    s3: S3Client, bucket: str, key: str, final: keys.FinalKeys, transcript: str
) -> list[str]:
    """The corrected JSON has the transcript's segments; the subtitles parse and say its text."""
    document_text, srt_text, vtt_text = (
        _text(s3, bucket, k) for k in (final.json, final.srt, final.vtt)
    )
    if document_text is None or srt_text is None or vtt_text is None:
        return [f"{key}: succeeded but its .json, .srt or .vtt is missing"]
    document = TranscriptDocument.from_json(document_text)
    if len(document.segments) != len(_timestamps(transcript)):
        return [f"{key}: the corrected JSON has {len(document.segments)} segments, "
                f"the transcript {len(_timestamps(transcript))}"]  # fmt: skip
    said = " ".join(segment.text for segment in document.segments)
    subtitles = " ".join(cue.content for cue in srt.parse(srt_text)).replace("\n", " ")
    captions = " ".join(c.text for c in webvtt.from_string(vtt_text).captions).replace("\n", " ")
    if subtitles.replace(RLM, "") != said or html.unescape(captions).replace(RLM, "") != said:
        return [f"{key}: the corrected subtitles do not say the corrected JSON's text"]
    return []


def check_invariant(
    *,
    s3: S3Client,
    sqs: SQSClient,
    table: JobTable,
    bucket: str,
    uploads: Iterable[Upload],
    results: Iterable[Result],
    queues: Mapping[str, str],
    expected_depths: Mapping[str, int] | None = None,
    other_jobs_allowed: bool = False,
    injected: Mapping[str, str] | None = None,
    results_fetched_by_poller: bool = False,
) -> Figures:
    """Raise ``InvariantError`` naming every broken promise; return the run's figures.

    ``queues``: name -> URL of every queue and DLQ; each must hold ``expected_depths[name]``
    messages (default 0).
    """
    problems: list[str] = []
    figures = Figures()
    uploads = list(dict.fromkeys(uploads))
    results = list(results)
    # The on-prem poller consumed the Results: the job row stands in for its Result, and the
    # test checks the files the poller wrote at home instead.
    told_by_table = results_fetched_by_poller
    by_job: dict[str, list[Result]] = {}
    for result in results:
        by_job.setdefault(result.job_id or f"<no job id: {result.source_file}>", []).append(result)
    records = {record.job_id: record for record in table.scan()}
    expected_ids = {upload.job_id(bucket) for upload in uploads}

    for upload in uploads:
        figures.files += 1
        job_id = upload.job_id(bucket)
        record = records.get(job_id)
        if record is None:
            problems.append(f"{upload.key} ({upload.version}): no job row")
            continue
        figures.attempts += int(record.attributes.get(JobField.ATTEMPTS, 0))
        sent = by_job.get(job_id, [])
        if told_by_table and record.state.is_final:
            status = record.attributes.get(JobField.RESULT_STATUS, "failed")
            sent = [_told(upload, record, str(status))]
        if len(sent) > 1:
            statuses = Counter(r.status for r in sent)
            problems.append(f"{upload.key}: {len(sent)} Results for one job ({dict(statuses)})")
        if record.state is JobState.SUCCEEDED:
            _check_success(
                s3,
                bucket=bucket,
                upload=upload,
                record=record,
                sent=sent,
                figures=figures,
                problems=problems,
            )
        elif record.state is JobState.FAILED:
            superseded = record.attributes.get(JobField.RESULT_STATUS) == "superseded"
            told_status = "superseded" if superseded else "failed"
            if superseded:
                figures.superseded += 1
            else:
                figures.failed += 1
            if not (record.error or "").strip():
                problems.append(f"{upload.key}: failed without a reason")
            elif (record.error or "").rstrip().endswith(":"):
                problems.append(f"{upload.key}: the reason stops short: {record.error!r}")
            figures.reasons.append(record.error or "")
            not_sendable = record.attributes.get(JobField.RESULT_SENT_AT) == RESULT_NOT_SENDABLE
            if not sent and not not_sendable:
                problems.append(f"{upload.key}: failed but no Result tells the user")
            for result in sent:
                if result.status != told_status or not (result.error or "").strip():
                    problems.append(f"{upload.key}: failed job but Result {result.status}")
        else:
            problems.append(f"{upload.key}: job left in state {record.state.value}")

    # Messages a test put on a queue by hand (no upload): source key -> words of the reason.
    for source, words in (injected or {}).items():
        told = [r for r in results if r.source_file == source and r.job_id not in expected_ids]
        if len(told) != 1 or told[0].status != "failed":
            problems.append(f"injected {source}: Results {[r.status for r in told]}, want 1 failed")
        elif words.lower() not in (told[0].error or "").lower():
            problems.append(f"injected {source}: reason {told[0].error!r} lacks {words!r}")
        for result in told:
            by_job.pop(result.job_id or f"<no job id: {result.source_file}>", None)
    strangers = [job_id for job_id in by_job if job_id not in expected_ids]
    if strangers:
        problems.append(f"Results for jobs nobody uploaded: {strangers}")
    if not other_jobs_allowed:
        extra = [r.s3_key for job_id, r in records.items() if job_id not in expected_ids]
        if extra:
            problems.append(f"job rows for uploads the test did not make: {extra}")
    active = [r.s3_key for r in records.values() if not r.state.is_final]
    if active:
        problems.append(f"jobs not in a final state: {active}")

    expected = dict(expected_depths or {})
    for name, url in queues.items():
        depth = queue_count(sqs, url)
        if depth != expected.get(name, 0):
            want = expected.get(name, 0)
            problems.append(f"queue {name} holds {depth} messages, expected {want}")
    if problems:
        raise InvariantError("the one-outcome invariant is broken:\n- " + "\n- ".join(problems))
    return figures


def _told(upload: Upload, record: JobRecord, status: str) -> Result:
    """A stand-in for a Result the poller consumed, from the job row that recorded it."""
    if status in ("failed", "superseded"):
        return Result.failure(
            upload.key, record.error or "?", job_id=record.job_id, superseded=status == "superseded"
        )
    return Result(
        source_file=upload.key,
        output_file=str(record.attributes.get(JobField.OUTPUT_FILE)),
        status="success" if status == "success" else "success_uncorrected",
        timestamp=str(record.updated_at or "2025-01-01T00:00:00Z"),
        job_id=record.job_id,
    )


def _check_success(
    s3: S3Client,
    *,
    bucket: str,
    upload: Upload,
    record: JobRecord,
    sent: list[Result],
    figures: Figures,
    problems: list[str],
) -> None:
    status = record.attributes.get(JobField.RESULT_STATUS)
    if status == "success":
        figures.succeeded += 1
    else:
        figures.uncorrected += 1
    if len(sent) != 1 or sent[0].status not in ("success", "success_uncorrected"):
        problems.append(f"{upload.key}: succeeded but its Results are {[r.status for r in sent]}")
    name = record.output_name or ""
    final = keys.final_keys(name)
    transcript = _text(s3, bucket, keys.transcript_keys(name).timed)
    text = _text(s3, bucket, final.text)
    timed = _text(s3, bucket, final.timed)
    if transcript is None or text is None or timed is None:
        problems.append(f"{upload.key}: succeeded but an output is missing")
        return
    if _timestamps(timed) != _timestamps(transcript) or not _timestamps(timed):
        problems.append(
            f"{upload.key}: final timed text has {len(_timestamps(timed))} timed lines, "
            f"the transcript {len(_timestamps(transcript))} (dropped, invented or cut off)"
        )
    if len([line for line in text.splitlines() if line.strip()]) != len(_timestamps(transcript)):
        problems.append(f"{upload.key}: final text's line count differs from the transcript's")
    problems.extend(_corrected_formats_problems(s3, bucket, upload.key, final, transcript))
