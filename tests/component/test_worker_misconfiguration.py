"""A denied read is the deployment's fault: the worker keeps the job and stops taking work.

Without ``s3:ListBucket`` (and ``s3:GetObject``) on ``transcriptions/``, S3 answers the
worker's HEAD of a transcript not yet written with 403. moto answers 404 whatever the
caller's grants, so the 403 is stubbed into the worker's S3 client (``s3_answers``). The
worker HEADs the transcript's name on a redelivery (what did the earlier attempt write?) and
when one of its keys is taken; a first delivery of a new name writes without looking.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.s3_answers import deny_reads_below
from support.worker_fixtures import JsonLog
from support.worker_harness import MAX_RECEIVES, Pipeline

from pipeline_core.jobs import JobField, JobState
from pipeline_core.keys import TRANSCRIPT_PREFIX, stem, transcript_keys


@pytest.mark.slow  # pauses the worker; not in the fast loop
@pytest.mark.parametrize("receive", [1, MAX_RECEIVES])
def test_a_denied_transcript_probe_keeps_the_job_and_pauses_the_worker(
    pipeline: Pipeline,
    fox_mp3: Path,
    json_log: JsonLog,
    monkeypatch: pytest.MonkeyPatch,
    receive: int,
) -> None:
    key = pipeline.upload("fox.mp3", fox_mp3)
    job_id = pipeline.dispatch(key)
    pipeline.dispatch(pipeline.upload("other.mp3", fox_mp3))  # the next job, left alone
    denied = deny_reads_below(pipeline.s3, TRANSCRIPT_PREFIX)
    worker = pipeline.worker(max_receives=receive, misconfiguration_pause_seconds=120)
    pauses: list[float] = []

    def wait(seconds: float) -> bool:
        pauses.append(seconds)
        return False

    monkeypatch.setattr(worker.stop, "wait", wait)
    # An earlier delivery claimed the job and died: this one looks for what it wrote.
    earlier = pipeline.jobs().move(
        job_id, JobState.TRANSCRIBING, expected=[JobState.QUEUED], count=JobField.ATTEMPTS
    )
    assert earlier.moved

    message = worker.queue.receive_one()
    assert message is not None
    worker.handle(message)  # on the last receive too: never a failure that blames the file

    assert denied == [transcript_keys(stem(key)).timed]
    assert pipeline.results() == []  # no failure Result
    job = pipeline.job(job_id)
    assert job.state is not JobState.FAILED
    reason = job.attributes[JobField.LAST_ERROR]
    assert reason.startswith(f"AccessDenied on HeadObject s3://{pipeline.stack.bucket}/")
    assert "the GPU worker's role needs s3:GetObject" in reason
    assert "s3:ListBucket" in reason
    [line] = [line for line in json_log.lines() if "configuration error" in line["message"]]
    assert line["level"] == "ERROR"
    assert "s3:ListBucket" in line["message"]
    # The message goes back (to the DLQ after its last receive), the next job is not taken,
    # and the worker waits for the fix instead of failing one job after another.
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (1, 1)
    assert pauses == [120]
