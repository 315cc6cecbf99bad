"""One job ahead: the next message is claimed, downloaded and decoded while the engine works.

The engine stand-in looks at the job table while it transcribes the first recording; the
rest of the worker (moto, the real MP3s, the real decoder) is as in production.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.waiting import wait_until
from support.worker_fixtures import JsonLog
from support.worker_harness import Pipeline

from gpu_worker.daemon import EXIT_OK, Worker
from gpu_worker.delivery.prefetch import Poll, Prefetcher
from gpu_worker.lifecycle.stopping import StopController
from gpu_worker.transcription.audio import SAMPLE_RATE
from gpu_worker.transcription.engine_cache import EngineCache
from gpu_worker.transcription.transcript import Segment
from pipeline_core.jobs import JobField, JobState

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class ObservingEngine:
    """Runs ``observe`` during its first transcription, then returns one segment a file."""

    model_id = "test:observing"

    def __init__(self, observe: Callable[[], None]) -> None:
        self.observe: Callable[[], None] | None = observe

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        language_code: str,
        progress: Callable[[float], None] | None = None,
        hotwords: str | None = None,
    ) -> Iterator[Segment]:
        observe, self.observe = self.observe, None
        if observe is not None:
            observe()
        yield Segment(0.0, audio.size / SAMPLE_RATE, " the quick brown fox")


def observing_worker(pipeline: Pipeline, engine: ObservingEngine, *, prefetch: bool) -> Worker:
    worker = pipeline.worker(prefetch=prefetch)
    worker.engines = EngineCache(
        worker.settings.engine,
        worker.settings.models,
        worker.settings.device,
        loaded={worker.settings.models["*"]: engine},
    )
    return worker


@pytest.mark.parametrize(
    "prefetch",
    [
        pytest.param(True, id="prefetch"),  # the fast loop's check of prefetching
        pytest.param(False, id="one-at-a-time", marks=pytest.mark.slow),
    ],
)
def test_the_next_job_is_claimed_and_downloaded_while_the_engine_works(
    pipeline: Pipeline, fox_mp3: Path, json_log: JsonLog, prefetch: bool
) -> None:
    first = pipeline.dispatch(pipeline.upload("first.mp3", fox_mp3))
    second = pipeline.dispatch(pipeline.upload("second.mp3", fox_mp3))
    seen: dict[str, object] = {}

    def observe() -> None:
        # The first message taken is either upload's: the other one is the "next job".
        transcribing = next(
            job_id
            for job_id in (first, second)
            if pipeline.job(job_id).state is JobState.TRANSCRIBING
        )
        other = second if transcribing == first else first
        if prefetch:
            wait_until(
                lambda: pipeline.job(other).state is JobState.TRANSCRIBING,
                30,
                "the next job to be claimed while the first is transcribed",
            )
            wait_until(
                lambda: json_log.count("downloaded the audio") == 2,
                30,
                "the next job's audio to be downloaded",
            )
        seen["other state"] = pipeline.job(other).state
        seen["downloads"] = json_log.count("downloaded the audio")

    assert observing_worker(pipeline, ObservingEngine(observe), prefetch=prefetch).run() == EXIT_OK

    if prefetch:
        assert seen == {"other state": JobState.TRANSCRIBING, "downloads": 2}
    else:
        assert seen == {"other state": JobState.QUEUED, "downloads": 1}
    assert {job.job_id for job in pipeline.llm_jobs()} == {first, second}
    for job_id in (first, second):
        job = pipeline.job(job_id)
        assert job.state is JobState.TRANSCRIBED
        assert job.attributes[JobField.ATTEMPTS] == 1
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (0, 0)


def test_pausing_the_prefetcher_drops_the_job_nobody_took() -> None:
    prepared = iter(["job-1", "job-2"])
    fetched: list[str | Poll] = []
    dropped: list[str] = []

    def fetch(halted: Callable[[], bool]) -> str | Poll:
        item = next(prepared, Poll.EMPTY)
        fetched.append(item)
        return item

    prefetcher: Prefetcher[str] = Prefetcher(fetch, dropped.append)
    stop = StopController()
    assert prefetcher.take(stop) == "job-1"
    wait_until(lambda: "job-2" in fetched, 10, "job-2 to be prepared ahead")
    prefetcher.pause()  # job-2 waits in the slot, or its hand-over is cut short
    assert dropped == ["job-2"]
    assert prefetcher.take(stop) is None  # started again: the queue is empty now
    prefetcher.pause()
    assert dropped == ["job-2"]


def test_pausing_does_not_wait_for_a_fetch_that_waits_for_the_job_in_the_slot() -> None:
    """The fetch under way holds a duplicate delivery of the prepared job, which waits until
    that job is let go (``Worker.take_in_hand``): ``pause`` drops the prepared job first."""
    dropped: list[str] = []
    let_go, duplicate_waits = threading.Event(), threading.Event()
    released_by_the_drop: list[bool] = []
    fetches = iter(["job-0", "job-1"])

    def fetch(halted: Callable[[], bool]) -> str | Poll:
        item = next(fetches, None)
        if item is not None:
            return item
        duplicate_waits.set()  # job-1 was handed over: it waits in the slot
        released_by_the_drop.append(let_go.wait(timeout=10))  # the duplicate of job-1
        return "job-1-duplicate"

    def drop(item: str) -> None:
        dropped.append(item)
        if item == "job-1":
            let_go.set()

    prefetcher: Prefetcher[str] = Prefetcher(fetch, drop)
    assert prefetcher.take(StopController()) == "job-0"
    assert duplicate_waits.wait(timeout=10)
    prefetcher.pause()
    assert released_by_the_drop == [True]  # not the 10 s timeout: pause let job-1 go
    assert dropped == ["job-1", "job-1-duplicate"]
