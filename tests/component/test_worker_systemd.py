"""The systemd unit and the example environment file the AMI and the stack build on."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from support.repo_paths import REPO_ROOT

from gpu_worker.daemon import EXIT_CONFIG
from local_mode.systemd_unit import GIVE_BACK_UNIT, SYSTEMD_DIR, RestartPolicy, unit_settings
from local_mode.systemd_unit import WORKER_UNIT as UNIT
from pipeline_core.config import WorkerSettings

ENV_EXAMPLE = SYSTEMD_DIR / "transcription-worker.env.example"


def test_unit_restarts_on_failure_and_stops_with_sigterm() -> None:
    unit = unit_settings(UNIT.read_text())
    assert unit["Service.EnvironmentFile"] == ["/etc/transcription-worker.env"]
    assert unit["Service.ExecStart"][0].endswith("/venv/bin/gpu-worker")
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Service.RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    assert unit["Service.KillSignal"] == ["SIGTERM"]
    # Room for a 20 s long poll to return after the message was released.
    assert int(unit["Service.TimeoutStopSec"][0]) >= 20 + 30
    assert unit["Service.PrivateTmp"] == ["true"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_a_worker_that_failed_for_good_starts_the_give_back_unit() -> None:
    unit = unit_settings(UNIT.read_text())
    assert unit["Unit.OnFailure"] == [GIVE_BACK_UNIT.name]
    policy = RestartPolicy.from_unit(UNIT)
    assert policy.on_failure == (GIVE_BACK_UNIT.name,)
    # A configuration error fails the unit at once; a crash only at the start limit.
    assert policy.failed_for_good(EXIT_CONFIG, [0.0], now=1.0)
    burst = policy.start_limit_burst
    assert not policy.failed_for_good(1, [float(i) for i in range(burst - 1)], now=float(burst))
    assert policy.failed_for_good(1, [float(i) for i in range(burst)], now=float(burst))
    # Starts older than the interval no longer count.
    long_ago = [-policy.start_limit_interval_seconds - 1.0] * burst
    assert not policy.failed_for_good(1, long_ago, now=0.0)
    # Both units share the state directory the cause is left in, and the log file.
    give_back = unit_settings(GIVE_BACK_UNIT.read_text())
    assert give_back["Service.StateDirectory"] == unit["Service.StateDirectory"]
    assert give_back["Service.StandardOutput"] == unit["Service.StandardOutput"]
    assert give_back["Service.Type"] == ["oneshot"]
    assert give_back["Service.Restart"] == ["on-failure"]  # until the instance is given back
    assert give_back["Service.ExecStart"][0].endswith("/venv/bin/gpu-worker-give-back")
    assert give_back["Service.User"] == unit["Service.User"]
    # A broken environment file must not keep the instance from being given back.
    assert give_back["Service.EnvironmentFile"] == ["-/etc/transcription-worker.env"]


def test_the_give_back_program_is_an_installed_entry_point() -> None:
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gpu-worker-give-back"] == "gpu_worker.lifecycle.give_back:main"
    assert GIVE_BACK_UNIT.name in (REPO_ROOT / "packer/scripts/install-worker.sh").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_units_pass_systemd_analyze(tmp_path: Path) -> None:
    # The image's user and virtualenv do not exist here: verify copies that name ours.
    copies = []
    for unit, program in ((UNIT, "gpu-worker"), (GIVE_BACK_UNIT, "gpu-worker-give-back")):
        text = unit.read_text()
        for old, new in (
            ("User=transcription", "User=root"),
            ("Group=transcription", "Group=root"),
            (
                f"/opt/transcription/venv/bin/{program}\n",
                (shutil.which("true") or "/bin/true") + "\n",
            ),
        ):
            assert old in text
            text = text.replace(old, new)
        copy = tmp_path / unit.name
        copy.write_text(text)
        copies.append(str(copy))
    result = subprocess.run(
        ["systemd-analyze", "verify", *copies], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_example_environment_file_configures_a_worker() -> None:
    values = {}
    for raw in ENV_EXAMPLE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    settings = WorkerSettings.from_env(values)
    assert settings.models["he"].endswith("ivrit-turbo-ct2")
    assert settings.asg_name == "transcription-gpu-workers"
    assert settings.imds_endpoint == "http://169.254.169.254"
    assert settings.heartbeat_seconds < settings.visibility_timeout_seconds
    assert settings.pause_after_step is None  # never set on a real worker
