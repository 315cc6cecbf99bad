"""Three workers racing over the same messages: the job table's claims hold with N workers.

Each job's Audio Queue message is there three times (a duplicate S3 event, a redelivery);
three in-process workers, each with its own clients and worker id, take them at once, their
first claims released together by a barrier. Whatever the interleaving, each job is handed
to the LLM Caller once, no failure Result is sent, and each job ends transcribed by one of
them.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support.audio_factory import speech_mp3
from support.worker_harness import Pipeline

from gpu_worker.daemon import EXIT_OK, AwsClients
from pipeline_core.jobs import JobField, JobState

pytestmark = pytest.mark.slow  # real weights, three workers transcribing

WORKERS = 3
COPIES = 3
FIRST_CLAIM = "before-call.dynamodb.UpdateItem"


def _own_clients(pipeline: Pipeline) -> AwsClients:
    stack = pipeline.stack
    return AwsClients(
        sqs=stack.client("sqs"),
        s3=stack.client("s3"),
        dynamodb=stack.client("dynamodb"),
        autoscaling=stack.client("autoscaling"),
    )


def test_three_workers_over_duplicated_messages_finish_each_job_once(
    pipeline: Pipeline, fox_mp3: Path, tmp_path: Path
) -> None:
    dog = speech_mp3(tmp_path / "dog.mp3", "A lazy dog sleeps in the sun all day.")
    job_ids = [
        pipeline.dispatch(pipeline.upload("fox.mp3", fox_mp3)),
        pipeline.dispatch(pipeline.upload("dog.mp3", dog)),
    ]
    for body in pipeline.drain(pipeline.stack.audio_queue_url):
        for _ in range(COPIES):
            pipeline.send_audio(body)
    together = threading.Barrier(WORKERS, timeout=20)

    def worker(number: int) -> int:
        aws = _own_clients(pipeline)
        waited: list[bool] = []

        def claim_together(**_: Any) -> None:
            if not waited:
                waited.append(True)
                # A worker that found nothing to claim breaks it: the others go on.
                with contextlib.suppress(threading.BrokenBarrierError):
                    together.wait()

        aws.dynamodb.meta.events.register(FIRST_CLAIM, claim_together)
        return pipeline.worker(aws=aws, instance_id=f"worker-{number}").run()

    with ThreadPoolExecutor(WORKERS) as pool:
        codes = list(pool.map(worker, range(WORKERS)))

    assert codes == [EXIT_OK] * WORKERS
    handed_off = [str(job.job_id) for job in pipeline.llm_jobs()]
    assert sorted(handed_off) == sorted(job_ids)  # each job once to the LLM Caller
    assert pipeline.results() == []  # no failure Result, let alone two
    for job_id in job_ids:
        record = pipeline.job(job_id)
        assert record.state is JobState.TRANSCRIBED
        assert str(record.attributes[JobField.WORKER_ID]).startswith("worker-")
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (0, 0)
