"""The systemd unit and the example environment file the AMI and the stack build on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gpu_worker.daemon import EXIT_CONFIG
from pipeline_core.config import WorkerSettings

SYSTEMD = Path(__file__).resolve().parents[2] / "gpu_worker" / "systemd"
UNIT = SYSTEMD / "transcription-worker.service"
ENV_EXAMPLE = SYSTEMD / "transcription-worker.env.example"


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values (systemd allows a key more than once, e.g. Environment)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


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


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    # The image's user and virtualenv do not exist here: verify a copy that names ours.
    text = UNIT.read_text()
    for old, new in (
        ("User=transcription", "User=root"),
        ("Group=transcription", "Group=root"),
        ("/opt/transcription/venv/bin/gpu-worker", shutil.which("true") or "/bin/true"),
    ):
        assert old in text
        text = text.replace(old, new)
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
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
