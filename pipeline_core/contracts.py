"""The messages the pipeline's parts exchange: the system's public API.

One definition each, used by the Lambda functions, the GPU worker and the on-prem client.
Every message is validated when it is made and when it is read; a malformed one raises
``ContractError`` naming the message type and the field, never a bare ``KeyError``.

The original design's example messages round-trip exactly: optional fields that are unset
are left out of the JSON, fields keep the design's order, and non-ASCII text (Hebrew
``details``) stays as it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline_core import keys
from pipeline_core.glossary import NAME_PATTERN as GLOSSARY_NAME_PATTERN
from pipeline_core.languages import UnknownLanguageError, normalize_language
from pipeline_core.speakers import normalize_speakers

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
MAX_DETAILS_CHARS: Final = 2000  # context for the corrector's prompt, not a document
MAX_ERROR_CHARS: Final = 4000
MAX_MESSAGE_BYTES: Final = 256 * 1024  # SQS's limit on one message body

# ``superseded``: a newer upload of the same source replaced this one before its outputs were
# written; the newer one's Result delivers the transcript under the same name.
ResultStatus = Literal["success", "success_uncorrected", "failed", "superseded"]
RESULT_STATUSES: Final[tuple[str, ...]] = (
    "success",
    "success_uncorrected",
    "failed",
    "superseded",
)
# The statuses that deliver no output: a Result with one says why in ``error``.
UNDELIVERED_STATUSES: Final[tuple[str, ...]] = ("failed", "superseded")


class ContractError(ValueError):
    """A message that does not follow its contract."""

    def __init__(self, message_type: str, field: str, reason: str) -> None:
        self.message_type = message_type
        self.field = field
        self.reason = reason
        super().__init__(f"invalid {message_type} message: field {field!r}: {reason}")


class _FieldError(ValueError):
    """Raised by whole-message checks, to name the field the problem is about."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(reason)


