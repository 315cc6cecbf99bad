"""``./run-local.sh --aws``: the same command against an already deployed stack.

The "deployed stack" here is an emulated one, started first and left alone; the command under
test only knows what a real on-prem user knows: a settings file with the stack's outputs and
credentials from boto3's chain (``AWS_ENDPOINT_URL`` points that chain at the emulator).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from support.audio_factory import speech_mp3

from gpu_worker.weights import bundled
from local_mode.cli import build_parser, main, run_local
from local_mode.pipeline import LocalDeployment, LocalOptions


@pytest.mark.slow
def test_aws_mode_drives_a_deployed_stack_as_the_onprem_user(tmp_path: Path) -> None:
    audio = tmp_path / "in"
    speech_mp3(audio / "fox.mp3", "The quick brown fox jumps over the lazy dog.")
    (audio / "fox.mp3.json").write_text(json.dumps({"language": "english"}))
    options = LocalOptions(
        work_dir=tmp_path / "stack",
        models={"*": str(bundled.tiny_en_ct2())},
        idle_shutdown_seconds=3,
        log_file=tmp_path / "stack" / "worker.log",
    )
    state_file = tmp_path / "uploads.sqlite3"
    with LocalDeployment(options) as deployment:
        settings = tmp_path / "onprem.toml"
        settings.write_text(
            f'bucket = "{deployment.stack.bucket}"\n'
            f'results_queue_url = "{deployment.stack.results_queue_url}"\n'
            f'job_table = "{deployment.stack.job_table}"\n'
            f'state_file = "{state_file}"\n',
            encoding="utf-8",
        )
        args = build_parser().parse_args(
            [str(audio), "--aws", "--config", str(settings), "--work-dir", str(tmp_path / "run"),
             "--timeout", "300"]
        )  # fmt: skip

        result = run_local(args, Console(file=io.StringIO(), width=200))

        # The upload went through the on-prem uploader's own state: a second run sends nothing.
        again = run_local(args, Console(file=io.StringIO(), width=200))

    [fox] = result.statuses
    assert fox.name == "fox.mp3"
    assert fox.stage == "done"
    assert fox.result_status == "success_uncorrected"
    text = (result.output_dir / "fox.txt").read_text(encoding="utf-8")
    assert "quick brown fox" in text.lower()
    assert result.desired_capacity is None  # the ASG is not the on-prem user's to read
    assert result.exit_code == 0
    assert state_file.exists()
    assert again.statuses == []
    assert again.not_uploaded == []


def test_aws_mode_without_settings_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("PIPELINE_BUCKET", "RESULTS_QUEUE_URL", "JOB_TABLE", "ONPREM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "in").mkdir()

    code = main([str(tmp_path / "in"), "--aws", "--work-dir", str(tmp_path / "run")])

    assert code == 2
    assert "bucket is not set" in capsys.readouterr().out


def test_aws_mode_refuses_flags_that_belong_to_the_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([str(tmp_path), "--aws", "--model", "tiny.en"])

    assert code == 2
    assert "--aws uses the stack's" in capsys.readouterr().out
