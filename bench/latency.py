"""The worker's own overhead as it would be on a GPU in AWS, measured on this machine.

Two stand-ins make this machine behave like a GPU instance in AWS:

- AWS latency: the worker's clients reach the moto server through a small HTTP proxy that
  holds every request for a fixed time before forwarding it. A proxy rather than a botocore
  hook, because it delays every call of the worker's process whichever thread or client makes
  it (the heartbeat too), holds the connection the way a slow network does, and leaves the
  worker's clients as they are.
- GPU speed: ``PacedEngine`` takes a fixed fraction of the audio's length (1/50: a T4 with a
  large model) and returns a plausible transcript; the worker gets it through its engine cache,
  as it gets a loaded model, so the daemon runs its own code path.

The overhead is the worker loop's time from its start to the last file's hand-off (its
message deleted) over the stand-in's busy time. It has three parts: the first file's fetch
before the engine starts, the engine's wait between files (what each file of a long batch
costs: the steady state) and the last file's hand-off after the engine's last segment; the
first and the last are paid once per batch, however many files it has. The idle exit after
the hand-off (the queue's depth read twice here, ``IdleShutdownSeconds`` of waiting in AWS)
is timed apart: it is the scale-in policy's time, which the cost model counts, not the loop's.
"""

from __future__ import annotations

import gc
import http.client
import itertools
import logging
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import boto3
import psutil

from bench.world import World, counted_clients, server_world
from cloudformation.emulated import REGION
from gpu_worker.transcription.audio import SAMPLE_RATE
from gpu_worker.transcription.transcript import Segment, Word

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import numpy.typing as npt

DEFAULT_CALL_LATENCY_MS: Final = 20.0
DEFAULT_ENGINE_FRACTION: Final = 1 / 50  # a T4 with a large Whisper model
SEGMENT_SECONDS: Final = 5.0
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "upgrade"}
)
_SENTENCES: Final = (
    "Thank you all for coming this morning.",
    "The first item on the agenda is the quarterly budget.",
    "We reviewed the figures with the finance team last week.",
    "There are two open questions about the delivery schedule.",
    "Let us come back to that after the break.",
)
SETTINGS: Final = (
    "gpu_worker.daemon.Worker.run in this process; every AWS call of the worker goes through "
    "an HTTP proxy that holds it for the stated latency in front of a moto server on "
    "127.0.0.1; the engine is a stand-in that takes the stated fraction of the audio's length "
    "and returns a transcript of one segment per 5 s; the files were uploaded and dispatched "
    "beforehand (not timed); loop = the worker's start to the last file's hand-off (its "
    "message deleted); overhead = loop seconds / stand-in seconds - 1, in three parts: the "
    "first file's fetch (the worker's start to the stand-in's start), the engine's wait "
    "between files ((the last file's end - the first file's start on the stand-in) / "
    "stand-in seconds - 1, the steady state) and the last file's hand-off (the stand-in's "
    "end to the hand-off); the idle exit after it is timed apart (with it: the overhead as "
    "runs before 2026-12-02 state it); peak RSS is the whole process (moto and the proxy "
    "included), sampled every 50 ms while the worker runs; kept MiB: what the process still "
    "holds after the batch that it allocated during it (tracemalloc, in one more run "
    "without the proxy and with the stand-in at 1/500, not timed), by the code that "
    "allocated it: the worker's (gpu_worker) and the emulator's (moto's store)"
)
RETAINED_FRACTION: Final = 1 / 500  # the traced run's stand-in: its time is not measured


class PacedEngine:
    """An ``AsrEngine`` that spends ``fraction`` of the audio's length per file, as a GPU would."""

    def __init__(self, fraction: float = DEFAULT_ENGINE_FRACTION) -> None:
        self.fraction = fraction
        self.busy_seconds = 0.0  # time spent transcribing, all files
        self.first_started: float | None = None  # perf_counter at the first file's start
        self.last_ended = 0.0  # perf_counter at the last file's end

    @property
    def model_id(self) -> str:
        return f"bench:paced-{self.fraction:g}"

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        language_code: str,
        progress: Callable[[float], None] | None = None,
        hotwords: str | None = None,
    ) -> Iterator[Segment]:
        duration = audio.size / SAMPLE_RATE
        sentences = itertools.cycle(_SENTENCES)
        start = 0.0
        while start < duration:
            end = min(start + SEGMENT_SECONDS, duration)
            started = time.perf_counter()
            if self.first_started is None:
                self.first_started = started
            time.sleep((end - start) * self.fraction)
            self.last_ended = time.perf_counter()
            self.busy_seconds += self.last_ended - started
            if progress is not None:
                progress(end)
            yield _segment(start, end, next(sentences))
            start = end


def _segment(start: float, end: float, text: str) -> Segment:
    """``text`` spread evenly over ``start``..``end``, a word timestamp each."""
    words = text.split()
    step = (end - start) / len(words)
    timed = tuple(
        Word(start + i * step, start + (i + 1) * step, f" {w}", 0.9) for i, w in enumerate(words)
    )
    return Segment(start=start, end=end, text=f" {text}", words=timed)


