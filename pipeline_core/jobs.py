"""The job table (DynamoDB): one item per uploaded object version, and its state.

It makes duplicate deliveries harmless: the Dispatcher's conditional put decides whether
an S3 event is a new job, and each later step moves the job forward only from the states
it expects (``queued -> transcribing -> transcribed -> correcting -> succeeded | failed``),
so a redelivered message finds its work done and skips it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from pipeline_core.contracts import utc_timestamp

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DEFAULT_TTL_DAYS: Final = 90


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


ACTIVE_STATES: Final = tuple(state for state in JobState if not state.is_final)
# The order of the happy path, to tell "already at or past this step".
_ORDER: Final = {state: rank for rank, state in enumerate(JobState)}


def at_or_after(state: JobState, step: JobState) -> bool:
    """True when a job in ``state`` has already reached ``step`` (failed counts as past all)."""
    return state is JobState.FAILED or _ORDER[state] >= _ORDER[step]


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
            "job_id", "state", "bucket", "s3_key", "version", "language", "details",
            "created_at", "updated_at", "error",
        }  # fmt: skip
        return cls(
            job_id=item["job_id"],
            state=JobState(item["state"]),
            bucket=item.get("bucket", ""),
            s3_key=item.get("s3_key", ""),
            version=item.get("version", ""),
            language=item.get("language"),
            details=item.get("details", ""),
            created_at=item.get("created_at", ""),
            updated_at=item.get("updated_at", ""),
            error=item.get("error"),
            attributes={k: v for k, v in item.items() if k not in known},
        )


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
    ) -> bool:
        """Record a new job; False (and nothing written) when the job already exists."""
        now = utc_timestamp()
        item = {
            **(extra or {}),
            "job_id": job_id,
            "state": state.value,
            "bucket": bucket,
            "s3_key": s3_key,
            "version": version,
            "language": language,
            "details": details,
            "created_at": now,
            "updated_at": now,
            f"{state.value}_at": now,
            "error": error,
            "expires_at": int(time.time()) + self._ttl_seconds,
        }
        try:
            self._client.put_item(
                TableName=self._table,
                Item=self._serialize(item),
                ConditionExpression="attribute_not_exists(job_id)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        expected: Iterable[JobState],
        fields: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move a job to ``to`` if it is in one of the ``expected`` states.

        Returns False, writing nothing, when the job is missing or in another state: the
        caller then reads the job to learn what happened (usually a duplicate delivery).
        """
        allowed = list(dict.fromkeys(expected))
        if not allowed:
            raise ValueError("transition needs at least one expected state")
        now = utc_timestamp()
        # A None field is "nothing to record": it must not reach the update expression.
        values: dict[str, Any] = {
            **{k: v for k, v in (fields or {}).items() if v is not None},
            "state": to.value,
            "updated_at": now,
            f"{to.value}_at": now,
        }
        names = {f"#f{i}": name for i, name in enumerate(values)}
        placeholders = {name: f"#f{i}" for i, name in enumerate(values)}
        assignments = ", ".join(f"{placeholders[name]} = :v{i}" for i, name in enumerate(values))
        expression_values = {f":v{i}": value for i, value in enumerate(values.values())}
        expression_values.update({f":e{i}": state.value for i, state in enumerate(allowed)})
        condition = (
            f"attribute_exists(job_id) AND {placeholders['state']} IN "
            f"({', '.join(f':e{i}' for i in range(len(allowed)))})"
        )
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._serialize({"job_id": job_id}),
                UpdateExpression=f"SET {assignments}",
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=self._serialize(expression_values),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def update_fields(self, job_id: str, fields: Mapping[str, Any]) -> None:
        """Record figures (progress, durations) without changing the state."""
        if not fields:
            return
        values = {
            **{k: v for k, v in fields.items() if v is not None},
            "updated_at": utc_timestamp(),
        }
        names = {f"#f{i}": name for i, name in enumerate(values)}
        assignments = ", ".join(f"#f{i} = :v{i}" for i in range(len(values)))
        self._client.update_item(
            TableName=self._table,
            Key=self._serialize({"job_id": job_id}),
            UpdateExpression=f"SET {assignments}",
            ConditionExpression="attribute_exists(job_id)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=self._serialize(
                {f":v{i}": value for i, value in enumerate(values.values())}
            ),
        )

    def fail(self, job_id: str, error: str) -> bool:
        """Mark a job failed with a reason the user can read, from any unfinished state."""
        return self.transition(
            job_id, JobState.FAILED, expected=ACTIVE_STATES, fields={"error": error}
        )

    def get(self, job_id: str) -> JobRecord | None:
        response = self._client.get_item(
            TableName=self._table, Key=self._serialize({"job_id": job_id}), ConsistentRead=True
        )
        item = response.get("Item")
        return None if item is None else JobRecord.from_item(self._deserialize(item))

    def scan(self, states: Iterable[JobState] | None = None) -> Iterator[JobRecord]:
        """Every job, optionally only those in ``states``; paginates through the table."""
        wanted = {state.value for state in states} if states is not None else None
        paginator = self._client.get_paginator("scan")
        for page in paginator.paginate(TableName=self._table):
            for item in page.get("Items", []):
                record = JobRecord.from_item(self._deserialize(item))
                if wanted is None or record.state.value in wanted:
                    yield record

    def _deserialize(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self._from_ddb.deserialize(v) for k, v in item.items()}
