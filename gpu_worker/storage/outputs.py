"""Step 5: the transcript files in S3, the timed one last as the commit mark.

Each ``put_object`` is atomic for readers (a reader sees the old object or the whole new
one). The JSON, SRT and VTT files are written at once; the timed file is written last,
because it is what the LLM Caller reads and what a restarted worker looks for: it carries
the job id and the run's figures as S3 metadata, so a redelivered job whose transcript was
already written skips straight to the hand-off.
A first delivery writes without looking first: each of its files only if its key is empty
(S3's ``If-None-Match: *``), which a new recording's name is; a key that holds a file makes
the write stop and the name be checked (``check_transcript_key``) before it is written again.
Every file names its recording (``pipeline_core.ownership``), and the timed file the S3
version of the JSON written with it (the LLM Caller reads that one for the word timings);
a timed file of another recording at this job's key fails the job instead of being
overwritten, and one of a newer upload of the same source ends this older job ``superseded``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from botocore.exceptions import ClientError

from gpu_worker.transcription import formats
from pipeline_core import subtitles
from pipeline_core.errors import WORKER_READER, head_if_present
from pipeline_core.jobs import JobField
from pipeline_core.keys import OutputFormat, TranscriptKeys
from pipeline_core.ownership import (
    OutputTakenError,
    Owner,
    SupersededError,
    json_version_metadata,
    owner_metadata,
)
from pipeline_core.timed_text import render_segments

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef

    from gpu_worker.transcription.transcribe_step import Transcription

logger = logging.getLogger(__name__)

# 412: the file changed since the check; 409: another conditional write of it was in
# progress at the same moment; 404 (If-Match only): it was deleted since the check.
_CONDITION_FAILED = frozenset(
    {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"}
)


@dataclass(frozen=True)
class WrittenTranscript:
    keys: TranscriptKeys
    audio_seconds: float
    transcribe_seconds: float
    model: str
    timed_version_id: str | None = None  # None in a bucket without versioning

    @property
    def real_time_factor(self) -> float:
        return self.transcribe_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0

    def job_fields(self) -> dict[str, object]:
        """What the job table records about the transcription."""
        return {
            JobField.TIMED_KEY: self.keys.timed,
            JobField.TIMED_VERSION_ID: self.timed_version_id,
            JobField.AUDIO_SECONDS: round(self.audio_seconds, 3),
            JobField.TRANSCRIBE_SECONDS: round(self.transcribe_seconds, 3),
            JobField.REAL_TIME_FACTOR: round(self.real_time_factor, 4),
            JobField.MODEL: self.model,
            JobField.PROGRESS_PERCENT: 100.0,
        }


def write_transcripts(
    s3: S3Client,
    bucket: str,
    keys: TranscriptKeys,
    transcription: Transcription,
    figures: formats.RunFigures,
    *,
    slot: TimedSlot | None,
) -> WrittenTranscript:
    """Write the transcript's files, the timed one last and only if it is still as ``slot``
    found it (an S3 conditional write): ``TimedFileChangedError`` when another job wrote it
    meanwhile, so that the check is made again. ``slot`` None: the name was not checked, and
    every file is written only where its key is empty (``TimedFileChangedError`` at the
    first that is not, before the timed file)."""
    segments = transcription.segments
    owner = owner_metadata(figures.job_id, figures.source_key)
    document = formats.transcript_document(segments, figures)

    unchecked = {"IfNoneMatch": "*"} if slot is None else {}

    def put(key: str, body: str, content_type: str) -> str | None:
        written_object = s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body.encode("utf-8"),
            ContentType=content_type,
            Metadata=owner,
            **unchecked,  # type: ignore[arg-type]
        )
        return _version(written_object.get("VersionId"))

    side_files = (
        (keys.json, document.to_json(), OutputFormat.JSON.content_type),
        (keys.srt, subtitles.srt(document), OutputFormat.SRT.content_type),
        (keys.vtt, subtitles.vtt(document), OutputFormat.VTT.content_type),
    )
    # The three at once (one round trip instead of three); the timed file after all of them.
    with ThreadPoolExecutor(max_workers=len(side_files), thread_name_prefix="put") as pool:
        futures = {key: pool.submit(put, key, body, kind) for key, body, kind in side_files}
    versions: dict[str, str | None] = {}
    for key, future in futures.items():
        try:
            versions[key] = future.result()
        except ClientError as exc:
            if slot is None and _condition_failed(exc):
                raise TimedFileChangedError(key) from exc
            raise
    condition = (
        {"IfMatch": slot.etag} if slot is not None and slot.etag is not None
        else {"IfNoneMatch": "*"}
    )  # fmt: skip
    try:
        timed = s3.put_object(
            Bucket=bucket,
            Key=keys.timed,
            Body=render_segments(segments).encode("utf-8"),
            ContentType="text/plain; charset=utf-8",
            Metadata={  # S3 metadata is ASCII: the model id is percent-encoded
                **owner,
                **json_version_metadata(versions[keys.json]),
                "audio-seconds": f"{figures.audio_seconds:.3f}",
                "transcribe-seconds": f"{figures.transcribe_seconds:.3f}",
                "model": quote(figures.model, safe=":/"),
            },
            **condition,  # type: ignore[arg-type]
        )
    except ClientError as exc:
        if _condition_failed(exc):
            raise TimedFileChangedError(keys.timed) from exc
        raise
    written = WrittenTranscript(
        keys=keys,
        audio_seconds=figures.audio_seconds,
        transcribe_seconds=figures.transcribe_seconds,
        model=figures.model,
        timed_version_id=_version(timed.get("VersionId")),
    )
    logger.info(
        "wrote the transcript",
        extra={"timed_key": keys.timed, "segments": len(segments), **written.job_fields()},
    )
    return written


@dataclass(frozen=True)
class TranscriptWriter:
    """Who writes a transcript: the job, and the upload it transcribed (the source key and
    the S3 version the worker read, None in a bucket without versioning)."""

    job_id: str
    source_key: str
    source_version: str | None


def find_written_transcript(
    s3: S3Client, bucket: str, keys: TranscriptKeys, writer: TranscriptWriter
) -> WrittenTranscript | None:
    """The transcript an earlier delivery of this job finished writing, if any.

    Raises what ``check_transcript_key`` raises.
    """
    head = _head_writable(s3, bucket, keys.timed, writer)
    if head is None or Owner.of(head.get("Metadata", {})).job_id != writer.job_id:
        return None  # nothing there, or an earlier upload's of the same source: transcribe anew
    metadata = head.get("Metadata", {})
    try:
        return WrittenTranscript(
            keys=keys,
            audio_seconds=float(metadata["audio-seconds"]),
            transcribe_seconds=float(metadata["transcribe-seconds"]),
            model=unquote(metadata.get("model", "")),
            timed_version_id=_version(head.get("VersionId")),
        )
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class TimedSlot:
    """The timed file as it was when this job was found free to write it: the ETag to
    replace, or None for a key that must still be empty."""

    etag: str | None


class TimedFileChangedError(RuntimeError):
    """Another writer put the timed file between the check and this job's write, or, where
    the name was not checked, one of the transcript's keys holds a file already (``key``)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _condition_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in _CONDITION_FAILED