class _DelayingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    # TCP_NODELAY, as botocore's own connections have it: with Nagle's algorithm an answer's
    # body, written after its headers, can wait for the client's delayed ACK (40 ms on
    # Linux), a stall of this proxy's making that S3, SQS and DynamoDB do not add.
    disable_nagle_algorithm = True
    server: DelayingProxy
    _upstream: http.client.HTTPConnection | None = None

    def _forward(self) -> None:
        time.sleep(self.server.delay_seconds)
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(*self.server.upstream, timeout=120)
        self._upstream.request(self.command, self.path, body=body, headers=headers)
        response = self._upstream.getresponse()
        payload = response.read()
        self.server.count()
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        # A HEAD answer states the object's length without a body.
        length_header = response.getheader("Content-Length")
        sent_length = length_header if self.command == "HEAD" and length_header else len(payload)
        self.send_header("Content-Length", str(sent_length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the benchmark's log


class DelayingProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: tuple[str, int], delay_seconds: float) -> None:
        super().__init__(("127.0.0.1", 0), _DelayingHandler)
        self.upstream = upstream
        self.delay_seconds = delay_seconds
        self.requests = 0
        self._lock = threading.Lock()

    def count(self) -> None:
        with self._lock:
            self.requests += 1


@contextmanager
def delaying_proxy(upstream_url: str, delay_seconds: float) -> Iterator[DelayingProxy]:
    """An HTTP proxy on 127.0.0.1 that holds each request ``delay_seconds``, then forwards it
    to ``upstream_url``; its address is ``http://127.0.0.1:<server.server_port>``."""
    parts = urlsplit(upstream_url)
    server = DelayingProxy((parts.hostname or "127.0.0.1", parts.port or 80), delay_seconds)
    thread = threading.Thread(target=server.serve_forever, name="delaying-proxy", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class RssSampler:
    """Peak resident memory of this process, sampled while the block runs."""

    def __init__(self, interval_seconds: float = 0.05) -> None:
        self._process = psutil.Process()
        self.before = self._process.memory_info().rss
        self.peak = self.before
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


@dataclass(frozen=True)
class LatencyRun:
    files: int
    seconds_per_file: float
    call_latency_ms: float
    engine_fraction: float
    engine_seconds: float  # the stand-in's busy time, all files (best repeat)
    loop_seconds: float  # the worker's start to the last file's hand-off (best repeat)
    overhead: float  # loop / engine - 1 (target < 0.05 for 30 s files at 20 ms)
    overhead_ms_per_file: float  # (loop - engine) / files
    # The overhead's three parts: the first file's fetch, before the engine starts ...
    first_fetch_seconds: float
    # ... the engine's wait between files (the batch's steady state): span / engine - 1 ...
    between_files_overhead: float
    # ... and the last file's hand-off, after the engine's last segment.
    last_hand_off_seconds: float
    idle_exit_seconds: float  # the last hand-off to the worker's exit, apart from the loop
    overhead_with_idle_exit: float  # (loop + idle exit) / engine - 1, as earlier runs stated it
    api_calls_per_file: dict[str, float]  # service -> the worker's calls per file
    api_calls_by_operation_per_file: dict[str, float]  # "<service>.<Operation>" -> calls
    proxied_requests_per_file: float  # HTTP requests the proxy forwarded (retries included)
    rss_before_mib: float
    peak_rss_mib: float
    repeats: int
    # Allocated during the batch and still held after it (tracemalloc, one untimed run):
    # by the worker's code, flat however many files went through, and by moto's store.
    worker_kept_mib: float | None = None
    emulator_kept_mib: float | None = None


@dataclass(frozen=True)
class _Once:
    engine_seconds: float
    first_fetch_seconds: float  # the worker's start to the first file's start on the engine
    engine_span_seconds: float  # the first file's start on the engine to the last one's end
    last_hand_off_seconds: float  # the last file's end on the engine to its message deleted
    idle_exit_seconds: float  # the last message deleted to the worker's exit
    calls: Counter[str]
    proxied: int
    rss_before: int
    rss_peak: int

    @property
    def loop_seconds(self) -> float:
        return self.first_fetch_seconds + self.engine_span_seconds + self.last_hand_off_seconds


class _LastHandOff:
    """When the worker's last ``DeleteMessage`` (a job's hand-off, its last call) answered."""

    def __init__(self, session: boto3.Session) -> None:
        self.at: float | None = None
        session.events.register("after-call.sqs.DeleteMessage", self._answered)

    def _answered(self, **_: object) -> None:
        self.at = time.perf_counter()


def _upload_and_dispatch(world: World, audio: Path, language: str, files: int) -> None:
    """``files`` copies of ``audio`` uploaded and dispatched (not timed)."""
    records = [world.upload(f"file-{i:03d}{audio.suffix}", audio, language)[1]
               for i in range(files)]  # fmt: skip
    world.dispatch(records)


def _once(audio: Path, language: str, files: int, latency_ms: float, fraction: float) -> _Once:
    engine = PacedEngine(fraction)
    with server_world() as world:
        _upload_and_dispatch(world, audio, language, files)
        assert world.stack.endpoint_url is not None
        with delaying_proxy(world.stack.endpoint_url, latency_ms / 1000) as proxy:
            session = boto3.Session(region_name=REGION)
            last_hand_off = _LastHandOff(session)  # before the clients copy the hooks
            clients, calls = counted_clients(session, f"http://127.0.0.1:{proxy.server_port}")
            with RssSampler() as rss:
                started = time.perf_counter()
                world.run_worker(engine, "faster-whisper", "paced", "cpu", clients=clients)
                exited = time.perf_counter()
            proxied = proxy.requests
        handed_off = world.clients.sqs.get_queue_attributes(
            QueueUrl=world.stack.llm_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        if int(handed_off) != files:
            raise RuntimeError(f"the worker handed off {handed_off} of {files} files")
    assert engine.first_started is not None
    assert last_hand_off.at is not None
    return _Once(
        engine_seconds=engine.busy_seconds,
        first_fetch_seconds=engine.first_started - started,
        engine_span_seconds=engine.last_ended - engine.first_started,
        last_hand_off_seconds=last_hand_off.at - engine.last_ended,
        idle_exit_seconds=exited - last_hand_off.at,
        calls=calls,
        proxied=proxied,
        rss_before=rss.before,
        rss_peak=rss.peak,
    )


def _mib(value: int) -> float:
    return round(value / 2**20, 1)


def _kept(audio: Path, language: str, files: int) -> tuple[float, float]:
    """MiB allocated while the worker runs ``files`` copies of ``audio`` and still held
    after it: (by the worker's code, by moto's), each allocation counted once, for the
    first of the two found in its traceback (the worker calls moto's client code too)."""
    engine = PacedEngine(RETAINED_FRACTION)
    with server_world() as world:
        _upload_and_dispatch(world, audio, language, files)
        gc.collect()
        tracemalloc.start(32)
        try:
            before = tracemalloc.take_snapshot()
            world.run_worker(engine, "faster-whisper", "paced", "cpu")
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    worker = emulator = 0
    for stat in after.compare_to(before, "traceback"):
        names = [frame.filename for frame in stat.traceback]
        if any("/moto/" in name for name in names):
            emulator += stat.size_diff
        elif any("/gpu_worker/" in name for name in names):
            worker += stat.size_diff
    return round(worker / 2**20, 2), round(emulator / 2**20, 2)


def measure(
    audio: Path,
    language: str,
    audio_seconds: float,
    files: int,
    *,
    latency_ms: float = DEFAULT_CALL_LATENCY_MS,
    fraction: float = DEFAULT_ENGINE_FRACTION,
    repeats: int = 2,
) -> LatencyRun:
    """``files`` copies of ``audio`` through the worker, best of ``repeats`` fresh stacks."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the moto server's request lines
    runs = [_once(audio, language, files, latency_ms, fraction) for _ in range(repeats)]
    best = min(runs, key=lambda r: r.loop_seconds / r.engine_seconds)
    worker_kept, emulator_kept = _kept(audio, language, files)
    by_service: Counter[str] = Counter()
    for operation, count in best.calls.items():
        by_service[operation.split(".", 1)[0]] += count
    return LatencyRun(
        files=files,
        seconds_per_file=round(audio_seconds, 1),
        call_latency_ms=latency_ms,
        engine_fraction=fraction,
        engine_seconds=round(best.engine_seconds, 3),
        loop_seconds=round(best.loop_seconds, 3),
        overhead=round(best.loop_seconds / best.engine_seconds - 1, 4),
        overhead_ms_per_file=round(1000 * (best.loop_seconds - best.engine_seconds) / files, 1),
        first_fetch_seconds=round(best.first_fetch_seconds, 3),
        between_files_overhead=round(best.engine_span_seconds / best.engine_seconds - 1, 4),
        last_hand_off_seconds=round(best.last_hand_off_seconds, 3),
        idle_exit_seconds=round(best.idle_exit_seconds, 3),
        overhead_with_idle_exit=round(
            (best.loop_seconds + best.idle_exit_seconds) / best.engine_seconds - 1, 4
        ),
        api_calls_per_file={s: round(n / files, 2) for s, n in sorted(by_service.items())},
        api_calls_by_operation_per_file={
            op: round(n / files, 2) for op, n in sorted(best.calls.items())
        },
        proxied_requests_per_file=round(best.proxied / files, 2),
        rss_before_mib=_mib(min(r.rss_before for r in runs)),
        peak_rss_mib=_mib(max(r.rss_peak for r in runs)),
        repeats=repeats,
        worker_kept_mib=worker_kept,
        emulator_kept_mib=emulator_kept,
    )
