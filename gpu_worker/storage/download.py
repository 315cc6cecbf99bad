"""Step 3: the uploaded audio, streamed from S3 to a local file."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final

from botocore.exceptions import ClientError

from pipeline_core.errors import WORKER_READER, PermanentError, is_missing_object

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

COPY_CHUNK_BYTES: Final = 1 << 20


class SourceMissingError(PermanentError):
    """The audio object (or the version the job names) is gone: retrying will not help."""


def download_audio(
    s3: S3Client, bucket: str, key: str, version_id: str | None, folder: Path
) -> Path:
    """Download ``key`` into ``folder`` (streamed to disk); returns the file."""
    suffix = PurePosixPath(key).suffix.lower() or ".audio"
    path = folder / f"source{suffix}"
    started = time.monotonic()
    try:
        # One GET streamed to disk: the transfer manager's download_file would HEAD first.
        if version_id:
            response = s3.get_object(Bucket=bucket, Key=key, VersionId=version_id)
        else:
            response = s3.get_object(Bucket=bucket, Key=key)
        with response["Body"] as body, path.open("wb") as file:
            shutil.copyfileobj(body, file, COPY_CHUNK_BYTES)
    except ClientError as exc:
        if is_missing_object(exc, WORKER_READER, bucket, key):
            version = f" (version {version_id})" if version_id else ""
            raise SourceMissingError(
                f"the audio object {key}{version} does not exist; it was deleted or replaced "
                "before it was transcribed"
            ) from None
        raise
    logger.info(
        "downloaded the audio",
        extra={"bytes": path.stat().st_size, "download_seconds": time.monotonic() - started},
    )
    return path
