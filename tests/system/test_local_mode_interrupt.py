"""Ctrl-C stops the local mode cleanly: no worker process and no emulator port left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.audio_factory import speech_mp3
from support.processes import process_gone
from support.waiting import wait_until


def _log_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _port_is_free(port: int) -> bool:
    """Nothing listens on ``port`` (closed connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_an_interrupted_or_killed_local_mode_leaves_no_process_or_port(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """Ctrl-C: the local mode stops its workers itself. SIGKILL: it cannot, and each worker
    is sent SIGTERM by the kernel as its parent dies (``stop_with_the_local_mode``)."""
    audio = tmp_path / "in"
    speech_mp3(audio / "talk.mp3", "Nothing is left running after an interrupt.")
    (audio / "talk.mp3.json").write_text(json.dumps({"language": "en"}))
    work = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "local_mode", str(audio), "--work-dir", str(work),
         "--model", "tiny.en", "--idle-seconds", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    log = work / "pipeline.log"
    worker_pid = port = None

    def worker_started_or_exited() -> bool:
        nonlocal worker_pid, port
        for line in _log_lines(log):
            message = str(line["message"])
            if "endpoint_url" in line:
                port = int(str(line["endpoint_url"]).rsplit(":", 1)[1])
            found = re.search(r"worker started on instance \S+ \(pid (\d+)\)", message)
            if found:
                worker_pid = int(found.group(1))
        return worker_pid is not None or process.poll() is not None

    wait_until(worker_started_or_exited, 120, "the local mode to start a worker", interval=0.5)
    assert worker_pid is not None, "the worker never started"
    assert port is not None, "the emulator's endpoint was not logged"
    assert Path(f"/proc/{worker_pid}").exists()

    process.send_signal(stop)
    output = process.communicate(timeout=60)[0].decode(errors="replace")

    try:
        if stop is signal.SIGINT:
            assert process.returncode == 130, output
            assert "Interrupted" in output
        else:
            assert process.returncode == -signal.SIGKILL
        wait_until(lambda: process_gone(worker_pid), 60, f"worker {worker_pid} to exit", 0.2)
        assert _port_is_free(port)
    finally:
        if not process_gone(worker_pid):  # not left behind by a failure either
            os.kill(worker_pid, signal.SIGKILL)
