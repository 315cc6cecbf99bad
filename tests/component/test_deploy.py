"""scripts/deploy.sh and scripts/teardown.sh (dry runs, no AWS) and their Python helpers."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tomllib
from pathlib import Path

import boto3
import pytest
import stage_config as stage_config_module

from cloudformation.deploy_tools import empty_bucket, main, onprem_toml, read_outputs
from cloudformation.emulated import REGION, create_emulated_stack

ROOT = Path(__file__).resolve().parents[2]
# No AWS anything, not even the AWS CLI on PATH: a dry run must need none of it.
BARE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}


def _script(
    name: str, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / name), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env or BARE_ENV,
        cwd="/",
        timeout=60,
        check=False,
    )


def _plan(stdout: str) -> list[list[str]]:
    """The commands a dry run printed, as argv lists (they are printed shell-quoted)."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def test_deploy_dry_run_prints_the_whole_plan_and_runs_nothing() -> None:
    run = _script(
        "deploy.sh",
        *("--dry-run", "--stage", "prod", "--region", "eu-west-1", "--ami-id", "ami-0abc"),
        *("--vpc-id", "vpc-01", "--subnets", "subnet-a,subnet-b"),
        *("--alarm-email", "ops@example.com", "--parameter", "MaxWorkers=2"),
    )
    assert run.returncode == 0, run.stderr
    plan = _plan(run.stdout)
    preflight, deploy, describe, stage_config, clean, chalice, invoke_config, toml_cmd = plan
    assert "preflight not run: no AWS credentials" in run.stdout

    # The preflight comes first and checks what the deploy will use.
    assert preflight[1:3] == ["-m", "cloudformation.preflight"]
    assert preflight[preflight.index("--region") + 1] == "eu-west-1"
    assert preflight[preflight.index("--stage") + 1] == "prod"
    assert "WorkerAmiId=ami-0abc" in preflight
    assert "MaxWorkers=2" in preflight
    assert "--bedrock-model-id" not in preflight  # the region's default model

    assert deploy[:3] == ["aws", "cloudformation", "deploy"]
    assert deploy[deploy.index("--template-file") + 1] == "cloudformation/pipeline.yaml"
    assert deploy[deploy.index("--region") + 1] == "eu-west-1"
    assert "CAPABILITY_IAM" in deploy
    overrides = deploy[deploy.index("--parameter-overrides") + 1 :]
    assert overrides == [
        "Stage=prod",
        "WorkerAmiId=ami-0abc",
        "VpcId=vpc-01",
        "SubnetIds=subnet-a,subnet-b",
        "AlarmEmail=ops@example.com",
        "MaxWorkers=2",
    ]

    outputs_file = describe[-1]
    assert describe[:3] == ["aws", "cloudformation", "describe-stacks"]
    assert describe[-2] == ">"
    assert stage_config[1:] == [
        "chalice_app/stage_config.py",
        *("--stage", "prod", "--outputs-json", outputs_file),
    ]
    # The Lambda bundle gets pipeline_core through a link, so its bytecode is removed first.
    assert clean[:2] == ["find", "pipeline_core"]
    assert "__pycache__" in clean
    assert chalice[-4:] == ["chalice_app", "deploy", "--stage", "prod"]
    assert "AWS_DEFAULT_REGION=eu-west-1" in chalice
    # Then what Chalice cannot set: the Dispatcher's asynchronous invocation config, from the
    # file stage_config.py wrote for this stage (tests/component/test_stage_config.py).
    assert invoke_config[:3] == ["aws", "lambda", "put-function-event-invoke-config"]
    assert invoke_config[invoke_config.index("--region") + 1] == "eu-west-1"
    assert invoke_config[invoke_config.index("--cli-input-json") + 1] == (
        f"file://chalice_app/.chalice/{stage_config_module.event_invoke_config_file('prod')}"
    )
    assert toml_cmd[-2:] == ["--outputs-json", outputs_file]

    # The on-prem settings it prints parse as TOML with the on-prem client's keys.
    toml_text = run.stdout[run.stdout.index("# On-prem settings") :]
    settings = tomllib.loads(toml_text)
    assert settings["region"] == "eu-west-1"
    assert settings["bucket"] == "<BucketName>"
    assert settings["results_dlq_url"] == "<ResultsDlqUrl>"


