"""``onprem upload``: send new recordings to ``audio-input/`` with their metadata.

Each file is checked before any byte leaves the machine (a safe key, a known language, a
known glossary, metadata that fits S3's 2 KB); a problem with one file is reported and the
others go on.
Transfers use boto3's managed transfer: multipart above a threshold, every request carrying
a SHA-256 checksum that S3 verifies before accepting it, botocore's retries with backoff.

An interrupted multipart upload never leaves a half object (S3 only shows the object on
CompleteMultipartUpload; s3transfer aborts the upload when a part fails). A run killed
outright can leave an unfinished multipart upload, which the next run aborts for that key
before starting afresh: restarting beats resuming here, since recordings are tens of
megabytes and resuming would mean hand-writing multipart bookkeeping that s3transfer does.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from onprem.console import NoProgress, UploadProgress
from onprem.recording import MetadataResolver, Recording, RecordingMetadataError
from onprem.scan import find_audio, object_key
from onprem.state import UploadState
from pipeline_core.errors import (
    ONPREM_READER,
    ConfigurationError,
    head_if_present,
    raise_if_denied,
)
from pipeline_core.jsonlog import log_context
from pipeline_core.keys import InvalidKeyError
from pipeline_core.metadata import MAX_METADATA_BYTES, MetadataError, encode_metadata

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
# Our own metadata entry: lets a run whose state file was lost recognise an object it sent.
CONTENT_SHA256: Final = "content-sha256"


class Status(StrEnum):
    UPLOADED = "uploaded"
    ALREADY_UPLOADED = "already-uploaded"  # the state file says so
    IN_BUCKET = "in-bucket"  # the object is there with this content (state file lost)
    WOULD_UPLOAD = "would-upload"  # --dry-run
    TOO_NEW = "too-new"  # modified moments ago, perhaps still being copied in
    FAILED = "failed"


@dataclass(frozen=True)
class UploadOptions:
    bucket: str
    root: Path
    patterns: tuple[str, ...]
    flag_language: str | None = None
    flag_details: str | None = None
    flag_speakers: str | None = None
    flag_glossary: str | None = None
    config_language: str | None = None
    min_age_seconds: float = 0.0
    dry_run: bool = False
    delete_after_upload: bool = False
    multipart_threshold: int = 16 * MIB
    multipart_chunksize: int = 16 * MIB
    max_concurrency: int = 4

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
        )


@dataclass(frozen=True)
class FileOutcome:
    path: Path
    key: str | None
    status: Status
    reason: str | None = None
    size: int = 0


@dataclass
class UploadReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    # Why the run stopped early: a configuration error every other file would meet too.
    fatal: str | None = None

    def count(self, status: Status) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status is status)

    @property
    def exit_code(self) -> int:
        """0: all good or nothing to do; 1: some files failed or the run stopped (cron can
        mail on it)."""
        return 1 if self.fatal or self.count(Status.FAILED) else 0

    def summary(self) -> dict[str, int]:
        return {status.value: self.count(status) for status in Status if self.count(status)}


@dataclass(frozen=True)
class _Job:
    path: Path
    key: str
    stat: os.stat_result
    sha256: str
    metadata: dict[str, str]
    known_uploaded: bool


class UploadError(Exception):
    """One file's upload did not complete or did not verify."""


