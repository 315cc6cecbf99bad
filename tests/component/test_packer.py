"""The worker AMI's Packer template and the provisioning and deploy scripts, checked offline.

Debian's packer 1.6.6 has the amazon builder built in, so ``packer validate`` checks the
whole build (builder options, provisioners, variables) without credentials or plugins;
plugins.pkr.hcl (Packer >= 1.7 only) is checked for syntax by ``packer fmt``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cloudformation.stack import load_template

ROOT = Path(__file__).resolve().parents[2]
PACKER_DIR = ROOT / "packer"
WORKER_TEMPLATE = PACKER_DIR / "worker.pkr.hcl"
SCRIPTS = sorted(
    [*PACKER_DIR.glob("scripts/*.sh"), *(ROOT / "scripts").glob("*.sh"), ROOT / "run-tests.sh"]
)


def _packer(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    packer = shutil.which("packer")
    assert packer, "packer is installed by scripts/bootstrap.sh (Debian package 'packer')"
    # No AWS credentials, no plugin directory, no telemetry: validation is offline.
    env = {"PATH": os.environ["PATH"], "HOME": str(ROOT / "build"), "CHECKPOINT_DISABLE": "1"}
    return subprocess.run(
        [packer, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_packer_files_are_formatted() -> None:
    run = _packer("fmt", "-check", "-diff", str(PACKER_DIR))
    assert run.returncode == 0, run.stdout + run.stderr


def test_packer_validates_the_worker_build_offline() -> None:
    run = _packer("validate", str(WORKER_TEMPLATE))
    assert run.returncode == 0, run.stdout + run.stderr


def test_packer_rejects_a_wrongly_typed_variable() -> None:
    run = _packer("validate", "-var", "volume_size_gib=lots", str(WORKER_TEMPLATE))
    assert run.returncode != 0


def test_baked_model_directories_are_the_stacks_default_worker_models() -> None:
    """packer/ bakes the models where the stack's WorkerModels default says they are."""
    spec = _packer("console", str(WORKER_TEMPLATE), stdin="local.models_spec\n")
    assert spec.returncode == 0, spec.stderr
    plan = subprocess.run(
        ["bash", str(PACKER_DIR / "scripts" / "bake-models.sh")],
        env={**os.environ, "MODELS": spec.stdout.strip(), "BAKE_MODELS_PLAN_ONLY": "1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    baked = dict(item.split("=", 1) for item in plan.stdout.strip().split(","))
    default = load_template()["Parameters"]["WorkerModels"]["Default"]
    assert baked == dict(item.split("=", 1) for item in default.split(","))
    assert baked["he"].endswith("/ivrit-ai--whisper-large-v3-turbo-ct2")
    assert "*" in baked


def test_the_stacks_root_volume_cannot_be_smaller_than_the_amis() -> None:
    """A launch with a root volume below the AMI's snapshot fails: the stack's RootVolumeGiB
    accepts nothing below the size packer/ builds (its volume_size_gib default)."""
    built = _packer("console", str(WORKER_TEMPLATE), stdin="var.volume_size_gib\n")
    assert built.returncode == 0, built.stderr
    parameter = load_template()["Parameters"]["RootVolumeGiB"]
    assert parameter["MinValue"] == int(built.stdout.strip())
    assert parameter["Default"] >= parameter["MinValue"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    run = subprocess.run(
        ["shellcheck", "--external-sources", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout
