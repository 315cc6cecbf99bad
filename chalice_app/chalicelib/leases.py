"""Short-lived claims on a job item, for the steps ``JobTable`` does not cover.

A claim is a conditional write: ``<lease field> = until`` succeeds only while nobody else
holds an unexpired claim and the job is in one of the expected states. The Dispatcher uses
it so that only one delivery re-sends a lost message; the LLM Caller so that duplicate LLM
jobs do not correct the same transcript twice at once. A claim lapses by itself, so a
Lambda that died holding one blocks nobody for longer than its lease.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from pipeline_core.contracts import utc_timestamp
from pipeline_core.jobs import JobState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_ser = TypeSerializer()


def now_ms() -> int:
    return int(time.time() * 1000)


def try_claim(
    client: DynamoDBClient,
    table: str,
    job_id: str,
    *,
    lease_field: str,
    owner: str,
    lease_ms: int,
    states: Iterable[JobState],
    unless_present: str | None = None,
    set_fields: Mapping[str, Any] | None = None,
    count_field: str | None = None,
) -> bool:
    """Take the claim; False when the job is missing, in another state, already done
    (``unless_present`` is set) or claimed by someone else whose lease has not lapsed."""
    now = now_ms()
    values: dict[str, Any] = {
        **(set_fields or {}),
        lease_field: now + lease_ms,
        f"{lease_field}_owner": owner,
        "updated_at": utc_timestamp(),
    }
    names = {f"#s{i}": name for i, name in enumerate(values)}
    sets = [f"#s{i} = :s{i}" for i in range(len(values))]
    expr_values: dict[str, Any] = {f":s{i}": value for i, value in enumerate(values.values())}
    names.update({"#state": "state", "#lease": lease_field})
    allowed = [state.value for state in states]
    expr_values.update({f":e{i}": state for i, state in enumerate(allowed)})
    expr_values[":now"] = now
    in_states = ", ".join(f":e{i}" for i in range(len(allowed)))
    condition = (
        f"attribute_exists(job_id) AND #state IN ({in_states})"
        " AND (attribute_not_exists(#lease) OR #lease < :now)"
    )
    if unless_present:
        names["#done"] = unless_present
        condition += " AND attribute_not_exists(#done)"
    if count_field:
        names["#count"] = count_field
        expr_values.update({":zero": 0, ":one": 1})
        sets.append("#count = if_not_exists(#count, :zero) + :one")
    try:
        client.update_item(
            TableName=table,
            Key={"job_id": {"S": job_id}},
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={k: _ser.serialize(v) for k, v in expr_values.items()},
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


def release(
    client: DynamoDBClient, table: str, job_id: str, *, lease_field: str, owner: str
) -> None:
    """Give a claim back early (only one's own), so that the next delivery need not wait."""
    try:
        client.update_item(
            TableName=table,
            Key={"job_id": {"S": job_id}},
            UpdateExpression="SET #lease = :zero",
            ConditionExpression="#owner = :owner",
            ExpressionAttributeNames={"#lease": lease_field, "#owner": f"{lease_field}_owner"},
            ExpressionAttributeValues={":zero": {"N": "0"}, ":owner": {"S": owner}},
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