def run_upload(
    s3: S3Client,
    state: UploadState,
    options: UploadOptions,
    progress: UploadProgress | None = None,
) -> UploadReport:
    progress = progress or NoProgress()
    report = UploadReport()
    resolver = MetadataResolver(
        options.root,
        flag_language=options.flag_language,
        flag_details=options.flag_details,
        flag_speakers=options.flag_speakers,
        flag_glossary=options.flag_glossary,
        config_language=options.config_language,
    )
    jobs: list[_Job] = []
    seen: dict[str, Path] = {}
    for path in find_audio(options.root, options.patterns):
        prepared = _prepare(path, options, resolver, state)
        if prepared.key is not None and prepared.key in seen:
            # Names that differ only in Unicode normalisation (NFC/NFD) share one key.
            reason = f"{seen[prepared.key]} already maps to the key {prepared.key}; rename one"
            prepared = FileOutcome(path, prepared.key, Status.FAILED, reason)
        elif prepared.key is not None:
            seen[prepared.key] = path
        if isinstance(prepared, _Job):
            jobs.append(prepared)
        else:
            report.outcomes.append(prepared)
            _log_outcome(prepared)
    progress.begin(len(jobs), sum(job.stat.st_size for job in jobs))
    try:
        for job in jobs:
            with log_context(s3_key=job.key, path=str(job.path)):
                advance = progress.file(job.key, job.stat.st_size)
                try:
                    outcome = _upload_one(s3, state, options, job, advance)
                except ConfigurationError as exc:
                    # A missing grant: every other file would be refused the same way.
                    report.fatal = f"stopped: {exc}"
                    log.error(report.fatal)
                    break
                finally:
                    progress.file_done()
                report.outcomes.append(outcome)
                _log_outcome(outcome)
    finally:
        progress.end()
    log.info("upload run finished", extra={"bucket": options.bucket, **report.summary()})
    return report


def _log_outcome(outcome: FileOutcome) -> None:
    with log_context(s3_key=outcome.key, path=str(outcome.path)):
        extra: dict[str, Any] = {"status": outcome.status.value, "size": outcome.size}
        if outcome.status is Status.FAILED:
            log.error(
                "%s: %s", outcome.path, outcome.reason, extra={**extra, "error": outcome.reason}
            )
        elif outcome.status is Status.ALREADY_UPLOADED:
            log.debug("%s: already uploaded", outcome.path, extra=extra)
        elif outcome.status is Status.TOO_NEW:
            log.info("%s: skipped, %s", outcome.path, outcome.reason, extra=extra)
        else:
            log.info("%s: %s -> %s", outcome.path, outcome.status.value, outcome.key, extra=extra)


def _prepare(
    path: Path, options: UploadOptions, resolver: MetadataResolver, state: UploadState
) -> _Job | FileOutcome:
    key: str | None = None
    try:
        key = object_key(options.root, path)
        recording = resolver.resolve(path)
        encode_metadata(  # refused early when too long
            recording.language, recording.details, recording.speakers, recording.glossary
        )
        stat = path.stat()
        age = time.time() - stat.st_mtime
        if age < options.min_age_seconds:
            reason = f"modified {age:.0f}s ago (under {options.min_age_seconds:g}s); next run"
            return FileOutcome(path, key, Status.TOO_NEW, reason, stat.st_size)
        sha256 = state.content_hash(path, stat)
        metadata = _metadata(recording, sha256)
    except (InvalidKeyError, RecordingMetadataError, MetadataError) as exc:
        return FileOutcome(path, key, Status.FAILED, str(exc))
    except OSError as exc:
        return FileOutcome(path, key, Status.FAILED, f"cannot read the file: {exc}")
    known = state.uploaded_key(options.bucket, path, stat.st_size, sha256) == key
    if known and not options.delete_after_upload:
        return FileOutcome(path, key, Status.ALREADY_UPLOADED, size=stat.st_size)
    if options.dry_run:
        status = Status.ALREADY_UPLOADED if known else Status.WOULD_UPLOAD
        return FileOutcome(path, key, status, size=stat.st_size)
    return _Job(path, key, stat, sha256, metadata, known)


def _metadata(recording: Recording, sha256: str) -> dict[str, str]:
    encoded = encode_metadata(
        recording.language, recording.details, recording.speakers, recording.glossary
    )
    metadata = {**encoded, CONTENT_SHA256: sha256}
    size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if size > MAX_METADATA_BYTES:
        raise MetadataError(
            f"the metadata takes {size} bytes once encoded, more than S3's "
            f"{MAX_METADATA_BYTES}; shorten 'details' ({len(recording.details)} characters)"
        )
    return metadata


