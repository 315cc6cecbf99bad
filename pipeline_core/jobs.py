"""The job table (DynamoDB): one item per uploaded object version, and its state.

It makes duplicate deliveries harmless: the Dispatcher's conditional put decides whether
an S3 event is a new job, and each later step moves the job forward only from the states
it expects (``queued -> transcribing -> transcribed -> correcting -> succeeded | failed``),
so a redelivered message finds its work done and skips it.

The row's attribute names are ``JobField``'s; a step that must not run twice at once (the
Dispatcher re-sending a lost message, the LLM Caller correcting a transcript) holds a
``Lease`` on the row.

The table also holds one item per reserved output name (``reserve_output_name``), keyed
``output-name#<digest of the folded name>``, which ``scan`` leaves out: the conditional put
of that item is what keeps two recordings from sharing output files.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from pipeline_core import keys
from pipeline_core.contracts import utc_timestamp

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.literals import ReturnValueType
    from mypy_boto3_dynamodb.type_defs import UpdateItemOutputTypeDef

DEFAULT_TTL_DAYS: Final = 90
# ``JobField.RESULT_SENT_AT``'s value when no Result can name the upload (an unsafe key).
RESULT_NOT_SENDABLE: Final = "not-sendable"


class JobField:
    """The names of the job row's attributes (besides the ``<state>_at`` times of
    ``JobState.at_field``), for every step that writes or reads them."""

    # Every row, from its creation.
    JOB_ID: Final = "job_id"
    STATE: Final = "state"
    BUCKET: Final = "bucket"
    S3_KEY: Final = "s3_key"
    VERSION: Final = "version"
    LANGUAGE: Final = "language"
    DETAILS: Final = "details"
    CREATED_AT: Final = "created_at"
    UPDATED_AT: Final = "updated_at"
    ERROR: Final = "error"
    EXPIRES_AT: Final = "expires_at"  # the table's TTL attribute
    # The Dispatcher: the upload, its output name, its Audio Queue message, its refusal.
    OUTPUT_NAME: Final = "output_name"
    ETAG: Final = "etag"
    VERSION_ID: Final = "version_id"
    SIZE_BYTES: Final = "size_bytes"
    GLOSSARY: Final = "glossary"  # the domain glossary the Dispatcher chose
    ENQUEUED_AT: Final = "enqueued_at"
    AUDIO_MESSAGE_ID: Final = "audio_message_id"
    ENQUEUE_LEASE_UNTIL: Final = "enqueue_lease_until"
    REJECTED_BY: Final = "rejected_by"
    SPEAKERS: Final = "speakers"  # the recording's speakers request, when it made one
    # The worker: its deliveries, progress, the transcript and the hand-off.
    ATTEMPTS: Final = "attempts"
    WORKER_ID: Final = "worker_id"
    PROGRESS_PERCENT: Final = "progress_percent"
    TIMED_KEY: Final = "timed_key"
    TIMED_VERSION_ID: Final = "timed_version_id"  # the S3 version of the timed transcript
    AUDIO_SECONDS: Final = "audio_seconds"
    TRANSCRIBE_SECONDS: Final = "transcribe_seconds"
    REAL_TIME_FACTOR: Final = "real_time_factor"
    MODEL: Final = "model"
    # Set once the LLM job for the transcript was sent; absent means "maybe not sent".
    LLM_JOB_SENT_AT: Final = "llm_job_sent_at"
    # The LLM Caller: its passes, retries and the correction's figures.
    CORRECTION_LEASE_UNTIL: Final = "correction_lease_until"
    CORRECTION_PASSES: Final = "correction_passes"
    RECEIVE_COUNT: Final = "receive_count"
    LAST_ERROR: Final = "last_error"
    LAST_ERROR_AT: Final = "last_error_at"
    CHUNKS_TOTAL: Final = "chunks_total"
    CHUNKS_DONE: Final = "chunks_done"
    CHUNKS_UNCORRECTED: Final = "chunks_uncorrected"
    LINES_TOTAL: Final = "lines_total"
    LINES_CORRECTED: Final = "lines_corrected"
    LINES_UNCORRECTED: Final = "lines_uncorrected"
    LINES_CHANGED: Final = "lines_changed"
    LINES_REFUSED: Final = "lines_refused"  # lines an edit was proposed for and refused
    REFUSED_EDITS: Final = "refused_edits"  # why, for the first few
    INPUT_TOKENS: Final = "input_tokens"  # as the model server reported them
    OUTPUT_TOKENS: Final = "output_tokens"
    CACHE_READ_TOKENS: Final = "cache_read_tokens"  # input read from the prompt cache
    CACHE_WRITE_TOKENS: Final = "cache_write_tokens"  # input written to it
    MODEL_CALLS: Final = "model_calls"
    UNCORRECTED_REASONS: Final = "uncorrected_reasons"
    CORRECTOR: Final = "corrector"
    RESULT_STATUS: Final = "result_status"
    OUTPUT_FILE: Final = "output_file"
    TIMED_OUTPUT_FILE: Final = "timed_output_file"
    # The Dispatcher and the LLM Caller: when the job's Result was sent.
    RESULT_SENT_AT: Final = "result_sent_at"
    # The stage that failed the job before sending its Result (the LLM Caller).
    FAILED_BY: Final = "failed_by"
    # ``onprem redrive``: when a failed job was sent back to a stage.
    REDRIVEN_AT: Final = "redriven_at"
    # An output name's reservation item (not a job): what it is, and whose.
    RECORD_KIND: Final = "record_kind"


# ``JobField.RECORD_KIND`` of an output name's reservation, and its key's prefix.
OUTPUT_NAME_KIND: Final = "output-name"
_OUTPUT_NAME_KEY_PREFIX: Final = OUTPUT_NAME_KIND + "#"


class JobState(StrEnum):
    QUEUED = "queued"
    TRANSCRIBING = "transcribing"
    TRANSCRIBED = "transcribed"
    CORRECTING = "correcting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED)

    @property
    def at_field(self) -> str:
        """The attribute that records when the job entered this state: ``<state>_at``."""
        return f"{self.value}_at"


ACTIVE_STATES: Final = tuple(state for state in JobState if not state.is_final)
# The order of the happy path, to tell "already at or past this step".
_ORDER: Final = {state: rank for rank, state in enumerate(JobState)}


def at_or_after(state: JobState, step: JobState) -> bool:
    """True when a job in ``state`` has already reached ``step`` (failed counts as past all)."""
    return state is JobState.FAILED or _ORDER[state] >= _ORDER[step]


def _output_name_key(name: str) -> str:
    """The reservation item's key: a digest of the folded name (bounded in length, and
    never the 32 hex digits of a job id)."""
    return _OUTPUT_NAME_KEY_PREFIX + hashlib.sha256(keys.folded_name(name).encode()).hexdigest()


def job_id_for(bucket: str, key: str, version: str) -> str:
    """A job is one version of one object: the same upload seen twice is the same job."""
    digest = hashlib.sha256(f"{bucket}\n{key}\n{version}".encode()).hexdigest()
    return digest[:32]


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    state: JobState
    bucket: str
    s3_key: str
    version: str
    language: str | None = None
    details: str = ""
    created_at: str = ""
    updated_at: str = ""
    error: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> JobRecord:
        known = {
            JobField.JOB_ID, JobField.STATE, JobField.BUCKET, JobField.S3_KEY, JobField.VERSION,
            JobField.LANGUAGE, JobField.DETAILS, JobField.CREATED_AT, JobField.UPDATED_AT,
            JobField.ERROR,
        }  # fmt: skip
        return cls(
            job_id=item[JobField.JOB_ID],
            state=JobState(item[JobField.STATE]),
            bucket=item.get(JobField.BUCKET, ""),
            s3_key=item.get(JobField.S3_KEY, ""),
            version=item.get(JobField.VERSION, ""),
            language=item.get(JobField.LANGUAGE),
            details=item.get(JobField.DETAILS, ""),
            created_at=item.get(JobField.CREATED_AT, ""),
            updated_at=item.get(JobField.UPDATED_AT, ""),
            error=item.get(JobField.ERROR),
            attributes={k: v for k, v in item.items() if k not in known},
        )

    @property
    def output_name(self) -> str | None:
        """The name of the job's files (``pipeline_core.keys``): the one the Dispatcher
        reserved, else (a row from before reserved names) the upload's plain stem; None for
        an upload whose key cannot name files."""
        reserved = self.attributes.get(JobField.OUTPUT_NAME)
        if reserved:
            return str(reserved)
        try:
            return keys.stem(self.s3_key)
        except keys.InvalidKeyError:
            return None


@dataclass(frozen=True)
class Moved:
    """What ``JobTable.move`` did, and the row it saw."""

    moved: bool
    record: JobRecord | None


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Lease:
    """A short-lived claim on a job row, for a step that must not run twice at once.

    ``field`` holds the epoch milliseconds until which the claim holds, ``<field>_owner``
    who holds it. A claim lapses by itself, so a Lambda that died holding one blocks nobody
    for longer than ``seconds``.
    """

    field: str
    owner: str
    seconds: int

    @property
    def owner_field(self) -> str:
        return f"{self.field}_owner"

    def taken(self, now_ms: int) -> dict[str, Any]:
        """The attributes that record this claim, taken at ``now_ms``."""
        return {self.field: now_ms + self.seconds * 1000, self.owner_field: self.owner}


class _Update:
    """One conditional UpdateItem, every attribute name and value behind a placeholder."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self.assignments: list[str] = []
        self.removals: list[str] = []
        self.conditions: list[str] = []

    def name(self, attribute: str) -> str:
        for placeholder, known in self.names.items():
            if known == attribute:
                return placeholder
        placeholder = f"#f{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def set(self, fields: Mapping[str, Any]) -> None:
        # A None field is "nothing to record": it must not reach the update expression.
        for attribute, value in fields.items():
            if value is not None:
                self.assignments.append(f"{self.name(attribute)} = {self.value(value)}")

    def remove(self, attributes: Iterable[str]) -> None:
        self.removals.extend(self.name(attribute) for attribute in attributes)

    def expression(self) -> str:
        removed = f" REMOVE {', '.join(self.removals)}" if self.removals else ""
        return "SET " + ", ".join(self.assignments) + removed

    def add(self, attribute: str, step: int = 1) -> None:
        """Count ``attribute`` up (or down) by ``step``, from 0 where the row has none yet."""
        counter = self.name(attribute)
        self.assignments.append(
            f"{counter} = if_not_exists({counter}, {self.value(0)}) + {self.value(step)}"
        )

    def require(self, condition: str) -> None:
        self.conditions.append(condition)

    def require_job(self, states: Iterable[JobState] | None = None) -> None:
        """The job exists (and, when ``states`` are given, is in one of them)."""
        self.require(f"attribute_exists({self.name(JobField.JOB_ID)})")
        if states is None:
            return
        allowed = list(dict.fromkeys(states))
        if not allowed:
            raise ValueError("at least one expected state is needed")
        listed = ", ".join(self.value(state.value) for state in allowed)
        self.require(f"{self.name(JobField.STATE)} IN ({listed})")


