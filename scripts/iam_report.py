"""Write docs/iam.md (and docs/iam-calls.json) from the AWS calls the local-mode runs made.

    .venv/bin/python -m pytest tests/system/test_local_mode_e2e.py tests/system/reliability
    .venv/bin/python scripts/iam_report.py      # -> docs/iam-calls.json, docs/iam.md

Per component (each runs under its own IAM identity in the local mode, enforced by moto): the
calls it made (action, resource) and the grants its policy holds, each grant with the calls
that used it or the written reason it stays (``stage_config.GRANTS_WITHOUT_CALLS``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "chalice_app"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import stage_config  # noqa: E402

from cloudformation.call_ledger import Grant, grants  # noqa: E402

LEDGER: Final = ROOT / "build" / "iam" / "calls.json"
COMMITTED_LEDGER: Final = ROOT / "docs" / "iam-calls.json"
DOC: Final = ROOT / "docs" / "iam.md"
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
    for key in reason_keys(grant):
        if key in stage_config.GRANTS_WITHOUT_CALLS:
            return stage_config.GRANTS_WITHOUT_CALLS[key]
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
        "(`tests/test_local_mode_e2e.py`, `tests/reliability/`), every component under its own",
        "identity with moto's IAM access control on. Names in `${...}` are the stack's",
        "(generated in each run). `tests/test_iam_report.py` fails when a call is not granted,",
        "when a grant is used by no call and has no reason in",
        "`chalice_app/stage_config.py` `GRANTS_WITHOUT_CALLS`, and when this page is stale.",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--ledger", type=Path, default=LEDGER)
    parser.add_argument("--out", type=Path, default=DOC)
    args = parser.parse_args(argv)
    if not args.ledger.exists():
        print(f"no ledger at {args.ledger}: run the local-mode tests first", file=sys.stderr)
        return 2
    if args.ledger.resolve() != COMMITTED_LEDGER.resolve():
        shutil.copyfile(args.ledger, COMMITTED_LEDGER)
    ledger = json.loads(COMMITTED_LEDGER.read_text(encoding="utf-8"))
    args.out.write_text(render(ledger), encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
