"""Write docs/iam.md (and docs/iam-calls.json) and the policies' "*" statements from the AWS
calls the local-mode runs made.

    .venv/bin/python -m pytest tests/system/test_local_mode_e2e.py tests/system/reliability
    .venv/bin/python scripts/iam_report.py      # -> docs/iam-calls.json, docs/iam.md, policies
    .venv/bin/python scripts/iam_report.py --write-policies   # policies only, from docs/

Per component (each runs under its own IAM identity in the local mode, enforced by moto): the
calls it made (action, resource) and the grants its policy holds, each grant with the calls
that used it or the written reason it stays (``stage_config.GRANTS_WITHOUT_CALLS``).

The one statement per policy whose resource is "*" (``stage_config.WILDCARD_SID``) is written
here too, never by hand: the actions each component called with no resource, which the AWS
Service Authorization Reference says have no resource-level permissions, plus the ones
``GRANTS_WITHOUT_CALLS`` names under that statement (calls the runs do not make). They go into
the template's generated blocks (``WorkerPolicy``, ``OnPremPolicy``, their reasons in
``Metadata.IamWildcards``) and into ``chalice_app/lambda_wildcards.py`` for the Lambdas, whose
committed dev stage (``chalice_app/.chalice``) is rendered again.
"""

from __future__ import annotations

import argparse
import functools
import importlib.resources
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "chalice_app"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import stage_config  # noqa: E402

from cloudformation.call_ledger import ANY_RESOURCE, Grant, grants, wildcard_statements  # noqa: E402
from cloudformation.emulated import ONPREM, WORKER  # noqa: E402
from cloudformation.stack import TEMPLATE_PATH, load_template  # noqa: E402