def _written(write: Callable[[], object]) -> bool:
    """Run a conditional write; False when its condition did not hold (nothing written)."""
    try:
        write()
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


class JobTable:
    """Typed access to the job table through a boto3 DynamoDB client."""

    def __init__(
        self, client: DynamoDBClient, table_name: str, ttl_days: int = DEFAULT_TTL_DAYS
    ) -> None:
        self._client = client
        self._table = table_name
        self._ttl_seconds = ttl_days * 86400
        self._to_ddb = TypeSerializer()
        self._from_ddb = TypeDeserializer()

    def _serialize(self, values: Mapping[str, Any]) -> dict[str, Any]:
        # DynamoDB numbers are decimals; durations and percentages arrive as floats.
        return {
            k: self._to_ddb.serialize(Decimal(str(v)) if isinstance(v, float) else v)
            for k, v in values.items()
            if v is not None
        }

    def _update(
        self, job_id: str, update: _Update, returns: ReturnValueType = "NONE"
    ) -> UpdateItemOutputTypeDef:
        return self._client.update_item(
            TableName=self._table,
            Key=self._serialize({JobField.JOB_ID: job_id}),
            UpdateExpression=update.expression(),
            ConditionExpression=" AND ".join(update.conditions),
            ExpressionAttributeNames=update.names,
            ExpressionAttributeValues=self._serialize(update.values),
            ReturnValues=returns,
            ReturnValuesOnConditionCheckFailure="ALL_OLD" if returns != "NONE" else "NONE",
        )

    def create(
        self,
        *,
        job_id: str,
        bucket: str,
        s3_key: str,
        version: str,
        language: str | None,
        details: str,
        state: JobState = JobState.QUEUED,
        error: str | None = None,
        extra: Mapping[str, Any] | None = None,
        lease: Lease | None = None,
    ) -> bool:
        """Record a new job (holding ``lease`` if given); False (and nothing written) when
        the job already exists."""
        return self.create_or_read(
            job_id=job_id,
            bucket=bucket,
            s3_key=s3_key,
            version=version,
            language=language,
            details=details,
            state=state,
            error=error,
            extra=extra,
            lease=lease,
        ).moved

    def create_or_read(
        self,
        *,
        job_id: str,
        bucket: str,
        s3_key: str,
        version: str,
        language: str | None,
        details: str,
        state: JobState = JobState.QUEUED,
        error: str | None = None,
        extra: Mapping[str, Any] | None = None,
        lease: Lease | None = None,
    ) -> Moved:
        """``create`` that also answers with the row, in the same one PutItem: as written,
        or (nothing written) the job's row as it already stood."""
        now = utc_timestamp()
        item = {
            **(extra or {}),
            **(lease.taken(_now_ms()) if lease else {}),
            JobField.JOB_ID: job_id,
            JobField.STATE: state.value,
            JobField.BUCKET: bucket,
            JobField.S3_KEY: s3_key,
            JobField.VERSION: version,
            JobField.LANGUAGE: language,
            JobField.DETAILS: details,
            JobField.CREATED_AT: now,
            JobField.UPDATED_AT: now,
            state.at_field: now,
            JobField.ERROR: error,
            JobField.EXPIRES_AT: int(time.time()) + self._ttl_seconds,
        }
        existing = self._put_new(item)
        if existing is not None:
            return Moved(False, JobRecord.from_item(existing))
        return Moved(True, JobRecord.from_item({k: v for k, v in item.items() if v is not None}))

    def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        expected: Iterable[JobState],
        fields: Mapping[str, Any] | None = None,
        clear: Iterable[str] = (),
    ) -> bool:
        """Move a job to ``to`` if it is in one of the ``expected`` states, removing the
        ``clear`` attributes.

        Returns False, writing nothing, when the job is missing or in another state: the
        caller then reads the job to learn what happened (usually a duplicate delivery).
        """
        now = utc_timestamp()
        update = _Update()
        update.set(
            {**(fields or {}), JobField.STATE: to.value, JobField.UPDATED_AT: now, to.at_field: now}
        )
        update.remove(clear)
        update.require_job(expected)
        return _written(lambda: self._update(job_id, update))

    def move(
        self,
        job_id: str,
        to: JobState,
        *,
        expected: Iterable[JobState],
        fields: Mapping[str, Any] | None = None,
        count: str | None = None,
        count_by: int = 1,
        when: Mapping[str, Any] | None = None,
    ) -> Moved:
        """``transition`` that also answers with the row, in the same one UpdateItem: as
        it is after the move, or as it stood when the move was refused (None: no such job).
        ``count`` names an attribute the move adds ``count_by`` to (from 0); ``when`` holds
        attribute values the row must have besides its state."""
        now = utc_timestamp()
        update = _Update()
        update.set(
            {**(fields or {}), JobField.STATE: to.value, JobField.UPDATED_AT: now, to.at_field: now}
        )
        if count:
            update.add(count, count_by)
        update.require_job(expected)
        for attribute, value in (when or {}).items():
            update.require(f"{update.name(attribute)} = {update.value(value)}")
        return self._moved(job_id, update)

    def _moved(self, job_id: str, update: _Update) -> Moved:
        """Run ``update``, answered with the row after it, or as it stood when refused."""
        try:
            response = self._update(job_id, update, returns="ALL_NEW")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            item: Mapping[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
            return Moved(False, JobRecord.from_item(self._deserialize(item)) if item else None)
        return Moved(True, JobRecord.from_item(self._deserialize(response["Attributes"])))

    def update_fields(self, job_id: str, fields: Mapping[str, Any]) -> None:
        """Record figures (progress, durations) without changing the state."""
        if not fields:
            return
        update = _Update()
        update.set({**fields, JobField.UPDATED_AT: utc_timestamp()})
        update.require_job()
        self._update(job_id, update)

    def fail(
        self, job_id: str, error: str, *, superseded: bool = False, by: str | None = None
    ) -> bool:
        """Mark a job failed with a reason the user can read, from any unfinished state;
        ``superseded`` (a newer upload of the same file delivers instead) is recorded as the
        job's result status, and ``by`` (``FAILED_BY``) which stage failed it, where that
        stage sends the failure's Result after the mark and must send it again should its
        send not have happened (``RESULT_SENT_AT`` absent)."""
        fields: dict[str, object] = {JobField.ERROR: error, JobField.FAILED_BY: by}
        if superseded:
            fields[JobField.RESULT_STATUS] = "superseded"
        return self.transition(job_id, JobState.FAILED, expected=ACTIVE_STATES, fields=fields)

    def claim(
        self,
        job_id: str,
        lease: Lease,
        *,
        states: Iterable[JobState],
        to: JobState | None = None,
        unless_present: str | None = None,
        count: str | None = None,
    ) -> bool:
        """Take ``lease`` on a job in one of ``states``, moving it ``to`` a state if given and
        adding one to the ``count`` attribute if given.

        False, writing nothing, when the job is missing, in another state, already done
        (``unless_present`` is set) or claimed by another owner whose lease has not lapsed.
        """
        update = self._claim_update(lease, states, to, unless_present, count)
        return _written(lambda: self._update(job_id, update))

    def claim_and_read(
        self,
        job_id: str,
        lease: Lease,
        *,
        states: Iterable[JobState],
        to: JobState | None = None,
        count: str | None = None,
    ) -> Moved:
        """``claim`` that also answers with the row, in the same one UpdateItem: as it is
        after the claim, or as it stood when the claim was refused (None: no such job)."""
        return self._moved(job_id, self._claim_update(lease, states, to, None, count))

    def _claim_update(
        self,
        lease: Lease,
        states: Iterable[JobState],
        to: JobState | None,
        unless_present: str | None,
        count: str | None,
    ) -> _Update:
        now, now_ms = utc_timestamp(), _now_ms()
        update = _Update()
        update.set({**lease.taken(now_ms), JobField.UPDATED_AT: now})
        if to is not None:
            update.set({JobField.STATE: to.value, to.at_field: now})
        update.require_job(states)
        held_until = update.name(lease.field)
        update.require(
            f"(attribute_not_exists({held_until}) OR {held_until} < {update.value(now_ms)})"
        )
        if unless_present:
            update.require(f"attribute_not_exists({update.name(unless_present)})")
        if count:
            update.add(count)
        return update

    def release(self, job_id: str, lease: Lease) -> None:
        """Give ``lease`` back early (only if still ours), so that the next delivery need
        not wait for it to lapse."""
        update = _Update()
        update.set({lease.field: 0})
        update.require(f"{update.name(lease.owner_field)} = {update.value(lease.owner)}")
        _written(lambda: self._update(job_id, update))  # False: no longer ours to give back

    def reserve_output_name(self, bucket: str, source_key: str) -> str:
        """The output name of the upload ``source_key``: the first of
        ``keys.output_name_candidates`` that no other upload holds (case-folded), taken
        with a conditional put, or the one this upload took before (a re-upload, a
        redelivered event, a retried dispatch). Never two uploads with one name."""
        source_key = keys.audio_key(source_key)
        for name in keys.output_name_candidates(source_key):
            keys.check_output_name(name)
            item_key = _output_name_key(name)
            item = {
                JobField.JOB_ID: item_key,
                JobField.RECORD_KIND: OUTPUT_NAME_KIND,
                JobField.OUTPUT_NAME: name,
                JobField.BUCKET: bucket,
                JobField.S3_KEY: source_key,
                JobField.CREATED_AT: utc_timestamp(),
            }
            holder = self._put_new(item)
            if holder is None:
                return name
            if holder.get(JobField.BUCKET) == bucket and holder.get(JobField.S3_KEY) == source_key:
                return str(holder[JobField.OUTPUT_NAME])
        # Not reached: the last candidate, a digest of the exact key, is this upload's alone.
        raise RuntimeError(f"no output name is free for {source_key!r}")

    def _put_new(self, item: Mapping[str, Any]) -> dict[str, Any] | None:
        """Put ``item`` unless its key exists: None when written, else (nothing written) the
        item that holds the key, as the refused put answers it (no GetItem)."""
        try:
            self._client.put_item(
                TableName=self._table,
                Item=self._serialize(item),
                ConditionExpression=f"attribute_not_exists({JobField.JOB_ID})",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            held: Mapping[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
            if not held:  # the holder vanished between the check and the answer
                raise RuntimeError(f"{item[JobField.JOB_ID]!r} refused, with no item") from exc
            return self._deserialize(held)
        return None

    def _get_item(self, item_key: str) -> dict[str, Any] | None:
        response = self._client.get_item(
            TableName=self._table,
            Key=self._serialize({JobField.JOB_ID: item_key}),
            ConsistentRead=True,
        )
        item = response.get("Item")
        return None if item is None else self._deserialize(item)

    def get(self, job_id: str) -> JobRecord | None:
        item = self._get_item(job_id)
        return None if item is None else JobRecord.from_item(item)

    def scan(self, states: Iterable[JobState] | None = None) -> Iterator[JobRecord]:
        """Every job, optionally only those in ``states``; paginates through the table.
        Output name reservations are not jobs and are left out."""
        wanted = {state.value for state in states} if states is not None else None
        paginator = self._client.get_paginator("scan")
        for page in paginator.paginate(TableName=self._table):
            for item in page.get("Items", []):
                values = self._deserialize(item)
                if values.get(JobField.RECORD_KIND) == OUTPUT_NAME_KIND:
                    continue
                record = JobRecord.from_item(values)
                if wanted is None or record.state.value in wanted:
                    yield record

    def _deserialize(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self._from_ddb.deserialize(v) for k, v in item.items()}
