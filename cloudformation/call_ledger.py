"""Every AWS call a component makes, as IAM sees it: who, which action, on which resource.

A botocore hook on a component's session records each call after it returns: the component,
the IAM action the operation is authorised as (``s3:GetObject`` for HeadObject), the resource
ARN derived from the parameters (``"*"`` where the action has none), and whether AWS refused
it. A refusal is logged as an error naming all three. ``granted`` evaluates a policy document
for one call, so that a test can hold every recorded call to the component's policy and every
grant to a call (``docs/iam.md``, ``scripts/iam_report.py``).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlparse

log = logging.getLogger(__name__)

# A process that records its calls to a file (the local mode's worker) is told where here.
LEDGER_PATH_ENV: Final = "AWS_CALL_LEDGER"
LEDGER_ACCOUNT_ENV: Final = "AWS_CALL_LEDGER_ACCOUNT"
# Where local-mode runs add their calls, generalized, for scripts/iam_report.py (tests set it).
LEDGER_ALL_RUNS_ENV: Final = "IAM_LEDGER"
# botocore's service name -> IAM's action prefix, where they differ.
_IAM_PREFIX: Final = {"bedrock-runtime": "bedrock"}
# Operations authorised as another action (AWS's "Actions, resources, and condition keys").
_IAM_ACTION: Final = {
    "s3:HeadObject": "s3:GetObject",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "s3:DeleteObjects": "s3:DeleteObject",  # authorised for each key it names
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "bedrock:Converse": "bedrock:InvokeModel",
    "bedrock:ConverseStream": "bedrock:InvokeModelWithResponseStream",
}
_BUCKET_ACTIONS: Final = frozenset(
    {"s3:ListBucket", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads"}
)
# Cross-region inference profile ids start with their geography ("us.anthropic...").
_PROFILE_GEOGRAPHIES: Final = frozenset({"us", "eu", "apac", "us-gov", "ca", "jp", "au", "global"})
# What stands for "no resource": actions without resource-level permissions.
ANY_RESOURCE: Final = "*"
# A resource IAM checks but the parameters do not name (TerminateInstanceInAutoScalingGroup
# is authorised against the instance's group): only the action can be checked.
UNNAMED_RESOURCE: Final = "?"
# Actions authorised against a resource their parameters do not name.
_UNNAMED_RESOURCE_ACTIONS: Final = frozenset({"autoscaling:TerminateInstanceInAutoScalingGroup"})


@dataclass(frozen=True)
class AccountScope:
    """Where the calls go: what ARNs are built from."""

    region: str
    account: str
    partition: str = "aws"


@dataclass(frozen=True)
class CallRecord:
    component: str
    action: str  # as IAM authorises it: "s3:GetObject"
    resource: str  # an ARN, or "*"
    denied: bool = False

    def describe(self) -> str:
        return f"{self.component} may not {self.action} on {self.resource}"


def iam_action(service: str, operation: str, params: Mapping[str, Any]) -> str:
    prefix = _IAM_PREFIX.get(service, service)
    action = _IAM_ACTION.get(f"{prefix}:{operation}", f"{prefix}:{operation}")
    if action == "s3:GetObject" and params.get("VersionId"):
        return "s3:GetObjectVersion"
    return action


def resource_arn(action: str, params: Mapping[str, Any], scope: AccountScope) -> str:
    """The ARN IAM checks the call against, from the call's parameters."""
    if action in _UNNAMED_RESOURCE_ACTIONS:
        return UNNAMED_RESOURCE
    base = f"arn:{scope.partition}"
    service = action.split(":", 1)[0]
    if service == "s3" and "Bucket" in params:
        bucket = f"{base}:s3:::{params['Bucket']}"
        if action in _BUCKET_ACTIONS or "Key" not in params:
            return bucket
        return f"{bucket}/{params['Key']}"
    if service == "sqs" and "QueueUrl" in params:
        # https://host/<account>/<name>
        account, name = urlparse(str(params["QueueUrl"])).path.strip("/").split("/")[-2:]
        return f"{base}:sqs:{scope.region}:{account}:{name}"
    if service == "dynamodb" and "TableName" in params:
        return f"{base}:dynamodb:{scope.region}:{scope.account}:table/{params['TableName']}"
    if service == "autoscaling" and "AutoScalingGroupName" in params:
        return (
            f"{base}:autoscaling:{scope.region}:{scope.account}:autoScalingGroup:*:"
            f"autoScalingGroupName/{params['AutoScalingGroupName']}"
        )
    if service == "sns" and "TopicArn" in params:
        return str(params["TopicArn"])
    if service == "bedrock" and "modelId" in params:
        model = str(params["modelId"])
        if model.startswith("arn:"):
            return model
        if model.split(".", 1)[0] in _PROFILE_GEOGRAPHIES:
            return f"{base}:bedrock:{scope.region}:{scope.account}:inference-profile/{model}"
        return f"{base}:bedrock:{scope.region}::foundation-model/{model}"
    return ANY_RESOURCE


