"""Who reads objects that may be missing holds s3:ListBucket for exactly those prefixes.

Without ``s3:ListBucket`` S3 answers GetObject/HeadObject of a missing key with 403, not 404
(so the worker's HEAD of a transcript not yet written, the uploader's HEAD before each
upload, a Dispatcher event for a deleted upload all look like a denial). moto answers 404
whatever the caller may do, so the rule is checked on the policies themselves: the
template's roles and policies, the on-prem example policy, and the policies
``stage_config.py`` renders for ``chalice deploy``. S3 evaluates that ListBucket with the
object's key as ``s3:prefix``, which lets each grant name only the prefixes it probes.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import stage_config

from cloudformation.stack import load_template
from pipeline_core.errors import (
    DISPATCHER_READER,
    LLM_CALLER_READER,
    ONPREM_READER,
    WORKER_READER,
    ObjectReader,
)

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "BUCKET"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
RESOURCES: dict[str, Any] = load_template()["Resources"]
OUTPUTS = stage_config.StackOutputs.from_mapping(
    {
        **json.loads((ROOT / "chalice_app" / "stage-outputs.example.json").read_text()),
        "BucketName": BUCKET,
    }
)
GLOSSARY_KEY = "config/glossary.txt"


def _arn(resource: Any) -> str:
    """A template resource of the bucket written as the ARN it becomes."""
    if resource == {"Fn::GetAtt": ["PipelineBucket", "Arn"]}:
        return BUCKET_ARN
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        return str(resource["Fn::Sub"]).replace("${PipelineBucket.Arn}", BUCKET_ARN)
    return str(resource)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in _listed(document["Statement"]) if s["Effect"] == "Allow"]


def _allows(statements: Iterable[dict[str, Any]], action: str, arn: str) -> bool:
    return any(
        action in _listed(s["Action"]) and any(
            fnmatch.fnmatchcase(arn, _arn(r)) for r in _listed(s["Resource"])
        )
        for s in statements
    )  # fmt: skip


def _list_prefix_patterns(statements: Iterable[dict[str, Any]]) -> list[str] | None:
    """The s3:prefix patterns of the ListBucket grants on the bucket (None: not granted)."""
    grants = [
        s
        for s in statements
        if "s3:ListBucket" in _listed(s["Action"])
        and BUCKET_ARN in [_arn(r) for r in _listed(s["Resource"])]
    ]
    if not grants:
        return None
    patterns: list[str] = []
    for grant in grants:
        condition = grant.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        assert condition, f"{grant.get('Sid')}: s3:ListBucket on the whole bucket, unnarrowed"
        patterns.extend(_listed(condition))
    return patterns


def assert_reads_missing_objects_safely(
    document: dict[str, Any], reader: ObjectReader, *extra_keys: str
) -> None:
    statements = _statements(document)
    patterns = _list_prefix_patterns(statements)
    assert patterns is not None, f"{reader.identity} has no s3:ListBucket on the bucket"
    probed = [f"{prefix}some/recording.timed.txt" for prefix in reader.probed_prefixes]
    for key in [*probed, *extra_keys]:
        assert any(fnmatch.fnmatchcase(key, p) for p in patterns), (reader.identity, key)
        # HeadObject is authorised as GetObject.
        assert _allows(statements, "s3:GetObject", f"{BUCKET_ARN}/{key}"), (reader.identity, key)
    for outside in ("", "other/x", "audio-input", *_other_prefixes(reader)):
        listed = [p for p in patterns if fnmatch.fnmatchcase(outside, p)]
        assert not listed, f"{reader.identity} may list {outside!r} by {listed}"


def _other_prefixes(reader: ObjectReader) -> list[str]:
    every = {*WORKER_READER.probed_prefixes, *LLM_CALLER_READER.probed_prefixes,
             *ONPREM_READER.probed_prefixes}  # fmt: skip
    return [f"{prefix}x" for prefix in sorted(every - set(reader.probed_prefixes))]


def _template_policy(name: str) -> dict[str, Any]:
    document: dict[str, Any] = RESOURCES[name]["Properties"]["PolicyDocument"]
    return document


def test_the_worker_role_lists_what_it_heads() -> None:
    assert RESOURCES["WorkerPolicy"]["Properties"]["Roles"] == [{"Ref": "WorkerRole"}]
    assert_reads_missing_objects_safely(_template_policy("WorkerPolicy"), WORKER_READER)


def test_the_onprem_policy_lists_what_it_heads_and_fetches() -> None:
    assert_reads_missing_objects_safely(_template_policy("OnPremPolicy"), ONPREM_READER)


def test_the_onprem_example_policy_agrees() -> None:
    example = json.loads((ROOT / "onprem" / "examples" / "iam-policy.json").read_text())
    assert_reads_missing_objects_safely(example, ONPREM_READER)


def test_the_dispatcher_policy_lists_the_uploads_it_heads() -> None:
    policy = stage_config.dispatcher_policy(OUTPUTS, "dev")
    assert_reads_missing_objects_safely(policy, DISPATCHER_READER)


@pytest.mark.parametrize("glossary", [None, GLOSSARY_KEY])
def test_the_llm_caller_policy_lists_transcripts_checkpoints_and_glossary(
    glossary: str | None,
) -> None:
    options = stage_config.StageOptions(glossary_key=glossary)
    policy = stage_config.llm_caller_policy(OUTPUTS, "dev", options)
    assert_reads_missing_objects_safely(policy, LLM_CALLER_READER, *filter(None, [glossary]))


def test_the_rule_refuses_an_unnarrowed_or_missing_grant() -> None:
    unnarrowed = {"Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{BUCKET_ARN}/audio-input/*"},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": BUCKET_ARN},
    ]}  # fmt: skip
    with pytest.raises(AssertionError, match="unnarrowed"):
        assert_reads_missing_objects_safely(unnarrowed, DISPATCHER_READER)
    unnarrowed["Statement"].pop()
    with pytest.raises(AssertionError, match="no s3:ListBucket"):
        assert_reads_missing_objects_safely(unnarrowed, DISPATCHER_READER)
