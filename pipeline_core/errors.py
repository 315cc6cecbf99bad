"""What an error means for the job: whether retrying can help, whether an S3 object is gone,
and whether the deployment rather than the job is at fault."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pipeline_core.keys import AUDIO_PREFIX, FINAL_PREFIX, LLM_WORK_PREFIX, TRANSCRIPT_PREFIX

if TYPE_CHECKING:  # not imported at run time: stage_config.py reads the readers without boto
    from botocore.exceptions import ClientError
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef

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


class ConfigurationError(Exception):
    """The deployment is set up wrong (a retired or unknown model, no model access, a
    missing permission): no job can succeed until someone changes it, so retrying later does
    not help and neither does blaming one job's content. It fails the invocation loudly: an
    error log, the queue's receive count and its DLQ alarm; the message says what to fix."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}. To fix: {fix}")
        self.problem = problem
        self.fix = fix


# Bedrock ValidationExceptions about the model id, not the request: an unknown or retired
# (EOL) model, or a model that is only offered through an inference profile.
_MODEL_ID_PROBLEMS = (
    "model identifier is invalid",
    "end of its life",
    "on-demand throughput",
)
_CHOOSE_A_MODEL = (
    "choose a current model or inference profile offered in this region and deploy it "
    "(scripts/deploy.sh --bedrock-model-id ID; the deploy preflight checks it)"
)


def bedrock_misconfiguration(code: str, message: str, model_id: str) -> ConfigurationError | None:
    """What to fix when Bedrock's answer to a model call means the model cannot be called as
    configured; None when the error is about this request (or may pass). The LLM Caller and
    the deploy preflight read Bedrock's answers with this one function."""
    said = f"Bedrock {code} for {model_id}: {message}"
    if code == "AccessDeniedException":
        if "not authorized to perform" in message:
            return ConfigurationError(
                said,
                "grant bedrock:InvokeModel on the model (for an inference profile: the profile "
                "and the foundation models it routes to) to the LLM Caller's role; "
                "chalice_app/stage_config.py renders that policy for the configured model",
            )
        return ConfigurationError(
            said,
            f"enable access to {model_id} for this account in the Bedrock console (Model "
            f"access) of this region, or {_CHOOSE_A_MODEL}",
        )
    if code == "ResourceNotFoundException":
        return ConfigurationError(said, _CHOOSE_A_MODEL)
    if code == "ValidationException" and any(p in message.lower() for p in _MODEL_ID_PROBLEMS):
        return ConfigurationError(said, _CHOOSE_A_MODEL)
    return None


class MissingPermissionError(ConfigurationError):
    """S3 denied a read that may meet a missing object: a grant is missing. Components log
    it as an error and leave the message to the queue's retries and its DLQ (and alarm),
    from which it can be redriven once the configuration is fixed."""


@dataclass(frozen=True)
class ObjectReader:
    """An identity that reads objects which may not exist, and the prefixes it probes.

    Each such identity needs ``s3:ListBucket`` on the bucket for these prefixes (an
    ``s3:prefix`` condition), or S3 answers a missing key with 403 instead of 404; a test
    holds the template's and the Chalice policies to this table.
    """

    identity: str
    probed_prefixes: tuple[str, ...]


# The worker GETs the upload (and HEADs it for a hand-sent message) and HEADs its own
# transcript (a redelivered job skips to the hand-off when the transcript is there).
WORKER_READER: Final = ObjectReader("the GPU worker's role", (AUDIO_PREFIX, TRANSCRIPT_PREFIX))
# The Dispatcher HEADs each upload; it may be deleted before the event arrives.
DISPATCHER_READER: Final = ObjectReader("the Dispatcher's role", (AUDIO_PREFIX,))
# The LLM Caller reads the timed transcript and its chunk checkpoints (absent until saved),
# and HEADs its final output before writing it (another recording's is not overwritten).
LLM_CALLER_READER: Final = ObjectReader(
    "the LLM Caller's role", (TRANSCRIPT_PREFIX, LLM_WORK_PREFIX, FINAL_PREFIX)
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


def head_if_present(
    s3: S3Client, reader: ObjectReader, bucket: str, key: str
) -> HeadObjectOutputTypeDef | None:
    """The object's HEAD, or None when it does not exist (``is_missing_object``'s rule: a
    denial raises ``MissingPermissionError``, never reads as "missing")."""
    from botocore.exceptions import ClientError  # here: stage_config.py imports this without boto

    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_missing_object(exc, reader, bucket, key):
            return None
        raise


def raise_if_denied(exc: ClientError, reader: ObjectReader, bucket: str, key: str) -> None:
    """Raise ``MissingPermissionError`` when ``exc`` is S3 denying ``reader`` the object."""
    if _code(exc) in ACCESS_DENIED_CODES:
        folder = key.split("/", 1)[0] + "/" if "/" in key else key
        raise MissingPermissionError(
            f"AccessDenied on {exc.operation_name} s3://{bucket}/{key} (a configuration error, "
            "not a problem of this job)",
            f"{reader.identity} needs s3:GetObject on arn:aws:s3:::{bucket}/{folder}* and "
            f"s3:ListBucket on arn:aws:s3:::{bucket} for s3:prefix {folder}* (without "
            "ListBucket S3 answers a missing object with 403)",
        ) from exc