def test_deploy_passes_the_chosen_bedrock_model_to_the_preflight_and_the_stage() -> None:
    model = "eu.anthropic.claude-sonnet-4-6"
    run = _script("deploy.sh", "--dry-run", "--region", "eu-west-1", "--bedrock-model-id", model)
    assert run.returncode == 0, run.stderr
    preflight, _, _, stage_config, *_ = _plan(run.stdout)
    assert preflight[preflight.index("--bedrock-model-id") + 1] == model
    assert stage_config[-2:] == ["--bedrock-model-id", model]


def _fake_tools(tmp_path: Path, preflight_status: int) -> dict[str, str]:
    """An ``aws`` that logs its calls and succeeds (credentials exist), and a Python whose
    preflight prints a finding and exits with ``preflight_status``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    fake_aws = f'#!/bin/sh\necho "aws $*" >> {calls}\n'
    fake_python = (
        f'#!/bin/sh\necho "python $*" >> {calls}\n'
        f'echo "[FAIL] worker AMI: ami-0abc does not exist"\nexit {preflight_status}\n'
    )
    for name, text in (("aws", fake_aws), ("python", fake_python), ("chalice", "#!/bin/sh\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {
        **BARE_ENV,
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHON": str(bin_dir / "python"),
        "CHALICE": str(bin_dir / "chalice"),
    }


def test_a_dry_run_with_credentials_runs_the_preflight_and_nothing_else(tmp_path: Path) -> None:
    run = _script("deploy.sh", "--dry-run", "--ami-id", "ami-0abc", env=_fake_tools(tmp_path, 1))
    assert run.returncode == 0, run.stderr
    assert "[FAIL] worker AMI" in run.stdout
    assert "a real deploy would stop here" in run.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0].startswith("aws sts get-caller-identity")
    assert calls[1].startswith("python -m cloudformation.preflight")
    assert len(calls) == 2  # nothing else ran


def test_a_failed_preflight_stops_the_deploy_before_anything_changes(tmp_path: Path) -> None:
    run = _script(
        "deploy.sh", *("--ami-id", "ami-0abc", "--vpc-id", "vpc-1", "--subnets", "subnet-a"),
        env=_fake_tools(tmp_path, 1),
    )  # fmt: skip
    assert run.returncode == 1
    assert "preflight failed" in run.stderr
    assert "[FAIL] worker AMI" in run.stdout
    calls = (tmp_path / "calls.log").read_text()
    assert "python -m cloudformation.preflight" in calls
    assert "cloudformation deploy" not in calls  # the stack was never touched
    assert "stage_config" not in calls


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dry-run", "--stage", "Prod_1"], "--stage must be"),
        (["--dry-run", "--frobnicate"], "unknown option --frobnicate"),
    ],
)
def test_deploy_refuses_bad_arguments(args: list[str], message: str) -> None:
    run = _script("deploy.sh", *args)
    assert run.returncode == 2
    assert message in run.stderr
    assert "+ aws" not in run.stdout


def test_teardown_asks_for_the_stack_name_and_changes_nothing_without_it() -> None:
    run = _script("teardown.sh", "--dry-run", stdin="yes\n")
    assert run.returncode == 1
    assert "not confirmed" in run.stderr
    assert _plan(run.stdout) == []
    assert "bucket and its data are kept" in run.stdout


def test_teardown_dry_run_plan_keeps_the_bucket_unless_told() -> None:
    kept = _script("teardown.sh", "--dry-run", "--stage", "prod", stdin="transcription-pipeline\n")
    assert kept.returncode == 0, kept.stderr
    commands = [argv[:3] for argv in _plan(kept.stdout)]
    assert commands == [
        ["env", "AWS_DEFAULT_REGION=us-east-1", ".venv/bin/chalice"],
        ["aws", "cloudformation", "delete-stack"],
        ["aws", "cloudformation", "wait"],
    ]
    assert "kept bucket" in kept.stdout

    purge = _script("teardown.sh", "--dry-run", "--yes", "--delete-data", "--bucket", "b-1")
    assert purge.returncode == 0, purge.stderr
    assert "WARNING" in purge.stdout
    plan = _plan(purge.stdout)
    assert plan[-2][1:4] == ["-m", "cloudformation.deploy_tools", "empty-bucket"]
    assert plan[-2][-1] == "b-1"
    assert plan[-1][:3] == ["aws", "s3api", "delete-bucket"]


def test_onprem_settings_come_from_the_stack_outputs(tmp_path: Path) -> None:
    outputs = {
        "BucketName": "pipeline-bucket",
        "ResultsQueueUrl": "https://sqs/results",
        "JobTableName": "jobs",
        "AudioQueueUrl": "https://sqs/audio",
        "LlmQueueUrl": "https://sqs/llm",
        "AudioDlqUrl": "https://sqs/audio-dlq",
        "LlmDlqUrl": "https://sqs/llm-dlq",
        "ResultsDlqUrl": "https://sqs/results-dlq",
        "DispatcherDlqUrl": "https://sqs/dispatcher-dlq",
        "OnPremPolicyArn": "arn:aws:iam::1:policy/p",
    }
    described = tmp_path / "outputs.json"  # the shape `describe-stacks --query ...` writes
    described.write_text(
        json.dumps([{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()])
    )
    assert read_outputs(described) == outputs
    settings = tomllib.loads(onprem_toml(read_outputs(described), "eu-west-1"))
    assert settings == {
        "region": "eu-west-1",
        "bucket": "pipeline-bucket",
        "results_queue_url": "https://sqs/results",
        "job_table": "jobs",
        "audio_queue_url": "https://sqs/audio",
        "llm_queue_url": "https://sqs/llm",
        "audio_dlq_url": "https://sqs/audio-dlq",
        "llm_dlq_url": "https://sqs/llm-dlq",
        "results_dlq_url": "https://sqs/results-dlq",
        "dispatcher_dlq_url": "https://sqs/dispatcher-dlq",
    }
    del outputs["JobTableName"]
    with pytest.raises(ValueError, match="JobTableName"):
        onprem_toml(outputs, "eu-west-1")


def test_empty_bucket_removes_every_version_so_the_bucket_can_go(aws: None) -> None:
    stack = create_emulated_stack()
    s3 = boto3.client("s3", region_name=REGION)
    bucket = stack.outputs["BucketName"]
    for body in (b"one", b"two"):  # two versions of one key
        s3.put_object(Bucket=bucket, Key="audio-input/a.mp3", Body=body)
    s3.put_object(Bucket=bucket, Key="final-output/a.txt", Body=b"t")
    s3.delete_object(Bucket=bucket, Key="final-output/a.txt")  # a delete marker
    assert empty_bucket(s3, bucket) == 4
    s3.delete_bucket(Bucket=bucket)
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_deploy_tools_cli_prints_toml_from_a_real_stack(
    aws: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = create_emulated_stack()
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    (described,) = cloudformation.describe_stacks(StackName="transcription-pipeline")["Stacks"]
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(described["Outputs"], default=str))
    assert main(["onprem-toml", "--region", REGION, "--outputs-json", str(path)]) == 0
    settings = tomllib.loads(capsys.readouterr().out)
    assert settings["bucket"] == stack.outputs["BucketName"]
    assert settings["results_queue_url"] == stack.outputs["ResultsQueueUrl"]
    assert settings["audio_dlq_url"] == stack.outputs["AudioDlqUrl"]
    assert os.path.basename(settings["llm_queue_url"]) == stack.outputs["LlmQueueName"]


def test_deploy_sizes_the_fleet_and_the_llm_callers_concurrency_as_stack_parameters() -> None:
    """--max-workers and --llm-concurrency reach the preflight and the stack; the LLM
    Caller's reserved concurrency then comes from the stack's output (stage_config.py)."""
    run = _script(
        "deploy.sh",
        *("--dry-run", "--ami-id", "ami-0abc", "--vpc-id", "vpc-01", "--subnets", "subnet-a"),
        *("--max-workers", "5", "--llm-concurrency", "8"),
    )
    assert run.returncode == 0, run.stderr
    preflight, deploy, *_ = _plan(run.stdout)
    overrides = deploy[deploy.index("--parameter-overrides") + 1 :]
    for parameter in ("MaxWorkers=5", "LlmCallerConcurrency=8"):
        assert parameter in overrides
        assert parameter in preflight