def check_transcript_key(
    s3: S3Client,
    bucket: str,
    keys: TranscriptKeys,
    writer: TranscriptWriter,
    *,
    taken_key: str | None = None,
) -> TimedSlot:
    """Just before the transcript is written: its timed file may be written over.

    Raises ``OutputTakenError`` when the timed file is another recording's, and
    ``SupersededError`` when it is a newer upload's of the same source (the version the
    writer transcribed is no longer the source key's latest): an older
    upload's transcript never replaces a newer one's, however their jobs interleave. The
    slot it answers makes the write conditional on the file not changing meanwhile.
    ``taken_key``: one of the other files, found taken by an unchecked write; where there is
    no timed file (its writer has not finished), that file's owner is checked the same way,
    so that an older upload does not write over the files a newer one is writing.
    """
    head = _head_writable(s3, bucket, keys.timed, writer)
    if head is None and taken_key is not None and taken_key != keys.timed:
        _head_writable(s3, bucket, taken_key, writer)
    return TimedSlot(etag=None if head is None else head["ETag"])


def _head_writable(
    s3: S3Client, bucket: str, key: str, writer: TranscriptWriter
) -> HeadObjectOutputTypeDef | None:
    """The HEAD of one of the transcript's files (None when there is none), once it is known
    that ``writer`` may write over it."""
    head = head_if_present(s3, WORKER_READER, bucket, key)
    if head is None:
        return None
    owner = Owner.of(head.get("Metadata", {}))
    source_key = writer.source_key
    if not owner.may_be_replaced_by(writer.job_id, source_key):
        raise OutputTakenError(key, owner, source_key)
    if owner.job_id != writer.job_id and _newer_upload_exists(
        s3, bucket, source_key, writer.source_version
    ):
        raise SupersededError(source_key, key, owner)
    return head


def _newer_upload_exists(
    s3: S3Client, bucket: str, source_key: str, source_version: str | None
) -> bool:
    """True when the source key's latest version is not the one this job transcribed.

    Without versioning (``source_version`` None) an upload cannot be told from a newer one;
    a deleted source has no newer upload to defer to.
    """
    if source_version is None:
        return False
    head = head_if_present(s3, WORKER_READER, bucket, source_key)
    if head is None:
        return False
    latest = _version(head.get("VersionId"))
    return latest is not None and latest != source_version


def _version(version_id: str | None) -> str | None:
    """An S3 version id, or None where the bucket keeps none (``"null"``)."""
    return version_id if version_id not in (None, "null") else None
