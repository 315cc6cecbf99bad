"""AWS emulated by a moto server on 127.0.0.1, started in-process."""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from moto.server import ThreadedMotoServer

REGION: Final = "us-east-1"
# moto accepts any credentials; these only keep botocore from looking for real ones.
FAKE_CREDENTIALS: Final = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Emulator:
    endpoint_url: str

    def environment(self) -> dict[str, str]:
        """What a process (this one or a child) needs so that boto3 talks to the emulator."""
        return {
            **FAKE_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }


@contextmanager
def moto_server(port: int | None = None) -> Iterator[Emulator]:
    """Run a moto server on 127.0.0.1 for the duration of the block."""
    chosen = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=chosen, verbose=False)
    server.start()
    emulator = Emulator(endpoint_url=f"http://127.0.0.1:{chosen}")
    # moto keeps its resources in the process, not in the server: without a reset, a second
    # emulator in one process (tests, or a run after an interrupted one) sees the first's stack.
    _reset(emulator)
    try:
        yield emulator
    finally:
        server.stop()


def _reset(emulator: Emulator) -> None:
    request = urllib.request.Request(f"{emulator.endpoint_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block, restoring the previous values after."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
