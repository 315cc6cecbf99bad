"""Least privilege both ways: every call the local-mode runs made is granted, every grant is
used by a call or has a written reason, and docs/iam.md is what the ledger generates.

The ledger (``docs/iam-calls.json``) comes from the end-to-end and reliability runs, where
every component called under its own identity; the policies are rendered here, now, from the
template and ``stage_config``, so a policy change is held to the recorded calls at once.
"""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

import pytest
import stage_config
from support.repo_paths import REPO_ROOT

from cloudformation.call_ledger import (
    actions_without_resource,
    generalize,
    granted,
    grants,
    wildcard_statements,
)
from cloudformation.emulated import create_emulated_stack, create_identities
from cloudformation.stack import load_template
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


def test_wildcard_statements_hold_only_actions_called_without_a_resource(
    current_policies: dict[str, Any],
) -> None:
    ledger = _ledger()
    for component, documents in current_policies.items():
        called_without = actions_without_resource(ledger.get(component, {}).get("calls", []))
        for sid, actions in wildcard_statements(documents).items():
            unexplained = {
                action
                for action in actions
                if action not in called_without
                and not {f"{component}/{sid}/{action}", f"{component}/{sid}"}
                & set(stage_config.GRANTS_WITHOUT_CALLS)
            }
            assert unexplained == set(), f"{component}/{sid}: called with a resource, or never"
    lambda_wildcards = {
        sid
        for component in (stage_config.DISPATCHER, stage_config.LLM_CALLER)
        for sid in wildcard_statements(current_policies[component])
    }
    assert lambda_wildcards == set(stage_config.WILDCARD_RESOURCE_SIDS)
    template_wildcards = {
        f"WorkerPolicy/{sid}" for sid in wildcard_statements(current_policies["worker"])
    } | {f"OnPremPolicy/{sid}" for sid in wildcard_statements(current_policies["onprem"])}
    listed = {
        name
        for name in load_template()["Metadata"]["IamWildcards"]
        if name.startswith(("WorkerPolicy/", "OnPremPolicy/"))
    }
    assert template_wildcards == listed