def _statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statements = policy.get("Statement", [])
    return [statements] if isinstance(statements, Mapping) else list(statements)


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _matches(patterns: Iterable[str], value: str) -> bool:
    # IAM's wildcards: "*" any run of characters, "?" one; case-insensitive for actions only,
    # which callers pass lower-cased.
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def granting_statements(
    policies: Iterable[Mapping[str, Any]], action: str, resource: str
) -> list[Mapping[str, Any]]:
    """The Allow statements that grant ``action`` on ``resource`` (conditions not evaluated).

    A call recorded with no resource (``"*"``) is granted only by a statement whose resource
    is ``"*"``, as IAM does for actions without resource-level permissions; one whose resource
    the parameters do not name (``"?"``) by any statement granting the action.
    """
    found = []
    for policy in policies:
        for statement in _statements(policy):
            if statement.get("Effect") != "Allow":
                continue
            actions = [a.lower() for a in _as_list(statement.get("Action"))]
            resources = _as_list(statement.get("Resource"))
            if not _matches(actions, action.lower()):
                continue
            if resource == ANY_RESOURCE and ANY_RESOURCE not in resources:
                continue
            if resource == UNNAMED_RESOURCE or _matches(resources, resource):
                found.append(statement)
    return found


def granted(policies: Iterable[Mapping[str, Any]], action: str, resource: str) -> bool:
    return bool(granting_statements(list(policies), action, resource))


class CallLedger:
    """The calls of one run, per component; optionally appended to a JSON-lines file too."""

    def __init__(self, scope: AccountScope, path: Path | None = None) -> None:
        self.scope = scope
        self.path = path
        self._records: list[CallRecord] = []
        self._lock = threading.Lock()

    def attach(self, events: Any, component: str) -> None:
        """Record every call made through a session with these events (``session.events``)."""

        def after_call(http_response: Any, model: Any, context: Any, **_: Any) -> None:
            params = context.get("ledger_params", {})
            self._record(component, model, params, int(getattr(http_response, "status_code", 0)))

        events.register("before-parameter-build", _remember_params, unique_id=f"ledger-{id(self)}")
        events.register("after-call", after_call, unique_id=f"ledger-{id(self)}-{component}")

    def _record(self, component: str, model: Any, params: Mapping[str, Any], status: int) -> None:
        service = model.service_model.service_name
        action = iam_action(service, model.name, params)
        keys = [obj["Key"] for obj in params.get("Delete", {}).get("Objects", [])]
        each = [{**params, "Key": key} for key in keys] if keys else [params]
        records = [
            CallRecord(
                component=component,
                action=action,
                resource=resource_arn(action, one, self.scope),
                denied=status == 403,
            )
            for one in each
        ]
        for record in records:
            if record.denied:
                log.error(
                    "AWS refused the call: %s",
                    record.describe(),
                    extra={"component": component, "action": action, "resource": record.resource},
                )
        with self._lock:
            self._records.extend(records)
            if self.path is not None:
                append_records(records, self.path)

    def records(self) -> list[CallRecord]:
        with self._lock:
            return list(self._records)


