"""A worker that cannot work: the daemon leaves the cause, the give-back program reports it
and gives the instance back (``gpu_worker.lifecycle.give_back``), in moto.

The whole story, with systemd's restarts played from the unit file and the operator's fix,
is tests/system/reliability/test_worker_cannot_start.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.worker_harness import FakeImds, Pipeline

from cloudformation.stack import load_template
from gpu_worker import daemon
from gpu_worker.lifecycle import give_back
from local_mode.template import alarm_condition_met
from pipeline_core.config import ENV_ASG_NAME, ENV_IMDS_ENDPOINT, ENV_INSTANCE_ID
from pipeline_core.contracts import AudioJob


def worker_environment(
    pipeline: Pipeline, state_directory: Path, **overrides: str
) -> dict[str, str]:
    """What the instance's env file holds (and systemd's StateDirectory= adds)."""
    return {
        "PIPELINE_BUCKET": pipeline.stack.bucket,
        "JOB_TABLE": pipeline.stack.job_table,
        "AUDIO_QUEUE_URL": pipeline.stack.audio_queue_url,
        "LLM_QUEUE_URL": pipeline.stack.llm_queue_url,
        "RESULTS_QUEUE_URL": pipeline.stack.results_queue_url,
        "WORKER_DEVICE": "cpu",
        give_back.ENV_STATE_DIRECTORY: str(state_directory),
        **overrides,
    }


def fatal_exit_alarm_condition_met(pipeline: Pipeline) -> bool:
    cloudwatch = pipeline.stack.client("cloudwatch")
    return alarm_condition_met(
        load_template(), "WorkerFatalExitAlarm", pipeline.stack.ids, cloudwatch
    )


def logged(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_model_that_does_not_load_is_reported_and_the_instance_given_back(
    pipeline: Pipeline,
    fake_imds: FakeImds,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    group = pipeline.start_gpu_instance()
    assert pipeline.instance_id is not None
    fake_imds.instance_id = pipeline.instance_id
    waiting = AudioJob(s3_key="audio-input/lecture.mp3", language="english", details="")
    pipeline.send_audio(waiting.to_json())
    missing_model = tmp_path / "no-such-model"
    environ = worker_environment(
        pipeline,
        tmp_path,
        WORKER_MODELS=f"*={missing_model}",
        **{ENV_ASG_NAME: group, ENV_IMDS_ENDPOINT: fake_imds.url},
    )
    (tmp_path / give_back.FATAL_EXIT_FILE).write_text('{"cause": "an earlier run"}')
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    assert daemon.main() == daemon.EXIT_FAILURE
    recorded = json.loads((tmp_path / give_back.FATAL_EXIT_FILE).read_text())
    assert recorded["exit_code"] == daemon.EXIT_FAILURE
    assert recorded["cause"].startswith(
        f"ModelLoadError: could not load the default model '{missing_model}' with the "
        "faster-whisper engine on cpu:"
    )
    capsys.readouterr()

    assert give_back.main(environ) == give_back.EXIT_GIVEN_BACK

    [reported] = [
        line
        for line in logged(capsys.readouterr().err)
        if str(line["message"]).startswith("the worker cannot work; giving its instance back")
    ]
    assert reported["level"] == "ERROR"
    assert reported["cause"] == recorded["cause"]
    assert reported["instance_id"] == pipeline.instance_id
    after = pipeline.group()
    assert after["DesiredCapacity"] == 0
    assert [i["InstanceId"] for i in after["Instances"]] == []
    assert [p["ProcessName"] for p in after["SuspendedProcesses"]] == ["AlarmNotification"]
    assert alarm_condition_met(
        load_template(),
        "WorkerFatalExitAlarm",
        pipeline.stack.ids,
        pipeline.stack.client("cloudwatch"),
    )
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (1, 0)  # untouched


def test_the_give_back_calls_only_its_own_group(pipeline: Pipeline) -> None:
    """Its Auto Scaling calls, as the template's WorkerPolicy grants them (and the group's
    suspended process is the one the queue-depth alarm scales through)."""
    group = pipeline.start_gpu_instance()
    assert pipeline.instance_id is not None
    called: list[tuple[str, str | None]] = []

    def record(event_name: str, params: dict[str, Any], **_: Any) -> None:
        called.append((event_name.rsplit(".", 1)[-1], params.get("AutoScalingGroupName")))

    pipeline.autoscaling.meta.events.register("provide-client-params.auto-scaling", record)
    give_back.give_back(
        pipeline.autoscaling,
        pipeline.stack.client("cloudwatch"),
        give_back.Instance(group, pipeline.instance_id),
    )
    assert called == [
        ("SuspendProcesses", group),
        ("TerminateInstanceInAutoScalingGroup", None),
    ]


def test_a_configuration_error_is_the_cause_even_with_no_instance_to_give_back(
    pipeline: Pipeline,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = worker_environment(pipeline, tmp_path, WORKER_MODELS="en=/models/en")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    assert daemon.main() == daemon.EXIT_CONFIG
    capsys.readouterr()
    assert give_back.main(environ) == give_back.EXIT_GIVEN_BACK  # nothing to give back

    [reported] = [line for line in logged(capsys.readouterr().err) if line["level"] == "ERROR"]
    assert "no Auto Scaling group to leave" in str(reported["message"])
    assert "WORKER_MODELS needs a default entry" in str(reported["message"])
    assert not alarm_condition_met(
        load_template(),
        "WorkerFatalExitAlarm",
        pipeline.stack.ids,
        pipeline.stack.client("cloudwatch"),
    )


def test_an_instance_it_cannot_name_is_not_given_back(
    pipeline: Pipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    group = pipeline.start_gpu_instance()
    environ = worker_environment(pipeline, tmp_path, **{ENV_ASG_NAME: group})
    assert ENV_INSTANCE_ID not in environ
    assert ENV_IMDS_ENDPOINT not in environ

    assert give_back.main(environ) == give_back.EXIT_NOT_GIVEN_BACK
    assert "its instance is unknown" in capsys.readouterr().err
    assert pipeline.group()["DesiredCapacity"] == 1
