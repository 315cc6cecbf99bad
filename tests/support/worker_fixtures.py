"""Fixtures of the worker daemon's tests (helpers live in ``harness``)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.audio_factory import speech_mp3
from support.worker_harness import FakeImds, Pipeline

from pipeline_core.jsonlog import JsonFormatter

FOX = "The quick brown fox jumps over the lazy dog."


@pytest.fixture
def pipeline(aws: None) -> Pipeline:
    """The pipeline's queues, bucket and job table in moto's in-process mock."""
    return Pipeline.create()


@pytest.fixture(scope="session")
def fox_mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_mp3(tmp_path_factory.mktemp("audio") / "fox.mp3", FOX)


@pytest.fixture
def fake_imds() -> Iterator[FakeImds]:
    server = FakeImds()
    yield server
    server.close()


class JsonLog:
    """The JSON lines the worker logged during a test, as the daemon writes them."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._stream.getvalue().splitlines() if line]

    def has(self, message_part: str) -> bool:
        return self.count(message_part) > 0

    def count(self, message_part: str) -> int:
        return sum(message_part in line["message"] for line in self.lines())


@pytest.fixture
def json_log() -> Iterator[JsonLog]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("gpu-worker"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield JsonLog(stream)
    root.removeHandler(handler)
    root.setLevel(level)