def _remember_params(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    context["ledger_params"] = dict(params)


def read_records(path: Path) -> list[CallRecord]:
    """The records a ledger appended to ``path`` (another process's, such as the worker's)."""
    if not path.exists():
        return []
    return [
        CallRecord(**json.loads(line))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def denied(records: Iterable[CallRecord]) -> list[CallRecord]:
    return sorted({record for record in records if record.denied}, key=lambda r: r.describe())


def ungranted(
    records: Iterable[CallRecord], policies: Mapping[str, list[dict[str, Any]]]
) -> list[CallRecord]:
    """The calls (each once) that their component's policies do not grant."""
    return sorted(
        {
            record
            for record in records
            if not granted(policies.get(record.component, []), record.action, record.resource)
        },
        key=lambda r: r.describe(),
    )


def append_records(records: Iterable[CallRecord], path: Path) -> None:
    """Add a run's calls to a ledger file (the input of ``scripts/iam_report.py``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(asdict(record)) + "\n")


def generalize(text: str, names: Mapping[str, str]) -> str:
    """An ARN (or a whole policy's JSON) of one emulated deployment with its generated names
    replaced by their logical ones (``names``: physical -> ``${LogicalId}``) and an object key
    by its prefix (``.../audio-input/*``), so that runs and policies compare."""
    for physical in sorted(names, key=len, reverse=True):
        text = text.replace(physical, names[physical])
    if text.startswith("arn:") and ":s3:::" in text and "/" in text:
        bucket, key = text.split("/", 1)
        text = f"{bucket}/{key.split('/', 1)[0]}/*" if "/" in key else f"{bucket}/*"
    return text


def generalized(records: Iterable[CallRecord], names: Mapping[str, str]) -> set[CallRecord]:
    return {
        CallRecord(r.component, r.action, generalize(r.resource, names), r.denied) for r in records
    }


def merge_into(
    path: Path,
    policies: Mapping[str, list[dict[str, Any]]],
    calls: Iterable[CallRecord],
    names: Mapping[str, str],
) -> None:
    """Add a run's calls AWS answered (refusals are findings, not calls) and its components'
    policies to the ledger of all runs at ``path``, generalized:
    ``{component: {"policies": [...], "calls": [{action, resource}, ...]}}``."""
    merged: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    for component, documents in policies.items():
        entry = merged.setdefault(component, {"policies": [], "calls": []})
        entry["policies"] = [json.loads(generalize(json.dumps(d), names)) for d in documents]
    for record in generalized((call for call in calls if not call.denied), names):
        entry = merged.setdefault(record.component, {"policies": [], "calls": []})
        call = {"action": record.action, "resource": record.resource}
        if call not in entry["calls"]:
            entry["calls"].append(call)
    for entry in merged.values():
        entry["calls"].sort(key=lambda c: (c["action"], c["resource"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Grant:
    """One action one statement of a component's policy allows, and the calls that used it."""

    component: str
    sid: str
    action: str
    resources: tuple[str, ...]
    used_by: tuple[str, ...]  # the called resources it granted


def grants(
    component: str, policies: Iterable[Mapping[str, Any]], calls: Iterable[Mapping[str, str]]
) -> list[Grant]:
    """Every (statement, action) of the Allow statements, with the calls it grants."""
    calls = list(calls)
    found = []
    for policy in policies:
        for statement in _statements(policy):
            if statement.get("Effect") != "Allow":
                continue
            for action in _as_list(statement.get("Action")):
                own = {"Statement": [{**statement, "Action": [action]}]}
                used = tuple(
                    call["resource"]
                    for call in calls
                    if granted([own], call["action"], call["resource"])
                )
                found.append(
                    Grant(
                        component,
                        str(statement.get("Sid", "")),
                        action,
                        tuple(_as_list(statement.get("Resource"))),
                        used,
                    )
                )
    return found


def wildcard_statements(policies: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Sid -> actions of the Allow statements whose resource is "*"."""
    return {
        str(statement.get("Sid", "")): _as_list(statement.get("Action"))
        for policy in policies
        for statement in _statements(policy)
        if statement.get("Effect") == "Allow"
        and ANY_RESOURCE in _as_list(statement.get("Resource"))
    }


def actions_without_resource(calls: Iterable[Mapping[str, str]]) -> set[str]:
    """The actions called with no resource: the only ones a "*" statement should hold."""
    return {call["action"] for call in calls if call["resource"] == ANY_RESOURCE}
