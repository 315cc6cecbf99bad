"""The GPU-speed benchmark's stand-ins: the delaying proxy in front of a real moto server, and
the paced engine through the worker's engine interface. Nothing here asserts a speed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import boto3
import numpy as np
import pytest

from bench.latency import SEGMENT_SECONDS, DelayingProxy, PacedEngine, delaying_proxy
from bench.world import counted_clients
from gpu_worker.daemon import AwsClients
from gpu_worker.transcription.audio import SAMPLE_RATE
from gpu_worker.transcription.engines import AsrEngine
from local_mode.emulator import REGION, environment, moto_server


@pytest.fixture
def through_proxy() -> Iterator[tuple[AwsClients, Counter[str], DelayingProxy]]:
    """Clients whose calls go through the proxy to a moto server, their calls, the proxy."""
    with (
        moto_server() as emulator,
        environment(emulator.environment()),
        delaying_proxy(emulator.endpoint_url, 0.001) as proxy,
    ):
        session = boto3.Session(region_name=REGION)
        clients, calls = counted_clients(session, f"http://127.0.0.1:{proxy.server_port}")
        yield clients, calls, proxy


Proxied = tuple[AwsClients, Counter[str], DelayingProxy]


def test_the_proxy_forwards_each_call_with_its_body_and_length(through_proxy: Proxied) -> None:
    clients, _, _ = through_proxy
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value
    clients.s3.create_bucket(Bucket="proxied")
    clients.s3.put_object(Bucket="proxied", Key="audio.bin", Body=body)

    head = clients.s3.head_object(Bucket="proxied", Key="audio.bin")
    assert head["ContentLength"] == len(body)  # a HEAD keeps the object's length
    assert clients.s3.get_object(Bucket="proxied", Key="audio.bin")["Body"].read() == body
    with pytest.raises(clients.s3.exceptions.ClientError, match="404"):
        clients.s3.head_object(Bucket="proxied", Key="missing")

    url = clients.sqs.create_queue(QueueName="proxied")["QueueUrl"]
    clients.sqs.send_message(QueueUrl=url, MessageBody="hello")
    [message] = clients.sqs.receive_message(QueueUrl=url)["Messages"]
    assert message["Body"] == "hello"


def test_every_call_is_counted_and_proxied_once(through_proxy: Proxied) -> None:
    clients, calls, proxy = through_proxy
    clients.s3.create_bucket(Bucket="counted")
    for _ in range(3):
        clients.s3.list_objects_v2(Bucket="counted")
    clients.dynamodb.list_tables()
    assert calls == {"s3.CreateBucket": 1, "s3.ListObjectsV2": 3, "dynamodb.ListTables": 1}
    assert proxy.requests == 5  # no retries: one request per call


def test_the_paced_engine_returns_a_timed_transcript_of_the_whole_audio() -> None:
    engine: AsrEngine = PacedEngine(fraction=1 / 1000)
    seconds = 12.5
    audio = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
    done: list[float] = []

    segments = list(engine.transcribe(audio, "he", done.append))

    assert [s.start for s in segments] == [0.0, SEGMENT_SECONDS, 2 * SEGMENT_SECONDS]
    assert segments[-1].end == seconds
    assert done == [s.end for s in segments]
    for segment in segments:
        assert segment.text.strip()
        assert [w.text.strip() for w in segment.words] == segment.text.split()
        assert segment.words[0].start == segment.start
        assert segment.words[-1].end == pytest.approx(segment.end)
    assert isinstance(engine, PacedEngine)
    assert engine.busy_seconds >= seconds / 1000  # time.sleep sleeps at least as long