def _upload_one(
    s3: S3Client,
    state: UploadState,
    options: UploadOptions,
    job: _Job,
    advance: Callable[[int], None],
) -> FileOutcome:
    size = job.stat.st_size
    try:
        if _matches_remote(s3, options.bucket, job):
            status = Status.ALREADY_UPLOADED if job.known_uploaded else Status.IN_BUCKET
            version = None
        else:
            abort_unfinished_uploads(s3, options.bucket, job.key)
            s3.upload_file(
                str(job.path),
                options.bucket,
                job.key,
                ExtraArgs={
                    "Metadata": job.metadata,
                    "ChecksumAlgorithm": "SHA256",
                    "ContentType": mimetypes.guess_type(job.path.name)[0]
                    or "application/octet-stream",
                },
                Config=options.transfer_config(),
                Callback=advance,
            )
            version = _verify(s3, options, job)
            status = Status.UPLOADED
    except ClientError as exc:
        return FileOutcome(job.path, job.key, Status.FAILED, f"upload failed: {exc}", size)
    except (BotoCoreError, S3UploadFailedError, UploadError) as exc:
        return FileOutcome(job.path, job.key, Status.FAILED, f"upload failed: {exc}", size)
    except OSError as exc:
        return FileOutcome(job.path, job.key, Status.FAILED, f"cannot read the file: {exc}", size)
    if status is Status.UPLOADED or not job.known_uploaded:
        state.record_upload(
            bucket=options.bucket,
            path=job.path,
            size=size,
            sha256=job.sha256,
            key=job.key,
            version_id=version,
        )
    if options.delete_after_upload:
        try:
            job.path.unlink()
            log.info("%s: deleted after upload", job.path, extra={"deleted": True})
        except OSError as exc:
            log.warning("%s: uploaded but not deleted: %s", job.path, exc)
    return FileOutcome(job.path, job.key, status, size=size)


def _matches_remote(s3: S3Client, bucket: str, job: _Job) -> bool:
    """True when the object is already there with this content (our checksum metadata)."""
    head = head_if_present(s3, ONPREM_READER, bucket, job.key)
    if head is None:
        return False
    return (
        head.get("ContentLength") == job.stat.st_size
        and head.get("Metadata", {}).get(CONTENT_SHA256) == job.sha256
    )


def _verify(s3: S3Client, options: UploadOptions, job: _Job) -> str | None:
    """Check what S3 now holds against the file; returns the object's version id."""
    after = job.path.stat()
    if (after.st_size, after.st_mtime_ns) != (job.stat.st_size, job.stat.st_mtime_ns):
        raise UploadError("the file changed while it was being uploaded; the next run sends it")
    try:
        head = s3.head_object(Bucket=options.bucket, Key=job.key, ChecksumMode="ENABLED")
    except ClientError as exc:
        # The object was just written: a denial here is a missing s3:GetObject grant.
        raise_if_denied(exc, ONPREM_READER, options.bucket, job.key)
        raise
    if head.get("ContentLength") != job.stat.st_size:
        raise UploadError(
            f"S3 holds {head.get('ContentLength')} bytes, the file has {job.stat.st_size}"
        )
    if head.get("Metadata", {}).get(CONTENT_SHA256) != job.sha256:
        raise UploadError("the object's checksum metadata is not this file's")
    # A single PUT has a full-object SHA-256 to compare; a multipart object has a checksum of
    # part checksums, which S3 verified part by part on upload.
    remote = head.get("ChecksumSHA256")
    if job.stat.st_size < options.multipart_threshold and remote:
        local = base64.b64encode(bytes.fromhex(job.sha256)).decode()
        if remote != local:
            raise UploadError(f"S3's SHA-256 {remote} is not the file's {local}")
    return head.get("VersionId")


def abort_unfinished_uploads(s3: S3Client, bucket: str, key: str) -> int:
    """Abort multipart uploads of ``key`` left by an earlier run that was killed.

    The run lock means no other upload of ours is in flight. Lacking the permission to list
    multipart uploads only costs storage until the bucket's lifecycle rule cleans up.
    """
    aborted = 0
    try:
        paginator = s3.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            for upload in page.get("Uploads", []):
                if upload.get("Key") != key or "UploadId" not in upload:
                    continue
                s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
                aborted += 1
    except ClientError as exc:
        log.warning("could not clean up unfinished uploads of %s: %s", key, exc)
        return aborted
    if aborted:
        log.info("aborted %d unfinished multipart upload(s) of %s", aborted, key)
    return aborted
