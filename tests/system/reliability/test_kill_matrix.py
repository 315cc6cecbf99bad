"""The worker SIGKILLed at each step of its loop, in the whole pipeline (local mode).

The emulated Auto Scaling Group starts a replacement process (as systemd or a new Spot
instance would); it must finish the job once, and the transcript must reach Bedrock once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.audio_factory import speech_mp3
from support.waiting import wait_until
from system.reliability.conftest import Report
from system.reliability.scenario import scenario

from pipeline_core.jobs import JobState

pytestmark = pytest.mark.slow

# step -> what the kill leaves behind. (The daemon's other pause points, "claimed" and
# "marked_transcribed", fall in the same windows as their neighbours here;
# tests/system/test_worker_process.py kills at some of them too.)
KILL_STEPS = {
    "downloaded": "audio on local disk, nothing written",
    "prefetched": "job claimed, audio decoded, waiting for the engine",
    "mid_transcription": "transcription half done",
    "transcript_written": "transcript in S3, LLM job not sent",
    "llm_job_sent": "LLM job sent, audio message not deleted",
}


@pytest.mark.parametrize("step", list(KILL_STEPS))
def test_worker_killed_at_a_step_is_replaced_and_the_job_ends_once(
    tmp_path: Path, fox_mp3: Path, report: Report, step: str
) -> None:
    with scenario(tmp_path, worker={"WORKER_PAUSE_AFTER_STEP": step}) as run:
        upload = run.upload("fox.mp3", fox_mp3)
        run.wait_worker_line(lambda line: line.get("pause_step") == step)
        del run.deployment.options.worker_overrides["WORKER_PAUSE_AFTER_STEP"]
        pid = run.kill_worker()

        recovered = run.wait_finished()
        run.wait_scaled_in()
        figures = run.check()

        assert figures.succeeded == 1
        record = run.record(upload)
        assert record is not None
        fox_calls = [c for c in run.model.converse_calls() if "fox" in c.user.lower()]
        assert len(fox_calls) == 1, "the transcript reached Bedrock more than once"
        assert (
            "fox"
            in run.s3.get_object(Bucket=run.bucket, Key="final-output/fox.txt")["Body"]
            .read()
            .decode()
            .lower()
        )
        scaler = run.deployment.scaler
        assert scaler is not None
        starts = [e.what for e in scaler.state.events if "worker started" in e.what]
        assert len(starts) >= 2  # the killed worker and its replacement
        assert any(str(pid) in e for e in starts)
    report(
        fault=f"worker SIGKILL after step `{step}`",
        happened=f"{KILL_STEPS[step]}; the ASG's replacement worker took the message",
        outcome="finished once, 1 Bedrock call",
        figures={
            **figures.as_dict(),
            "bedrock_calls": len(fox_calls),
            "outcome_after_kill_s": round(recovered, 1),
        },
    )


FLEET = 3
FLEET_TEXTS = {
    "fox.mp3": None,  # the shared fox recording
    "rain.mp3": "Heavy rain fell on the quiet village.",
    "cat.mp3": "The old cat watches the birds from the window.",
}


@pytest.mark.parametrize("step", list(KILL_STEPS))
def test_three_workers_killed_at_a_step_are_replaced_and_each_job_ends_once(
    tmp_path: Path, fox_mp3: Path, report: Report, step: str
) -> None:
    """A fleet of 3 (one per waiting recording): all three SIGKILLed at the same step of
    their jobs; the group's replacements finish each job once, each transcript reaches
    Bedrock once, and the group goes back to 0."""
    audio = {
        name: fox_mp3 if text is None else speech_mp3(tmp_path / name, text)
        for name, text in FLEET_TEXTS.items()
    }
    # One job per worker, so that each of the three is at the step when they are killed: with
    # prefetch the first worker up would take a second job ahead and leave a third idle. The
    # prefetch states are killed in the one-worker matrix and the test after this one; the
    # fleet runs with prefetch in test_duplicates and test_load.
    one_job_each = {"WORKER_PAUSE_AFTER_STEP": step, "WORKER_PREFETCH": "false"}
    with scenario(tmp_path / "run", worker=one_job_each, max_workers=FLEET) as run:
        for name, path in audio.items():
            run.upload(name, path)
        paused: set[int] = set()

        def all_paused() -> bool:
            paused.update(
                int(line["pid"]) for line in run.worker_lines() if line.get("pause_step") == step
            )
            return len(paused) == FLEET

        wait_until(all_paused, 180, f"{FLEET} workers paused after {step}")
        del run.deployment.options.worker_overrides["WORKER_PAUSE_AFTER_STEP"]
        for pid in paused:
            run.kill_worker(pid)

        recovered = run.wait_finished()
        run.wait_scaled_in()
        figures = run.check()

        assert figures.succeeded == FLEET
        calls = run.model.converse_calls()
        assert len(calls) == FLEET, "a transcript reached Bedrock more than once"
        assert len([c for c in calls if "fox" in c.user.lower()]) == 1
        scaler = run.deployment.scaler
        assert scaler is not None
        assert scaler.state.most_workers_at_once == FLEET
        starts = [e.what for e in scaler.state.events if "worker started" in e.what]
        assert len(starts) >= 2 * FLEET  # the killed workers and their replacements
    report(
        fault=f"{FLEET} workers SIGKILLed after step `{step}`",
        happened=f"{KILL_STEPS[step]}, three times at once; the group's replacements took "
        "the messages",
        outcome=f"{FLEET} jobs finished once each, 1 Bedrock call each",
        figures={
            **figures.as_dict(),
            "bedrock_calls": len(calls),
            "workers_started": len(starts),
            "outcome_after_kill_s": round(recovered, 1),
        },
    )


def test_worker_killed_with_a_job_on_the_engine_and_the_next_prefetched(
    tmp_path: Path, fox_mp3: Path, report: Report
) -> None:
    """The prefetcher claims the next job while the first is transcribed: a SIGKILL then
    leaves two claims behind, and the replacement must finish each job once."""
    elephants = speech_mp3(tmp_path / "elephants.mp3", "Seven purple elephants sing in the rain.")
    with scenario(tmp_path, worker={"WORKER_PAUSE_AFTER_STEP": "mid_transcription"}) as run:
        uploads = [run.upload("fox.mp3", fox_mp3), run.upload("elephants.mp3", elephants)]
        run.wait_worker_line(lambda line: line.get("pause_step") == "mid_transcription")
        wait_until(
            lambda: sum(line["message"] == "claimed the job" for line in run.worker_lines()) == 2,
            60,
            "the next job to be claimed ahead",
        )
        del run.deployment.options.worker_overrides["WORKER_PAUSE_AFTER_STEP"]
        run.kill_worker()

        recovered = run.wait_finished()
        run.wait_scaled_in()
        figures = run.check()

        assert figures.succeeded == 2
        for upload in uploads:
            record = run.record(upload)
            assert record is not None
            assert record.state is JobState.SUCCEEDED
        for word in ("fox", "elephant"):
            calls = [c for c in run.model.converse_calls() if word in c.user.lower()]
            assert len(calls) == 1, f"the {word} transcript reached Bedrock {len(calls)} times"
    report(
        fault="worker SIGKILL with one job mid-transcription and the next prefetched",
        happened="two jobs claimed by the dead worker; the replacement took both messages",
        outcome="each finished once, 1 Bedrock call each",
        figures={**figures.as_dict(), "outcome_after_kill_s": round(recovered, 1)},
    )
