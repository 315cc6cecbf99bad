"""Least privilege both ways: every call the local-mode runs made is granted, every grant is
used by a call or has a written reason, and docs/iam.md is what the ledger generates.

The ledger (``docs/iam-calls.json``) comes from the end-to-end and reliability runs, where
every component called under its own identity; the policies are rendered here, now, from the
template and ``stage_config``, so a policy change is held to the recorded calls at once.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import stage_config
from support.repo_paths import REPO_ROOT

from cloudformation.call_ledger import (
    ANY_RESOURCE,
    generalize,
    granted,
    grants,
    wildcard_statements,
)
from cloudformation.emulated import create_emulated_stack, create_identities
from local_mode.pipeline import STACK_NAME, function_policies


def _load_report() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "iam_report", REPO_ROOT / "scripts" / "iam_report.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load_report()


def _ledger() -> dict[str, Any]:
    ledger: dict[str, Any] = json.loads(report.COMMITTED_LEDGER.read_text(encoding="utf-8"))
    return ledger


@pytest.fixture(scope="module")
def current_policies() -> dict[str, list[dict[str, Any]]]:
    """Each component's policies as deployed today (Bedrock corrector), generalized."""
    from moto import mock_aws

    with mock_aws():
        stack = create_emulated_stack(stack_name=STACK_NAME)
        identities = create_identities(stack, function_policies(stack, {"CORRECTOR": "bedrock"}))
        names = stack.generated_names()
        return {
            component: [json.loads(generalize(json.dumps(p), names)) for p in documents]
            for component, documents in identities.policies.items()
        }


def test_docs_iam_is_generated_from_the_ledger() -> None:
    assert report.DOC.read_text(encoding="utf-8") == report.render(_ledger()), (
        "docs/iam.md is stale: run scripts/iam_report.py"
    )


def test_every_recorded_call_is_granted(current_policies: dict[str, Any]) -> None:
    ungranted = [
        f"{component} may not {call['action']} on {call['resource']}"
        for component, entry in _ledger().items()
        for call in entry["calls"]
        if not granted(current_policies[component], call["action"], call["resource"])
    ]
    assert ungranted == []


def test_every_grant_is_called_or_has_a_written_reason(current_policies: dict[str, Any]) -> None:
    ledger = _ledger()
    all_grants = [
        grant
        for component, documents in current_policies.items()
        for grant in grants(component, documents, ledger.get(component, {}).get("calls", []))
    ]
    unexplained = [
        f"{g.component}/{g.sid}/{g.action}"
        for g in all_grants
        if not g.used_by and not report.grant_reason(g)
    ]
    assert unexplained == [], "add a call, drop the grant, or give a reason in GRANTS_WITHOUT_CALLS"
    unused = {key for g in all_grants if not g.used_by for key in report.reason_keys(g)}
    stale = sorted(set(stage_config.GRANTS_WITHOUT_CALLS) - unused)
    assert stale == [], "these reasons explain grants that are called now, or gone"


def test_the_wildcard_statements_are_what_the_ledger_generates() -> None:
    assert report.stale_policies(_ledger()) == [], "run scripts/iam_report.py --write-policies"
    assert report.unexplained_hand_written_wildcards() == []


def test_each_policy_holds_no_other_wildcard_statement(current_policies: dict[str, Any]) -> None:
    generated = report.wildcard_actions(_ledger())
    hand_written = report.hand_written_wildcards()
    for component, documents in current_policies.items():
        actions = list(generated[component])
        expected = {stage_config.WILDCARD_SID: actions} if actions else {}
        own = hand_written.get(component, {})
        found = {sid: a for sid, a in wildcard_statements(documents).items() if sid not in own}
        assert found == expected, component


def test_the_check_fails_on_a_hand_edited_wildcard_statement(tmp_path: Path) -> None:
    template = tmp_path / "pipeline.yaml"
    module = tmp_path / "lambda_wildcards.py"
    committed = report.TEMPLATE_PATH.read_text(encoding="utf-8")
    listed = "              - autoscaling:DescribeAutoScalingGroups\n"
    template.write_text(
        committed.replace(listed, f"{listed}              - ec2:DescribeImages\n"),
        encoding="utf-8",
    )
    committed_module = report.LAMBDA_WILDCARDS.read_text(encoding="utf-8")
    module.write_text(
        committed_module.replace('"llm_caller": ()', '"llm_caller": ("s3:ListAllMyBuckets",)')
    )
    assert template.read_text(encoding="utf-8") != committed

    assert report.stale_policies(_ledger(), template, module) == [template, module]

    assert report.write_policies(_ledger(), template, module) == [template, module]
    # Rewritten to what is committed: the rest of the file, comments included, untouched.
    assert template.read_text(encoding="utf-8") == committed
    assert module.read_text(encoding="utf-8") == committed_module
    assert report.stale_policies(_ledger(), template, module) == []