LEDGER: Final = ROOT / "build" / "iam" / "calls.json"
COMMITTED_LEDGER: Final = ROOT / "docs" / "iam-calls.json"
DOC: Final = ROOT / "docs" / "iam.md"
LAMBDA_WILDCARDS: Final = ROOT / "chalice_app" / "lambda_wildcards.py"
LAMBDAS: Final = (stage_config.DISPATCHER, stage_config.LLM_CALLER, stage_config.RECONCILER)
# The components whose policy the template holds, by the policy's logical id.
TEMPLATE_POLICIES: Final = {WORKER: "WorkerPolicy", ONPREM: "OnPremPolicy"}
REASONS_BLOCK: Final = "IamWildcards"
# Whether an action has resource-level permissions, from data: the AWS Service Authorization
# Reference in its programmatic form (https://servicereference.us-east-1.amazonaws.com/), as
# cfn-lint ships it (`cfn-lint --update-iam-policies` refreshes it). An action whose entry names
# no resource type can only be granted on "*".
SERVICE_REFERENCE: Final = ("cfnlint.data.AdditionalSpecs", "Policies.json")
TEMPLATE_LINE_WIDTH: Final = 100
IDENTITIES: Final = {
    "dispatcher": "Lambda role with `chalice_app/stage_config.py` `dispatcher_policy`",
    "llm_caller": "Lambda role with `chalice_app/stage_config.py` `llm_caller_policy`",
    "reconciler": "Lambda role with `chalice_app/stage_config.py` `reconciler_policy`",
    "worker": "the template's `WorkerRole` (`WorkerPolicy`), assumed as the instance",
    "onprem": "an IAM user with the template's `OnPremPolicy` (`OnPremPolicyArn`)",
}
MOTO_LIMITS: Final = """\
## What the emulator cannot enforce

The local mode turns moto's IAM access control on, so a call outside a component's policy is
refused there as in AWS. moto is lenient or different in these places; the ledger check above
(every call against the real policy, resources included) and the policy tests cover them:

- **Resources of most services.** moto evaluates the resource only for S3, SQS, IAM and STS;
  for DynamoDB, Auto Scaling, CloudWatch Logs and the rest it checks the action against
  resource `"*"`. The roles in the emulator therefore carry those statements widened to `"*"`
  (`cloudformation/emulated.py` `as_moto_enforces`), and each call's resource is checked
  against the real statement by the ledger (`cloudformation/call_ledger.py`).
- **SQS batch operations.** AWS authorises `DeleteMessageBatch`, `SendMessageBatch` and
  `ChangeMessageVisibilityBatch` as the single actions; moto asks for the batch names, which the
  emulated roles are given beside the single ones. Likewise moto asks for CloudWatch's actions
  by the endpoint's name (`monitoring:PutMetricData`), which the roles are given beside
  `cloudwatch:`.
- **S3 `DeleteObjects`.** AWS authorises it as `s3:DeleteObject` on each key; moto asks for
  `s3:DeleteObject` on the bucket and otherwise refuses every key inside a 200 answer (so the
  call looks granted). The emulated roles hold it on the bucket of each object deletion grant.
- **S3 403 instead of 404.** Without `s3:ListBucket` on the bucket, S3 answers a read of a
  missing key with 403; moto answers 404 whatever the caller holds. Only a check of the
  policies themselves finds a role that probes possibly-missing objects without it.
- **Condition keys.** moto supplies no condition key but `sts:ExternalId`, so an Allow with
  a condition never applies there. The statements widened to resource `"*"` lose their
  conditions with it (`cloudwatch:namespace` on the worker's `PutMetricData`); the others
  (`s3:prefix`) are enforced as written, which moto's 404 for missing keys makes moot. Deny
  statements (`aws:SecureTransport`) and the ledger check do not evaluate conditions either.
- **Resource policies and KMS.** Bucket, queue and topic policies (the TLS-only denies) and KMS key
  policies are not evaluated; the emulated stack has no customer managed key, so the
  `kms:Decrypt`/`kms:GenerateDataKey` grants are never exercised, and moto publishes to the
  notification topic without the SNS-managed key (`alias/aws/sns`) that encrypts it in AWS.
- **Bedrock.** Converse goes to a local fake server, not to moto: the call is recorded and held
  to the `InvokeModel` statement by the ledger, but nothing refuses it, and model access
  (account-level model enablement, inference-profile routing to other regions) is not emulated.
- **Actions whose resource the parameters do not name** (`TerminateInstanceInAutoScalingGroup`
  acts on the instance's group) are checked by action only (resource `?` below).
- **Lambda logging.** The Lambda runtime, not the code, writes CloudWatch Logs with the function's
  role; the local mode does not, so `logs:*` grants have a written reason instead of calls.
"""


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(values: Any) -> str:
    return "<br>".join(f"`{_cell(value)}`" for value in values) or "none"


def reason_keys(grant: Grant) -> tuple[str, str]:
    """The keys of ``GRANTS_WITHOUT_CALLS`` that may explain ``grant``: action, statement."""
    statement = f"{grant.component}/{grant.sid}"
    return f"{statement}/{grant.action}", statement


def grant_reason(grant: Grant) -> str | None:
    reasons = {**stage_config.GRANTS_WITHOUT_CALLS, **stage_config.GRANTS_CALLED_SOMETIMES}
    for key in reason_keys(grant):
        if key in reasons:
            return reasons[key]
    return None


def review(ledger: Mapping[str, Any]) -> dict[str, list[Grant]]:
    """Each component's grants with the calls that used them."""
    return {
        component: grants(component, entry["policies"], entry["calls"])
        for component, entry in sorted(ledger.items())
    }


