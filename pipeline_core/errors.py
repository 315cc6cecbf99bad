"""What an error means for the job: whether retrying can help, whether an S3 object is gone."""

from __future__ import annotations

from typing import Final

from botocore.exceptions import ClientError

# What S3 answers when the object (or the version asked for) does not exist: GetObject says
# NoSuchKey or NoSuchVersion, HeadObject (and download_file, which starts with one) a bare
# "404" or NotFound, having no body to name the error in. Without s3:ListBucket S3 answers
# a missing key with 403 AccessDenied instead; that is a separate, later issue: a 403 is not
# "missing" here.
MISSING_OBJECT_CODES: Final = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound"})


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


def is_missing_object(exc: ClientError) -> bool:
    """True when ``exc`` says the S3 object (or the version asked for) does not exist."""
    return exc.response.get("Error", {}).get("Code") in MISSING_OBJECT_CODES
