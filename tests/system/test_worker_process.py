"""The daemon as a real process (``python -m gpu_worker``) against moto's HTTP server.

These tests kill the worker with SIGKILL at a named step (``WORKER_PAUSE_AFTER_STEP``)
and start a fresh one, as systemd or a replacement instance would. The reliability suite
extends ``KILL_MATRIX``; every entry must end with the job transcribed exactly once.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.worker_harness import Pipeline, WorkerProcess

from gpu_worker.daemon import EXIT_CONFIG, EXIT_OK
from pipeline_core.jobs import JobField, JobState

pytestmark = pytest.mark.slow

# step -> LLM jobs sent in total. "llm_job_sent" would give 2: the kill falls between
# SendMessage and the job table's record of it, the one window where a duplicate LLM job
# (harmless: the LLM Caller skips completed jobs) cannot be avoided on a standard queue.
KILL_MATRIX = {"mid_transcription": 1, "transcript_written": 1}
START_TIMEOUT = 90.0


@pytest.fixture
def served(moto_endpoint: str) -> Pipeline:
    return Pipeline.create(endpoint_url=moto_endpoint)


@pytest.fixture
def worker_env(served: Pipeline, tmp_path: Path) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(**overrides: str) -> WorkerProcess:
        # A killed worker leaves its download behind; on EC2 systemd's PrivateTmp drops it.
        process = WorkerProcess(served.environment(TMPDIR=str(tmp_path), **overrides))
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def paused_at(step: str) -> Any:
    return lambda line: line.get("pause_step") == step


@pytest.mark.parametrize("step", sorted(KILL_MATRIX))
def test_killed_worker_is_replaced_and_the_job_finishes_once(
    served: Pipeline, fox_mp3: Path, worker_env: Any, step: str
) -> None:
    key = served.upload("fox.mp3", fox_mp3)
    job_id = served.dispatch(key)

    doomed = worker_env(WORKER_PAUSE_AFTER_STEP=step)
    doomed.wait_for(paused_at(step), timeout=START_TIMEOUT)
    doomed.kill()
    assert served.job(job_id).state is JobState.TRANSCRIBING
    assert served.depth(served.stack.llm_queue_url) == (0, 0)

    replacement = worker_env()  # gets the message once its visibility (6 s) runs out
    assert replacement.wait(timeout=START_TIMEOUT) == EXIT_OK, replacement.log()

    llm_jobs = served.llm_jobs()
    assert len(llm_jobs) == KILL_MATRIX[step]
    assert {job.job_id for job in llm_jobs} == {job_id}
    job = served.job(job_id)
    assert job.state is JobState.TRANSCRIBED
    assert JobField.LLM_JOB_SENT_AT in job.attributes
    assert "quick brown fox" in served.text(llm_jobs[0].timed_key).lower()
    assert served.depth(served.stack.audio_queue_url) == (0, 0)
    assert served.drain(served.stack.audio_dlq_url) == []
    resumed = any("earlier delivery" in line["message"] for line in replacement.lines)
    assert resumed is (step == "transcript_written")  # a written transcript is not redone
    assert job.attributes[JobField.ATTEMPTS] == 2  # two deliveries claimed it
    job_lines = [line for line in replacement.lines if line.get("job_id") == job_id]
    assert job_lines
    assert all(line["s3_key"] == key for line in job_lines)


# pause step -> the job's state after a SIGTERM there: a job on the engine keeps its claim,
# one prefetched (downloaded, waiting for the engine) has it given back.
SIGTERM_STATES = {"mid_transcription": JobState.TRANSCRIBING, "downloaded": JobState.QUEUED}


@pytest.mark.parametrize("step", list(SIGTERM_STATES))
def test_sigterm_gives_the_message_back_at_once(
    served: Pipeline, fox_mp3: Path, worker_env: Any, step: str
) -> None:
    key = served.upload("fox.mp3", fox_mp3)
    job_id = served.dispatch(key)
    worker = worker_env(
        WORKER_PAUSE_AFTER_STEP=step,
        VISIBILITY_TIMEOUT_SECONDS="300",
        HEARTBEAT_SECONDS="60",
    )
    worker.wait_for(paused_at(step), timeout=START_TIMEOUT)

    worker.terminate()  # what `systemctl stop` and an instance shutdown send
    assert worker.wait(timeout=30) == EXIT_OK

    assert served.depth(served.stack.audio_queue_url) == (1, 0)  # visible now, not in 300 s
    assert served.job(job_id).state is SIGTERM_STATES[step]
    assert any(line.get("stop_reason") == "SIGTERM" for line in worker.lines)


def test_sigusr1_writes_every_threads_stack_and_the_worker_goes_on(
    served: Pipeline, fox_mp3: Path, worker_env: Any
) -> None:
    """What an operator sends a worker that looks stuck: the stacks come out in its log, and
    the worker is left as it was (here paused mid-transcription, then stopped as usual)."""
    served.dispatch(served.upload("fox.mp3", fox_mp3))
    worker = worker_env(WORKER_PAUSE_AFTER_STEP="mid_transcription")
    worker.wait_for(paused_at("mid_transcription"), timeout=START_TIMEOUT)

    worker.process.send_signal(signal.SIGUSR1)
    worker.wait_for(
        lambda line: bool(line.get("raw")) and "in after" in line["message"], timeout=30
    )  # the main thread's frame in PausePoints.after, where it waits

    assert worker.process.poll() is None
    stacks = [line["message"] for line in worker.lines if line.get("raw")]
    assert any(line.startswith("Thread 0x") for line in stacks)
    assert any("gpu_worker/daemon.py" in line for line in stacks)
    worker.terminate()
    assert worker.wait(timeout=30) == EXIT_OK


def test_bad_configuration_exits_2_naming_the_variable(served: Pipeline, worker_env: Any) -> None:
    worker = worker_env(WORKER_MODELS="en=/nowhere")  # no '*' default
    assert worker.wait(timeout=60) == EXIT_CONFIG
    assert any("WORKER_MODELS" in line["message"] for line in worker.lines), worker.log()
