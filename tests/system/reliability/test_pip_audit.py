"""Known vulnerabilities in the locked dependency set: ``pip-audit`` (its own virtualenv,
``.venv-audit``, made by scripts/bootstrap.sh) over ``pip freeze`` of the suite's Python.

Where the vulnerability service cannot be reached (PyPI's JSON API or OSV; a machine with
only a package mirror) the test skips saying so, unless ``PIP_AUDIT_REQUIRED=1`` (CI), where
that is a failure. A vulnerability is a failure unless ``docs/pip-audit-accepted.txt`` names
its id with the reason it does not apply.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.repo_paths import REPO_ROOT
from system.reliability.conftest import Report

AUDIT = REPO_ROOT / ".venv-audit" / "bin" / "pip-audit"
ACCEPTED = REPO_ROOT / "docs" / "pip-audit-accepted.txt"
REQUIRED = os.environ.get("PIP_AUDIT_REQUIRED") == "1"


def _unavailable(why: str, report: Report) -> None:
    if REQUIRED:
        pytest.fail(f"PIP_AUDIT_REQUIRED=1 but {why}")
    report(
        fault="pip-audit of the locked dependency set",
        happened=f"not audited on this machine: {why}",
        outcome="skipped (PIP_AUDIT_REQUIRED=1 makes this a failure)",
        figures={},
    )
    pytest.skip(why)


def accepted_ids() -> dict[str, str]:
    """``<id> <reason>`` lines (``#`` comments): vulnerabilities reviewed and accepted."""
    if not ACCEPTED.exists():
        return {}
    entries = {}
    for line in ACCEPTED.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            vuln_id, _, reason = text.partition(" ")
            assert reason.strip(), f"{ACCEPTED.name}: {vuln_id} needs a reason"
            entries[vuln_id] = reason.strip()
    return entries


pytestmark = pytest.mark.slow  # asks the vulnerability service over the network


def test_locked_dependencies_have_no_unreviewed_vulnerabilities(
    tmp_path: Path, report: Report
) -> None:
    if not AUDIT.exists():
        _unavailable("pip-audit is not installed in .venv-audit (run scripts/bootstrap.sh)", report)
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    locked = [line for line in freeze.stdout.splitlines() if "==" in line]
    assert len(locked) > 20, freeze.stdout
    requirements = tmp_path / "locked.txt"
    requirements.write_text("\n".join(locked) + "\n", encoding="utf-8")
    run = subprocess.run(
        [str(AUDIT), "-r", str(requirements), "--no-deps", "--disable-pip", "--format", "json",
         "--progress-spinner", "off", "--timeout", "20"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    try:
        audit = json.loads(run.stdout)
    except ValueError:
        _unavailable(f"pip-audit could not query its service: {run.stderr[-500:]}", report)
        raise
    dependencies = audit["dependencies"]
    audited = [d for d in dependencies if "skip_reason" not in d]
    if not audited:
        reason = dependencies[0]["skip_reason"] if dependencies else "nothing audited"
        _unavailable(f"the vulnerability service (PyPI JSON API) is unreachable: {reason}", report)
    accepted = accepted_ids()
    findings = [
        (d["name"], d["version"], v["id"], v.get("fix_versions", []))
        for d in audited
        for v in d.get("vulns", [])
    ]
    unreviewed = [f for f in findings if f[2] not in accepted]
    report(
        fault="pip-audit of the locked dependency set",
        happened=f"{len(audited)} of {len(dependencies)} packages audited",
        outcome=f"{len(findings)} known vulnerabilities, {len(unreviewed)} unreviewed",
        figures={
            "packages": len(dependencies),
            "audited": len(audited),
            "vulnerabilities": [
                f"{n} {v}: {i} (fix {', '.join(x) or '-'})" for n, v, i, x in findings
            ],
        },
    )
    assert not unreviewed, (
        f"vulnerable dependencies (upgrade, or accept with a reason): {unreviewed}"
    )
