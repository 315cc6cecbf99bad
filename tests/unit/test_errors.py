"""The shared error rules: what counts as a missing S3 object, which errors are permanent,
and that a denied read is a configuration error, never "missing"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.correction.correctors import ModelRejectedError, ModelUnavailableError
from gpu_worker.storage.download import SourceMissingError, download_audio
from gpu_worker.transcription.audio import AudioDecodeError
from gpu_worker.transcription.engines import UnsupportedLanguageError
from pipeline_core.errors import (
    MISSING_OBJECT_CODES,
    WORKER_READER,
    ConfigurationError,
    MissingPermissionError,
    PermanentError,
    is_missing_object,
)


def _error(code: str, operation: str = "GetObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "..."}}, operation)


@pytest.mark.parametrize("code", ["404", "NoSuchKey", "NoSuchVersion", "NotFound"])
def test_each_missing_code_means_missing(code: str) -> None:
    assert code in MISSING_OBJECT_CODES
    assert is_missing_object(_error(code), WORKER_READER, "b", "k")


@pytest.mark.parametrize("code", ["NoSuchBucket", "SlowDown", "InternalError", ""])
def test_other_codes_are_not_missing(code: str) -> None:
    assert not is_missing_object(_error(code), WORKER_READER, "b", "k")


def test_an_error_without_a_code_is_not_missing() -> None:
    assert not is_missing_object(ClientError({}, "HeadObject"), WORKER_READER, "b", "k")


@pytest.mark.parametrize(
    ("code", "operation"), [("403", "HeadObject"), ("AccessDenied", "GetObject")]
)
def test_a_denied_read_names_the_missing_grants_and_is_never_missing(
    code: str, operation: str
) -> None:
    """Without s3:ListBucket S3 answers a missing key with 403: that is a configuration
    error of the reader, not a missing object."""
    with pytest.raises(MissingPermissionError) as caught:
        is_missing_object(_error(code, operation), WORKER_READER, "b", "transcriptions/x.timed.txt")
    message = str(caught.value)
    assert message.startswith(f"AccessDenied on {operation} s3://b/transcriptions/x.timed.txt ")
    assert "the GPU worker's role needs s3:GetObject on arn:aws:s3:::b/transcriptions/*" in message
    assert "s3:ListBucket on arn:aws:s3:::b for s3:prefix transcriptions/*" in message
    assert isinstance(caught.value, ConfigurationError)
    assert not isinstance(caught.value, PermanentError)  # the recording is not at fault


def test_what_s3_answers_for_a_missing_object_is_missing(aws: None, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bucket")
    s3.put_bucket_versioning(Bucket="bucket", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket="bucket", Key="here", Body=b"x")
    answers: list[Callable[[], object]] = [
        lambda: s3.get_object(Bucket="bucket", Key="gone"),
        lambda: s3.head_object(Bucket="bucket", Key="gone"),
        lambda: s3.download_file("bucket", "gone", str(tmp_path / "f")),
        lambda: s3.get_object(Bucket="bucket", Key="here", VersionId="no-such-version"),
    ]
    for call in answers:
        with pytest.raises(ClientError) as caught:
            call()
        assert is_missing_object(caught.value, WORKER_READER, "bucket", "gone"), caught.value
    with pytest.raises(SourceMissingError, match="does not exist"):
        download_audio(s3, "bucket", "gone.mp3", None, tmp_path)


@pytest.mark.parametrize(
    ("error", "also"),
    [
        (AudioDecodeError("not audio"), ValueError),
        (SourceMissingError("gone"), Exception),
        (UnsupportedLanguageError("tiny.en", "he"), ValueError),
        (ModelRejectedError("refused"), RuntimeError),
    ],
)
def test_errors_retrying_cannot_fix_are_permanent(error: Exception, also: type) -> None:
    assert isinstance(error, PermanentError)
    assert isinstance(error, also)  # what they were before, for whoever catches that


def test_an_error_worth_retrying_is_not_permanent() -> None:
    assert not isinstance(ModelUnavailableError("throttled"), PermanentError)