def test_a_hand_written_wildcard_statement_outside_the_generated_block_is_found(
    tmp_path: Path,
) -> None:
    template = tmp_path / "pipeline.yaml"
    template.write_text(
        report.TEMPLATE_PATH.read_text(encoding="utf-8").replace(
            "          # END generated: OnPremPolicy\n",
            "          # END generated: OnPremPolicy\n"
            "          - Sid: ListEveryBucket\n"
            "            Effect: Allow\n"
            "            Action: s3:ListAllMyBuckets\n"
            '            Resource: "*"\n',
        ),
        encoding="utf-8",
    )
    assert report.unexplained_hand_written_wildcards(template) == ["OnPremPolicy/ListEveryBucket"]


def test_a_template_without_the_generated_block_is_an_error(tmp_path: Path) -> None:
    template = tmp_path / "pipeline.yaml"
    template.write_text(
        report.TEMPLATE_PATH.read_text(encoding="utf-8").replace(
            "          # END generated: OnPremPolicy\n", ""
        ),
        encoding="utf-8",
    )
    with pytest.raises(report.WildcardError, match="END generated: OnPremPolicy"):
        report.stale_policies(_ledger(), template, report.LAMBDA_WILDCARDS)


def test_a_deliberate_extra_must_name_its_action(monkeypatch: pytest.MonkeyPatch) -> None:
    key = f"onprem/{stage_config.WILDCARD_SID}"
    monkeypatch.setitem(stage_config.GRANTS_WITHOUT_CALLS, key, "for the operator")
    with pytest.raises(report.WildcardError, match=f"{key}: name the action"):
        report.wildcard_actions(_ledger())


def _with_call(component: str, action: str, resource: str) -> dict[str, Any]:
    ledger = _ledger()
    ledger[component]["calls"].append({"action": action, "resource": resource})
    return ledger


def test_a_wildcard_action_without_a_written_reason_is_an_error() -> None:
    ledger = _with_call("worker", "ec2:DescribeImages", "*")
    with pytest.raises(report.WildcardError, match=r"worker: ec2:DescribeImages needs a reason"):
        report.wildcard_actions(ledger)


def test_a_reason_for_an_action_nothing_calls_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(stage_config.WILDCARD_ACTION_REASONS, "ec2:DescribeImages", "finds AMIs")
    with pytest.raises(report.WildcardError, match=r"explains ec2:DescribeImages, which nothing"):
        report.wildcard_actions(_ledger())


def test_a_deliberate_extra_named_in_grants_without_calls_is_generated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An action without resource-level permissions that no run calls (the worker's describe
    before the rare scale-in race) is written into the statement from its reason."""
    describe = "autoscaling:DescribeAutoScalingGroups"
    key = f"worker/{stage_config.WILDCARD_SID}/{describe}"
    monkeypatch.delitem(stage_config.GRANTS_CALLED_SOMETIMES, key)
    ledger = _ledger()
    ledger["worker"]["calls"] = [c for c in ledger["worker"]["calls"] if c["action"] != describe]
    assert report.wildcard_actions(ledger)["worker"] == ()
    monkeypatch.setitem(stage_config.GRANTS_WITHOUT_CALLS, key, "before raising the group")
    assert report.wildcard_actions(ledger)["worker"] == (describe,)


def test_a_grant_a_race_decides_is_generated_whether_the_run_hit_the_race_or_not() -> None:
    """The worker's describe before raising its group runs only when a message arrived as it
    left: the generated statement and the reasons must not depend on that race."""
    describe = "autoscaling:DescribeAutoScalingGroups"
    assert f"worker/{stage_config.WILDCARD_SID}/{describe}" in stage_config.GRANTS_CALLED_SOMETIMES
    hit = _with_call("worker", describe, "*")
    missed = _ledger()
    missed["worker"]["calls"] = [c for c in missed["worker"]["calls"] if c["action"] != describe]
    assert report.wildcard_actions(hit)["worker"] == (describe,)
    assert report.wildcard_actions(missed)["worker"] == (describe,)


def test_a_call_the_ledger_could_not_name_the_resource_of_is_an_error() -> None:
    ledger = _with_call("llm_caller", "sqs:SendMessage", "*")
    with pytest.raises(report.WildcardError, match=r"sqs:SendMessage is authorised against a"):
        report.wildcard_actions(ledger)


def test_resource_level_permissions_come_from_the_service_reference() -> None:
    assert not report.has_resource_level_permissions("autoscaling:DescribeAutoScalingGroups")
    assert report.has_resource_level_permissions("autoscaling:SetDesiredCapacity")
    with pytest.raises(report.WildcardError, match="not in the Service Authorization Reference"):
        report.has_resource_level_permissions("autoscaling:DescribeEverything")
    # Every call the ledger named a resource for is one IAM authorises against a resource.
    named = {
        call["action"]
        for entry in _ledger().values()
        for call in entry["calls"]
        if call["resource"] != ANY_RESOURCE
    }
    assert named
    assert [
        action for action in sorted(named) if not report.has_resource_level_permissions(action)
    ] == []
