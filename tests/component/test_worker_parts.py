"""The daemon's small parts on their own: stop decisions, progress, messages, IMDS, idling."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from support.worker_harness import FakeImds

from gpu_worker.delivery.messages import Malformed, read_audio_job
from gpu_worker.delivery.queues import QueueDepth
from gpu_worker.faults import STEPS, PausePoints
from gpu_worker.lifecycle.imds import ImdsClient, ImdsError
from gpu_worker.lifecycle.interruption import check_interruption
from gpu_worker.lifecycle.scale_to_zero import IdleClock
from gpu_worker.lifecycle.stopping import StopController, should_release
from gpu_worker.transcription.engine_cache import EngineCache
from gpu_worker.transcription.engines import AsrEngine, load_engine
from gpu_worker.transcription.progress import ProgressTracker
from gpu_worker.weights.bundled import tiny_en_ct2
from pipeline_core.config import ConfigError
from pipeline_core.contracts import AudioJob


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---- when to give the in-flight message back ------------------------------------------


@pytest.mark.parametrize(
    ("seconds_left", "deadline", "release"),
    [
        (None, None, False),  # rebalance advice, no deadline: finish the job
        (5000.0, None, False),
        (None, 1120.0, True),  # no pace known yet: cannot promise to finish
        (30.0, 1120.0, False),  # 30 s + 20 s margin fits in the 120 s notice
        (101.0, 1120.0, True),  # 101 s + 20 s margin does not
        (0.0, 1000.0, True),  # SIGTERM: the deadline is now
    ],
)
def test_should_release(seconds_left: float | None, deadline: float | None, release: bool) -> None:
    assert should_release(seconds_left, deadline, now=1000.0, margin=20.0) is release


def test_the_most_urgent_stop_wins() -> None:
    stop = StopController()
    assert stop.requested is None
    stop.request("rebalance recommendation", deadline=None)
    stop.request("spot terminate", deadline=2000.0)
    stop.request("SIGTERM", deadline=1500.0)
    stop.request("spot terminate", deadline=2000.0)  # repeated notices are one request
    assert stop.requested is not None
    assert stop.requested.reason == "SIGTERM"
    assert stop.wait(5.0) is True  # returns at once once a stop is requested


def test_progress_estimates_and_throttles(json_log: object) -> None:
    clock = Clock(0.0)
    progress = ProgressTracker(log_every_seconds=30.0, clock=clock)
    assert progress.seconds_left() is None
    assert progress.real_time_factor() is None
    clock.now = 10.0
    progress.update(600.0, 3600.0)  # 10 s of work for 10 minutes of audio
    assert progress.real_time_factor() == pytest.approx(10.0 / 600.0)
    assert progress.seconds_left() == pytest.approx(3000.0 * 10.0 / 600.0)
    clock.now = 20.0
    progress.update(1200.0, 3600.0)  # within 30 s of the last line: not logged
    clock.now = 41.0
    progress.update(2400.0, 3600.0)
    lines = [line for line in json_log.lines() if "audio_done_seconds" in line]  # type: ignore[attr-defined]
    assert [line["percent"] for line in lines] == [16.7, 66.7]
    assert lines[-1]["seconds_left"] == pytest.approx(1200.0 * 41.0 / 2400.0, abs=0.1)


# ---- reading Audio Queue messages -------------------------------------------------------


def test_valid_message_is_an_audio_job() -> None:
    job = read_audio_job('{"s3_key": "a.mp3", "language": "Hebrew", "details": "בבא קמא"}')
    assert isinstance(job, AudioJob)
    assert job.object_key == "audio-input/a.mp3"
    assert job.language_code == "he"


@pytest.mark.parametrize(
    ("body", "source_key", "job_id"),
    [
        ("not json at all", None, None),
        ("[1, 2]", None, None),
        ('{"language": "en"}', None, None),  # no key: nobody to tell
        ('{"s3_key": "../../etc/passwd", "language": "en"}', None, None),
        ('{"s3_key": "a.mp3", "language": "klingon", "job_id": "j7"}', "audio-input/a.mp3", "j7"),
        ('{"s3_key": "audio-input/b.mp3"}', "audio-input/b.mp3", None),  # no language
    ],
)
def test_malformed_message_says_what_can_be_saved(
    body: str, source_key: str | None, job_id: str | None
) -> None:
    result = read_audio_job(body)
    assert isinstance(result, Malformed)
    assert result.reason.startswith("invalid audio job message")
    assert (result.source_key, result.job_id) == (source_key, job_id)


# ---- pause points -------------------------------------------------------------------


def test_pause_point_names_are_checked() -> None:
    with pytest.raises(ConfigError, match="WORKER_PAUSE_AFTER_STEP"):
        PausePoints("after_lunch")
    assert "transcript_written" in STEPS


def test_pause_holds_until_the_job_is_abandoned() -> None:
    class AbandonedError(Exception):
        pass

    deadline = time.monotonic() + 0.3

    def check() -> None:
        if time.monotonic() > deadline:
            raise AbandonedError

    PausePoints("downloaded").after("claimed", check)  # another step: returns at once
    with pytest.raises(AbandonedError):
        PausePoints("downloaded").after("downloaded", check)


# ---- idling -------------------------------------------------------------------------


def test_idle_clock_counts_while_nothing_waits() -> None:
    clock = Clock(0.0)
    idle = IdleClock(300.0, clock=clock)
    empty, waiting = QueueDepth(0, 0, 0), QueueDepth(1, 0, 0)
    clock.now = 299.0
    assert not idle.expired(empty)
    clock.now = 301.0
    assert not idle.expired(waiting)  # a message to take restarts the count
    clock.now = 600.0
    assert not idle.expired(empty)
    clock.now = 602.0
    # Another worker's job in flight does not keep this one (leave_group checks it holds
    # no more than the other workers).
    assert idle.expired(QueueDepth(0, 2, 0))
    assert not QueueDepth(0, 0, 1).nothing_waiting  # a delayed message is work on its way


# ---- IMDSv2 -------------------------------------------------------------------------


def test_fake_imds_insists_on_a_token(fake_imds: FakeImds) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(fake_imds.url + "/latest/meta-data/instance-id", timeout=2)
    assert refused.value.code == 401


def test_imds_client_reads_instance_and_notices(fake_imds: FakeImds) -> None:
    imds = ImdsClient(fake_imds.url)
    assert imds.instance_id() == fake_imds.instance_id
    assert imds.spot_notice() is None
    assert imds.rebalance_recommended() is False
    announced = time.time()
    fake_imds.announce_spot_interruption(in_seconds=120)
    notice = imds.spot_notice()
    assert notice is not None
    assert notice.action == "terminate"
    # IMDS states the time in whole seconds: announced + 120, truncated.
    assert announced + 119 <= notice.at <= time.time() + 120
    fake_imds.recommend_rebalance()
    assert imds.rebalance_recommended() is True
    assert fake_imds.refused == 0


def test_imds_client_renews_a_token_the_service_forgot(fake_imds: FakeImds) -> None:
    imds = ImdsClient(fake_imds.url)
    assert imds.instance_id() == fake_imds.instance_id
    fake_imds.tokens.clear()  # e.g. the service restarted
    assert imds.instance_id() == fake_imds.instance_id
    assert fake_imds.refused == 1


def test_imds_errors_are_imds_errors(fake_imds: FakeImds) -> None:
    fake_imds.spot_action = {"action": "terminate"}  # no time
    with pytest.raises(ImdsError, match="unreadable Spot notice"):
        ImdsClient(fake_imds.url).spot_notice()
    gone = FakeImds()
    gone.close()
    with pytest.raises(ImdsError):
        ImdsClient(gone.url, timeout_seconds=0.5).instance_id()


def test_notices_become_stop_requests(fake_imds: FakeImds) -> None:
    imds, stop = ImdsClient(fake_imds.url), StopController()
    check_interruption(imds, stop)
    assert stop.requested is None
    fake_imds.recommend_rebalance()
    check_interruption(imds, stop)
    assert stop.requested is not None
    assert stop.requested.deadline is None  # drain: finish the current job
    announced = time.time()
    fake_imds.announce_spot_interruption(in_seconds=120)
    check_interruption(imds, stop)
    assert stop.requested.reason == "spot terminate"
    assert stop.requested.deadline is not None
    assert announced + 119 <= stop.requested.deadline <= time.time() + 120
    assert json.dumps(fake_imds.spot_action)  # the notice the worker read


# ---- engines --------------------------------------------------------------------------


def test_engine_cache_loads_each_model_once() -> None:
    loads: list[str] = []

    def counting_loader(engine: str, model_dir: str, device: str) -> AsrEngine:
        loads.append(model_dir)
        return load_engine(engine, model_dir, device)

    tiny = str(tiny_en_ct2())
    cache = EngineCache("faster-whisper", {"en": tiny, "*": tiny}, "cpu", loader=counting_loader)
    assert cache.model_dir_for("he") == tiny
    first = cache.for_language("en")
    assert cache.for_language("fr") is first
    assert loads == [tiny]
    with pytest.raises(ValueError, match="default"):
        EngineCache("faster-whisper", {"en": tiny}, "cpu")
