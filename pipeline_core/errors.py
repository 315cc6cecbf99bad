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


def is_missing_object(exc: ClientError) -> bool:
    """True when ``exc`` says the S3 object (or the version asked for) does not exist."""
    return exc.response.get("Error", {}).get("Code") in MISSING_OBJECT_CODES
