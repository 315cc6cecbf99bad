"""What an error means for the job: whether retrying can help, whether an S3 object is gone,
and whether the deployment rather than the job is at fault."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pipeline_core.keys import AUDIO_PREFIX, FINAL_PREFIX, LLM_WORK_PREFIX, TRANSCRIPT_PREFIX

if TYPE_CHECKING:  # not imported at run time: stage_config.py reads the readers without boto
    from botocore.exceptions import ClientError

# What S3 answers when the object (or the version asked for) does not exist: GetObject says
# NoSuchKey or NoSuchVersion, HeadObject (and download_file, which starts with one) a bare
# "404" or NotFound, having no body to name the error in.
MISSING_OBJECT_CODES: Final = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound"})
# What S3 answers instead when the caller may read the object but not list the bucket: a
# missing key is then 403 (HeadObject: a bare "403"), so that its absence is not disclosed.
ACCESS_DENIED_CODES: Final = frozenset({"403", "AccessDenied", "Forbidden"})


class PermanentError(Exception):
    """An error that retrying the same work cannot fix (a corrupt recording, a deleted
    object, a language the model cannot do, a request the model refuses): it is reported
    at once, not retried."""


class MisconfigurationError(RuntimeError):
    """The deployment, not the job, is wrong (a missing IAM grant): every job would fail the
    same way until an operator fixes it. Never a per-job failure that blames the recording:
    components log it as an error and leave the message to the queue's retries and its DLQ
    (and alarm), from which it can be redriven once the configuration is fixed."""


class MissingPermissionError(MisconfigurationError):
    """S3 denied a read that may meet a missing object: a grant is missing."""


@dataclass(frozen=True)
class ObjectReader:
    """An identity that reads objects which may not exist, and the prefixes it probes.

    Each such identity needs ``s3:ListBucket`` on the bucket for these prefixes (an
    ``s3:prefix`` condition), or S3 answers a missing key with 403 instead of 404; a test
    holds the template's and the Chalice policies to this table.
    """

    identity: str
    probed_prefixes: tuple[str, ...]


# The worker HEADs the upload (a hand-sent message, download_file) and its own transcript
# (a redelivered job skips to the hand-off when the transcript is there).
WORKER_READER: Final = ObjectReader("the GPU worker's role", (AUDIO_PREFIX, TRANSCRIPT_PREFIX))
# The Dispatcher HEADs each upload; it may be deleted before the event arrives.
DISPATCHER_READER: Final = ObjectReader("the Dispatcher's role", (AUDIO_PREFIX,))
# The LLM Caller reads the timed transcript and its chunk checkpoints (absent until saved).
LLM_CALLER_READER: Final = ObjectReader(
    "the LLM Caller's role", (TRANSCRIPT_PREFIX, LLM_WORK_PREFIX)
)
# The uploader HEADs each key before it uploads; the poller reads final transcripts, which
# expire with the bucket's lifecycle rule.
ONPREM_READER: Final = ObjectReader("the on-prem client's policy", (AUDIO_PREFIX, FINAL_PREFIX))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_missing_object(exc: ClientError, reader: ObjectReader, bucket: str, key: str) -> bool:
    """True when ``exc`` says the S3 object (or the version asked for) does not exist.

    Raises ``MissingPermissionError`` when S3 denied the read: without ``s3:ListBucket``
    that is S3's answer for a missing key too, so "missing" cannot be told from "not
    allowed", and a 403 is never taken for "missing".
    """
    raise_if_denied(exc, reader, bucket, key)
    return _code(exc) in MISSING_OBJECT_CODES


def raise_if_denied(exc: ClientError, reader: ObjectReader, bucket: str, key: str) -> None:
    """Raise ``MissingPermissionError`` when ``exc`` is S3 denying ``reader`` the object."""
    if _code(exc) in ACCESS_DENIED_CODES:
        raise MissingPermissionError(access_denied_reason(exc, reader, bucket, key)) from exc


def access_denied_reason(exc: ClientError, reader: ObjectReader, bucket: str, key: str) -> str:
    """What a denied read of ``s3://bucket/key`` means and which grants it needs."""
    folder = key.split("/", 1)[0] + "/" if "/" in key else key
    return (
        f"AccessDenied on {exc.operation_name} s3://{bucket}/{key}: {reader.identity} needs "
        f"s3:GetObject on arn:aws:s3:::{bucket}/{folder}* and s3:ListBucket on "
        f"arn:aws:s3:::{bucket} for s3:prefix {folder}* (without ListBucket S3 answers a "
        "missing object with 403); a configuration error, not a problem of this job"
    )