def render(ledger: Mapping[str, Any]) -> str:
    lines = [
        "# IAM: who calls what",
        "",
        "Generated by `scripts/iam_report.py` from the calls the local-mode runs made",
        "(`tests/system/test_local_mode_e2e.py`, `tests/system/reliability/`), every component",
        "under its own identity with moto's IAM access control on. Names in `${...}` are the",
        "stack's (generated in each run). `tests/unit/test_iam_report.py` fails when a call is",
        "not granted, when a grant is used by no call and has no reason in",
        "`chalice_app/stage_config.py` `GRANTS_WITHOUT_CALLS`, and when this page is stale.",
        "",
        'The same script writes each policy\'s one `"*"` statement',
        f"(`{stage_config.WILDCARD_SID}`; the template's generated blocks and",
        "`chalice_app/lambda_wildcards.py`) from these calls: the actions called with no",
        "resource, which the AWS Service Authorization Reference (as cfn-lint ships it) says",
        "have no resource-level permissions, each with its reason in",
        '`stage_config.WILDCARD_ACTION_REASONS`. Another `"*"` statement stays hand-written',
        "only where a condition narrows it or no run makes its calls (`GRANTS_WITHOUT_CALLS`).",
        "After changing calls or grants: run the tests above, then `scripts/iam_report.py`;",
        "after changing only reasons: `scripts/iam_report.py --write-policies` (from the",
        "committed ledger).",
        "",
    ]
    for component, component_grants in review(ledger).items():
        lines += [
            f"## {component}",
            "",
            f"Identity: {IDENTITIES.get(component, 'unknown')}.",
            "",
            "### Calls made",
            "",
            "| Action | Resource |",
            "|---|---|",
        ]
        lines += [
            f"| `{call['action']}` | `{_cell(call['resource'])}` |"
            for call in ledger[component]["calls"]
        ]
        lines += [
            "",
            "### Grants held",
            "",
            "| Statement | Action | Resources | Used by | Reason (if unused) |",
            "|---|---|---|---|---|",
        ]
        for grant in component_grants:
            used = _code(sorted(set(grant.used_by))) if grant.used_by else "no call"
            reason = "" if grant.used_by else _cell(grant_reason(grant) or "**none written**")
            lines.append(
                f"| {grant.sid} | `{grant.action}` | {_code(grant.resources)} | {used} | {reason} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n" + MOTO_LIMITS


class WildcardError(ValueError):
    """The recorded calls and the written reasons do not make the "*" statements."""


@functools.cache
def _service_reference() -> dict[str, Any]:
    package, name = SERVICE_REFERENCE
    text = (importlib.resources.files(package) / name).read_text(encoding="utf-8")
    reference: dict[str, Any] = json.loads(text)
    return reference


def has_resource_level_permissions(action: str) -> bool:
    service, _, name = action.partition(":")
    entry = _service_reference().get(service, {}).get("Actions", {}).get(name.lower())
    if entry is None:
        raise WildcardError(f"{action} is not in the Service Authorization Reference")
    return bool(entry.get("Resources"))


def _declared_without_calls() -> tuple[dict[str, set[str]], list[str]]:
    """The "*" actions ``GRANTS_WITHOUT_CALLS`` and ``GRANTS_CALLED_SOMETIMES`` name
    (``component/WILDCARD_SID/action``)."""
    declared: dict[str, set[str]] = {}
    problems = []
    for key in (*stage_config.GRANTS_WITHOUT_CALLS, *stage_config.GRANTS_CALLED_SOMETIMES):
        component, sid, *action = key.split("/", 2)
        if sid != stage_config.WILDCARD_SID:
            continue
        if action:
            declared.setdefault(component, set()).add(action[0])
        else:
            problems.append(f"GRANTS_WITHOUT_CALLS {key}: name the action ({key}/service:Action)")
    return declared, problems


def wildcard_actions(
    ledger: Mapping[str, Any], template: Path = TEMPLATE_PATH
) -> dict[str, tuple[str, ...]]:
    """Per component, the actions its "*" statement grants: those it called with no resource
    and those ``GRANTS_WITHOUT_CALLS`` declares, less those a hand-written "*" statement grants
    (narrowed by a condition); each must lack resource-level permissions and have a reason in
    ``WILDCARD_ACTION_REASONS``, and every reason must be for one of them."""
    found, problems = _declared_without_calls()
    for component in (*LAMBDAS, *TEMPLATE_POLICIES):
        found.setdefault(component, set())
    for component, entry in ledger.items():
        found.setdefault(component, set()).update(
            call["action"] for call in entry["calls"] if call["resource"] == ANY_RESOURCE
        )
    for component, statements in hand_written_wildcards(template).items():
        for statement in statements.values():
            found[component] -= set(_listed(statement.get("Action")))
    reasons = stage_config.WILDCARD_ACTION_REASONS
    for component, actions in sorted(found.items()):
        if actions and component not in (*LAMBDAS, *TEMPLATE_POLICIES):
            problems.append(f"{component}: no policy source to write {sorted(actions)} into")
        for action in sorted(actions):
            try:
                if has_resource_level_permissions(action):
                    problems.append(
                        f"{component}: {action} is authorised against a resource, yet recorded "
                        "or declared without one: name its resource (call_ledger.resource_arn) "
                        "and grant it there"
                    )
            except WildcardError as exc:
                problems.append(f"{component}: {exc}")
            if action not in reasons:
                problems.append(
                    f"{component}: {action} needs a reason in stage_config.WILDCARD_ACTION_REASONS"
                )
    needed = set().union(*found.values())
    problems += [
        f"stage_config.WILDCARD_ACTION_REASONS explains {action}, which nothing calls: drop it"
        for action in sorted(set(reasons) - needed)
    ]
    if problems:
        raise WildcardError("\n".join(problems))
    return {component: tuple(sorted(actions)) for component, actions in sorted(found.items())}


def _markers(block: str) -> tuple[str, str]:
    return (
        f"# BEGIN generated by scripts/iam_report.py from docs/iam-calls.json: {block}",
        f"# END generated: {block}",
    )


def replace_block(text: str, block: str, body: Sequence[str]) -> str:
    """``text`` with the lines between the markers of ``block`` replaced by ``body``, indented
    as the opening marker; every other line stays as it is."""
    begin, end = _markers(block)
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise WildcardError(f"expected one block between {begin!r} and {end!r}")
    opening = lines[starts[0]]
    indent = opening[: len(opening) - len(opening.lstrip())]
    generated = [f"{indent}{line}\n" for line in body]
    return "".join([*lines[: starts[0] + 1], *generated, *lines[ends[0] :]])


def _template_statement(actions: Sequence[str]) -> list[str]:
    if not actions:
        return []
    return [
        f"- Sid: {stage_config.WILDCARD_SID}",
        "  Effect: Allow",
        "  Action:",
        *(f"    - {action}" for action in actions),
        '  Resource: "*"',
    ]


def _template_reasons(wildcards: Mapping[str, Sequence[str]], indent: int) -> list[str]:
    lines = []
    for component, policy in TEMPLATE_POLICIES.items():
        actions = wildcards.get(component, ())
        if not actions:
            continue
        reason = (
            "No resource-level permissions (AWS Service Authorization Reference): "
            + "; ".join(
                f"{action} {stage_config.WILDCARD_ACTION_REASONS[action]}" for action in actions
            )
        )
        wrapped = textwrap.wrap(
            reason,
            width=TEMPLATE_LINE_WIDTH - indent - 2,
            break_long_words=False,
            break_on_hyphens=False,
        )
        lines += [f"{policy}/{stage_config.WILDCARD_SID}: >-", *(f"  {line}" for line in wrapped)]
    return lines


def _lambda_module(wildcards: Mapping[str, Sequence[str]]) -> str:
    entries = []
    for function in LAMBDAS:
        key = json.dumps(function)
        quoted = [json.dumps(action) for action in wildcards.get(function, ())]
        if len(quoted) <= 1:
            entries.append(f"    {key}: ({quoted[0]},)," if quoted else f"    {key}: (),")
        else:  # one a line, as ruff formats a tuple with a trailing comma
            entries += [f"    {key}: (", *(f"        {a}," for a in quoted), "    ),"]
    return "\n".join(
        [
            '"""Generated by scripts/iam_report.py from docs/iam-calls.json: do not edit.',
            "",
            "Per Lambda, the actions it calls that have no resource-level permissions, which",
            'stage_config.py grants on "*" (reasons: stage_config.WILDCARD_ACTION_REASONS).',
            '"""',
            "",
            "from typing import Final",
            "",
            "WILDCARD_ACTIONS: Final[dict[str, tuple[str, ...]]] = {",
            *entries,
            "}",
            "",
        ]
    )


def generated_policies(
    ledger: Mapping[str, Any], template: Path = TEMPLATE_PATH, module: Path = LAMBDA_WILDCARDS
) -> dict[Path, str]:
    """The template and the Lambdas' wildcard module as the ledger makes them."""
    wildcards = wildcard_actions(ledger, template)
    text = template.read_text(encoding="utf-8")
    for component, policy in TEMPLATE_POLICIES.items():
        text = replace_block(text, policy, _template_statement(wildcards[component]))
    begin, _ = _markers(REASONS_BLOCK)
    indent = next(len(line) - len(line.lstrip()) for line in text.splitlines() if begin in line)
    text = replace_block(text, REASONS_BLOCK, _template_reasons(wildcards, indent))
    return {template: text, module: _lambda_module(wildcards)}


def stale_policies(
    ledger: Mapping[str, Any], template: Path = TEMPLATE_PATH, module: Path = LAMBDA_WILDCARDS
) -> list[Path]:
    """The files whose "*" statements differ from what the ledger makes."""
    return [
        path
        for path, text in generated_policies(ledger, template, module).items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def hand_written_wildcards(template: Path = TEMPLATE_PATH) -> dict[str, dict[str, Any]]:
    """Per component of the template, its statements with a "*" resource other than the
    generated one, by Sid."""
    resources = load_template(template)["Resources"]
    found: dict[str, dict[str, Any]] = {}
    for component, policy in TEMPLATE_POLICIES.items():
        document = resources[policy]["Properties"]["PolicyDocument"]
        statements = {str(s.get("Sid", "")): s for s in _listed(document["Statement"])}
        found[component] = {
            sid: statements[sid]
            for sid in wildcard_statements([document])
            if sid != stage_config.WILDCARD_SID
        }
    return found


def unexplained_hand_written_wildcards(template: Path = TEMPLATE_PATH) -> list[str]:
    """The hand-written "*" statements the generator should own: one stays hand-written only
    for what the generated statement cannot say, a condition that narrows it, or grants no run
    calls (a statement-level reason in ``GRANTS_WITHOUT_CALLS``)."""
    return [
        f"{TEMPLATE_POLICIES[component]}/{sid}"
        for component, statements in hand_written_wildcards(template).items()
        for sid, statement in statements.items()
        if "Condition" not in statement
        and f"{component}/{sid}" not in stage_config.GRANTS_WITHOUT_CALLS
    ]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def write_policies(
    ledger: Mapping[str, Any], template: Path = TEMPLATE_PATH, module: Path = LAMBDA_WILDCARDS
) -> list[Path]:
    written = []
    for path, text in generated_policies(ledger, template, module).items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def render_committed_dev_stage() -> None:
    """``chalice_app/.chalice``'s dev stage, from the example outputs, with the new policies."""
    chalice_app = ROOT / "chalice_app"
    subprocess.run(
        [
            sys.executable,
            str(chalice_app / "stage_config.py"),
            "--stage",
            "dev",
            "--outputs-json",
            str(chalice_app / "stage-outputs.example.json"),
            "--project-dir",
            str(chalice_app),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--ledger", type=Path, default=LEDGER)
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument(
        "--write-policies",
        action="store_true",
        help='only rewrite the "*" statements from docs/iam-calls.json (after changing reasons)',
    )
    args = parser.parse_args(argv)
    if not args.write_policies:
        if not args.ledger.exists():
            print(f"no ledger at {args.ledger}: run the local-mode tests first", file=sys.stderr)
            return 2
        if args.ledger.resolve() != COMMITTED_LEDGER.resolve():
            shutil.copyfile(args.ledger, COMMITTED_LEDGER)
    ledger = json.loads(COMMITTED_LEDGER.read_text(encoding="utf-8"))
    try:
        written = write_policies(ledger)
    except WildcardError as exc:
        print(f"iam_report: {exc}", file=sys.stderr)
        return 2
    render_committed_dev_stage()
    if not args.write_policies:
        args.out.write_text(render(ledger), encoding="utf-8")
        written.append(args.out)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