def _contract_error(message_type: str, exc: ValidationError) -> ContractError:
    first = exc.errors()[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, _FieldError):
        return ContractError(message_type, cause.field, str(cause))
    field = ".".join(str(part) for part in first["loc"]) or "<body>"
    if first["type"] == "missing":
        return ContractError(message_type, field, "missing")
    reason = first["msg"].removeprefix("Value error, ")
    return ContractError(message_type, field, reason)


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with a ``Z``, to the second: ``2025-01-04T10:06:00Z``."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Message(BaseModel):
    # Unknown fields are ignored so that an older reader accepts a newer writer's message.
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)
    message_type: ClassVar[str] = "message"

    @classmethod
    def from_json(cls, body: str | bytes) -> Self:
        """Parse and validate one message body."""
        if len(body) > MAX_MESSAGE_BYTES:
            raise ContractError(
                cls.message_type, "<body>", f"larger than {MAX_MESSAGE_BYTES} bytes"
            )
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ContractError(cls.message_type, "<body>", f"not valid JSON ({exc})") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: object) -> Self:
        if not isinstance(data, dict):
            raise ContractError(cls.message_type, "<body>", "not a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _contract_error(cls.message_type, exc) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def _check_output_name(value: str | None) -> str | None:
    return None if value is None else keys.check_output_name(value)


def _check_language(value: str) -> str:
    try:
        normalize_language(value)
    except UnknownLanguageError as exc:
        raise ValueError(str(exc)) from None
    return value


def _check_speakers(value: str | None) -> str | None:
    return None if value is None else normalize_speakers(value)


class AudioJob(_Message):
    """Dispatcher -> worker, on the Audio Queue: one uploaded recording to transcribe."""

    message_type: ClassVar[str] = "audio job"

    s3_key: str = Field(min_length=1)
    language: str = Field(min_length=1, max_length=64)
    details: str = Field(default="", max_length=MAX_DETAILS_CHARS)
    job_id: str | None = Field(default=None, min_length=1, max_length=128)
    bucket: str | None = None
    etag: str | None = None
    version_id: str | None = None
    output_name: str | None = Field(default=None, min_length=1)
    schema_version: int | None = None
    speakers: str | None = None  # "auto", "off" or a number (pipeline_core.speakers)
    # The domain glossary the Dispatcher chose (``pipeline_core.glossary.choose``; "none": no
    # glossary); absent from messages sent before glossaries were chosen.
    glossary: str | None = Field(default=None, pattern=GLOSSARY_NAME_PATTERN)

    @field_validator("s3_key")
    @classmethod
    def _key_is_safe(cls, value: str) -> str:
        keys.audio_key(value)
        return value

    _language_is_known = field_validator("language")(_check_language)
    _output_name_is_safe = field_validator("output_name")(_check_output_name)
    _speakers_are_known = field_validator("speakers")(_check_speakers)

    @property
    def object_key(self) -> str:
        """The full key under ``audio-input/``, whichever form the message used."""
        return keys.audio_key(self.s3_key)

    @property
    def resolved_output_name(self) -> str:
        """The name of this recording's files: the one the Dispatcher reserved, or for a
        message without one (sent before names were reserved, or by hand) the plain stem."""
        return self.output_name or keys.stem(self.object_key)

    @property
    def language_code(self) -> str:
        return normalize_language(self.language)


class LlmJob(_Message):
    """Worker -> LLM Caller, on the LLM Queue: one timed transcript to correct."""

    message_type: ClassVar[str] = "LLM job"

    timed_key: str = Field(min_length=1)
    details: str = Field(default="", max_length=MAX_DETAILS_CHARS)
    language: str = Field(min_length=1, max_length=64)
    job_id: str | None = Field(default=None, min_length=1, max_length=128)
    source_key: str | None = None
    # The S3 version the worker wrote: a newer upload of the same recording may have
    # replaced the transcript at ``timed_key`` since, and this job corrects its own.
    timed_version_id: str | None = Field(default=None, min_length=1)
    schema_version: int | None = None
    glossary: str | None = Field(default=None, pattern=GLOSSARY_NAME_PATTERN)  # the AudioJob's

    @field_validator("timed_key")
    @classmethod
    def _timed_key_is_ours(cls, value: str) -> str:
        keys.stem_from_timed_key(value)
        return value

    @field_validator("source_key")
    @classmethod
    def _source_key_is_audio(cls, value: str | None) -> str | None:
        return None if value is None else keys.audio_key(value)

    _language_is_known = field_validator("language")(_check_language)

    @property
    def stem(self) -> str:
        return keys.stem_from_timed_key(self.timed_key)

    @property
    def language_code(self) -> str:
        return normalize_language(self.language)


class LineCounts(NamedTuple):
    """A Result's ``lines_*`` fields."""

    lines_corrected: int
    lines_refused: int
    lines_left: int


class Result(_Message):
    """LLM Caller (or Dispatcher/worker on failure) -> on-prem poller, on the Results Queue."""

    message_type: ClassVar[str] = "result"

    source_file: str = Field(min_length=1)
    output_file: str | None = None
    status: ResultStatus
    timestamp: str
    error: str | None = Field(default=None, max_length=MAX_ERROR_CHARS)
    job_id: str | None = None
    timed_output_file: str | None = None
    output_name: str | None = Field(default=None, min_length=1)
    schema_version: int | None = None
    # What correction did, in transcript lines (optional: absent from failures, from a run
    # without a corrector's figures and from older messages): changed by an accepted edit;
    # with an edit the validator refused (kept as recognised); left as recognised.
    lines_corrected: int | None = Field(default=None, ge=0)
    lines_refused: int | None = Field(default=None, ge=0)
    lines_left: int | None = Field(default=None, ge=0)

    _output_name_is_safe = field_validator("output_name")(_check_output_name)

    @field_validator("source_file")
    @classmethod
    def _source_is_audio(cls, value: str) -> str:
        keys.audio_key(value)
        return value

    @field_validator("output_file", "timed_output_file")
    @classmethod
    def _is_s3_uri(cls, value: str | None) -> str | None:
        if value is not None:
            keys.parse_s3_uri(value)
        return value

    @field_validator("timestamp")
    @classmethod
    def _is_utc_iso8601(cls, value: str) -> str:
        if not value.endswith("Z"):
            raise ValueError("must be ISO 8601 UTC ending in 'Z', e.g. 2025-01-04T10:06:00Z")
        try:
            datetime.fromisoformat(value[:-1] + "+00:00")
        except ValueError:
            raise ValueError("must be ISO 8601 UTC, e.g. 2025-01-04T10:06:00Z") from None
        return value

    @model_validator(mode="after")
    def _status_has_what_it_needs(self) -> Self:
        if self.status in UNDELIVERED_STATUSES and not self.error:
            raise _FieldError("error", f"a {self.status} result must say why")
        if self.status not in UNDELIVERED_STATUSES and not self.output_file:
            raise _FieldError("output_file", f"a {self.status!r} result must name its output")
        return self

    @classmethod
    def success(
        cls,
        source_file: str,
        output_file: str,
        *,
        status: ResultStatus = "success",
        timed_output_file: str | None = None,
        job_id: str | None = None,
        output_name: str | None = None,
        line_counts: LineCounts | None = None,
    ) -> Result:
        """A finished job's Result: ``success``, or ``success_uncorrected`` when its text was
        not (fully) corrected."""
        if status in UNDELIVERED_STATUSES:
            raise ContractError(
                cls.message_type, "status", f"a {status} result is Result.failure's"
            )
        counts = {} if line_counts is None else line_counts._asdict()
        return cls.from_dict(
            {
                "source_file": keys.audio_key(source_file),
                "output_file": output_file,
                "status": status,
                "timestamp": utc_timestamp(),
                "job_id": job_id,
                "timed_output_file": timed_output_file,
                "output_name": output_name,
                "schema_version": SCHEMA_VERSION,
                **counts,
            }
        )

    @classmethod
    def failure(
        cls,
        source_file: str,
        error: str,
        job_id: str | None = None,
        output_name: str | None = None,
        *,
        superseded: bool = False,
    ) -> Result:
        """A Result with no output: ``failed`` with its reason, or ``superseded`` (a newer
        upload of the same source took the job's output name first)."""
        return cls(
            source_file=keys.audio_key(source_file),
            status="superseded" if superseded else "failed",
            timestamp=utc_timestamp(),
            error=error[:MAX_ERROR_CHARS],
            job_id=job_id,
            output_name=output_name,
            schema_version=SCHEMA_VERSION,
        )

    @property
    def resolved_output_name(self) -> str:
        """The name of the recording's files (its failure report's too); a Result without
        one (sent before names were reserved) names them after the plain stem."""
        return self.output_name or keys.stem(self.source_file)


def send_to_queue(sqs: SQSClient, queue_url: str, message: AudioJob | LlmJob | Result) -> str:
    """Send one contract message to an SQS queue; returns the SQS message id."""
    return sqs.send_message(QueueUrl=queue_url, MessageBody=message.to_json())["MessageId"]


# The message attributes of a Result's notification, which subscribers' filter policies
# match (docs/operations.md, "Notifications"): the Result's status, the recording's language
# as its Whisper code (``he``), and the upload's key (a prefix filter picks a folder).
NOTIFICATION_STATUS: Final = "status"
NOTIFICATION_LANGUAGE: Final = "language"
NOTIFICATION_SOURCE_FILE: Final = "source_file"


def notification_attributes(
    result: Result, language: str | None = None
) -> dict[str, dict[str, str]]:
    """The SNS message attributes of ``result``; ``language`` (a name or code) is left out
    when it is unknown or not a language, since SNS refuses an empty attribute value."""
    attributes = {
        NOTIFICATION_STATUS: result.status,
        NOTIFICATION_SOURCE_FILE: result.source_file,
    }
    if language:
        with contextlib.suppress(UnknownLanguageError):
            attributes[NOTIFICATION_LANGUAGE] = normalize_language(language)
    return {name: {"DataType": "String", "StringValue": text} for name, text in attributes.items()}


@dataclass(frozen=True)
class ResultTopic:
    """The stack's notification topic (``NotificationTopic``), to which ``send_result``
    publishes each Result it sends: the Result's JSON as the message, with
    ``notification_attributes``."""

    sns: Any  # an SNS client (its stubs, mypy_boto3_sns, are not among the dev stubs)
    topic_arn: str

    @classmethod
    def configured(cls, sns: Any, topic_arn: str | None) -> ResultTopic | None:
        """The topic a runtime's settings name, or None where they name none."""
        if topic_arn is None:
            return None
        if sns is None:
            raise ValueError(f"a notification topic ({topic_arn}) needs an SNS client")
        return cls(sns, topic_arn)

    def publish(self, result: Result, language: str | None = None) -> str:
        response = self.sns.publish(
            TopicArn=self.topic_arn,
            Message=result.to_json(),
            # For e-mail subscribers; SNS allows only ASCII here, so no (Hebrew) file name.
            Subject=f"Transcription {result.status}",
            MessageAttributes=notification_attributes(result, language),
        )
        return str(response["MessageId"])


def send_result(
    sqs: SQSClient,
    results_queue_url: str,
    result: Result,
    *,
    topic: ResultTopic | None = None,
    language: str | None = None,
) -> str:
    """Send ``result`` to the Results Queue, then publish it to ``topic``; returns the SQS
    message id.

    The queue comes first and a failed publish is logged, never raised: the Results Queue is
    the delivery of record (the on-prem poller), the topic a copy for whoever subscribes.
    Raising after the send would make the caller retry it and put a second Result on the
    queue; publishing first would notify of a Result that may never be sent. So a Result is
    on the queue once per send whatever SNS does, and its notification is best effort: lost
    when the publish fails or the process dies between the two calls (the log line below
    says which), repeated only when the Result itself is re-sent.
    """
    message_id = send_to_queue(sqs, results_queue_url, result)
    if topic is not None:
        try:
            topic.publish(result, language)
        except Exception:  # any failure: raising would duplicate the Result (above)
            log.error(
                "the Result is on the Results Queue, but its notification was not published",
                exc_info=True,
                extra={
                    "topic_arn": topic.topic_arn,
                    "status": result.status,
                    "source_file": result.source_file,
                    "job_id": result.job_id,
                },
            )
    return message_id
