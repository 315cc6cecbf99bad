"""The worker SIGKILLed at each step of its loop, in the whole pipeline (local mode).

The emulated Auto Scaling Group starts a replacement process (as systemd or a new Spot
instance would); it must finish the job once, and the transcript must reach Bedrock once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from system.reliability.conftest import Report
from system.reliability.scenario import scenario

pytestmark = pytest.mark.slow

# step -> what the kill leaves behind. (The daemon's other pause points, "claimed",
# "marked_transcribed" and "handed_off", fall in the same windows as their neighbours here;
# tests/system/test_worker_process.py kills at some of them too.)
KILL_STEPS = {
    "downloaded": "audio on local disk, nothing written",
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
