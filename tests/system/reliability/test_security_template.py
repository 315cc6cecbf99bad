"""Security settings read from the deployable artefacts: the CloudFormation template and the
committed Chalice policies. Adds what tests/component/test_cloudformation_template.py and
tests/component/test_stage_config.py do not already hold (bucket TLS/public access/encryption
and the queues' SSE are there): the job table's encryption, IMDSv2, a DLQ alarm for every DLQ found
by redrive policy, and no wildcard IAM action or "*" resource without a written reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stage_config
from component.test_stage_config import assert_least_privilege
from support.repo_paths import REPO_ROOT
from system.reliability.conftest import Report

from cloudformation.stack import load_template

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
POLICY_FILES = sorted((REPO_ROOT / "chalice_app" / ".chalice").glob("policy-*.json"))


def _of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in RESOURCES.items() if res["Type"] == kind}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement anywhere under ``node`` (policies, key policies, bucket policies)."""
    if isinstance(node, dict):
        for statement in _listed(node.get("Statement", [])):
            if isinstance(statement, dict) and "Effect" in statement:
                yield path, statement
        for value in node.values():
            yield from _statements(value, path)
    elif isinstance(node, list):
        for value in node:
            yield from _statements(value, path)


def test_job_table_is_encrypted_and_recoverable() -> None:
    for table in _of_type("AWS::DynamoDB::Table").values():
        props = table["Properties"]
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_every_queue_is_encrypted() -> None:
    queues = _of_type("AWS::SQS::Queue")
    assert len(queues) == 7  # three queues, three DLQs, the Dispatcher's on-failure destination
    for props in (q["Properties"] for q in queues.values()):
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props


def test_gpu_worker_requires_imdsv2() -> None:
    (template,) = _of_type("AWS::EC2::LaunchTemplate").values()
    options = template["Properties"]["LaunchTemplateData"]["MetadataOptions"]
    assert options["HttpTokens"] == "required"  # IMDSv1 (no session token) refused
    assert options["HttpPutResponseHopLimit"] == 1  # no container on the host reaches it


def test_every_dlq_has_an_alarm() -> None:
    dlqs = set()
    for props in (q["Properties"] for q in _of_type("AWS::SQS::Queue").values()):
        if "RedrivePolicy" in props:
            target = props["RedrivePolicy"]["deadLetterTargetArn"]
            dlqs.add(target["Fn::GetAtt"][0])
            assert props["RedrivePolicy"]["maxReceiveCount"] == 3
    assert dlqs == {"AudioDlq", "LlmDlq", "ResultsDlq"}
    watched = set()
    for alarm in _of_type("AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if props.get("Namespace") == "AWS/SQS":
            value = props["Dimensions"][0]["Value"]
            if isinstance(value, dict) and "Fn::GetAtt" in value:
                watched.add(value["Fn::GetAtt"][0])
            assert props.get("AlarmActions"), props
    assert dlqs <= watched


def test_no_wildcard_without_a_written_reason(report: Report) -> None:
    reasons: dict[str, str] = TEMPLATE["Metadata"]["IamWildcards"]
    seen = []
    for name, resource in RESOURCES.items():
        for _, statement in _statements(resource.get("Properties", {}), name):
            actions = _listed(statement.get("Action", []))
            targets = _listed(statement.get("Resource", []))
            wild_action = any(isinstance(a, str) and "*" in a for a in actions)
            wild_resource = "*" in targets
            if wild_action or wild_resource:
                label = f"{name}/{statement.get('Sid', '?')}"
                assert label in reasons, f"{label} has a wildcard and no reason in IamWildcards"
                assert len(reasons[label].split()) >= 5
                seen.append(label)
    assert sorted(seen) == sorted(reasons), "IamWildcards lists a statement that has none"
    assert POLICY_FILES, "no committed Chalice policies"
    for path in POLICY_FILES:
        assert_least_privilege(json.loads(Path(path).read_text(encoding="utf-8")))
    report(
        fault="security: template and Chalice policies parsed",
        happened=(
            f"{len(seen)} wildcard statements in the template, each with a written reason; "
            f"{len(POLICY_FILES)} Chalice policies least-privilege "
            f"({len(stage_config.WILDCARD_RESOURCE_SIDS)} '*' resource, reasoned)"
        ),
        outcome="TLS-only bucket, public access blocked, SSE everywhere, IMDSv2, DLQ alarms",
        figures={"template_wildcards": len(seen), "chalice_policies": len(POLICY_FILES)},
    )


@pytest.mark.parametrize("name", ["PipelineBucket"])
def test_bucket_is_tls_only_private_and_encrypted(name: str) -> None:
    props = RESOURCES[name]["Properties"]
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    denies = [
        s
        for policy in _of_type("AWS::S3::BucketPolicy").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny"
    ]
    assert any(
        s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}} and s["Principal"] == "*"
        for s in denies
    )


def test_every_queue_is_tls_only_and_still_reachable_by_its_own_services() -> None:
    """Each queue's policy denies any request without TLS (aws:SecureTransport false), and
    nothing else: no Allow that would open a queue, no Deny that would stop the SDKs, the
    Lambda event source mapping or the redrive, which all use TLS."""
    queues = set(_of_type("AWS::SQS::Queue"))
    covered: set[str] = set()
    for policy in _of_type("AWS::SQS::QueuePolicy").values():
        props = policy["Properties"]
        (statement,) = props["PolicyDocument"]["Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Principal"] == "*"
        assert statement["Action"] == "sqs:*"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        refs = {queue["Ref"] for queue in props["Queues"]}
        arns = {resource["Fn::GetAtt"][0] for resource in statement["Resource"]}
        assert refs == arns
        covered |= refs
    assert covered == queues
