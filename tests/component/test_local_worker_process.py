"""A local-mode instance's program ends with the local mode, however the local mode ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from support.processes import process_gone
from support.repo_paths import REPO_ROOT
from support.waiting import wait_until

from local_mode.worker_process import LOCAL_MODE_PID_ENV

# What the local mode does, in small: start an instance's program with its pid in the
# environment; the program makes the request, then would work for two minutes.
LOCAL_MODE = textwrap.dedent(
    f"""
    import os, subprocess, sys, time
    env = dict(os.environ, {LOCAL_MODE_PID_ENV}=str(os.getpid()))
    program = (
        "import sys, time\\n"
        "from local_mode.worker_process import stop_with_the_local_mode\\n"
        "assert stop_with_the_local_mode()\\n"
        "print('working', flush=True)\\n"
        "time.sleep(120)\\n"
    )
    child = subprocess.Popen([sys.executable, "-c", program], env=env, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    print(child.pid, child.stdout.readline().strip(), flush=True)
    time.sleep(120)
    """
)


def test_an_instance_program_ends_when_the_local_mode_is_killed() -> None:
    local_mode = subprocess.Popen(
        [sys.executable, "-c", LOCAL_MODE],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert local_mode.stdout is not None
    pid_text, state = local_mode.stdout.readline().split()
    program = int(pid_text)
    try:
        assert state == "working"
        assert not process_gone(program)
        local_mode.send_signal(signal.SIGKILL)  # no chance to stop its instances itself
        local_mode.wait(timeout=10)
        wait_until(lambda: process_gone(program), 10, "the instance's program to end")
    finally:
        if not process_gone(program):
            os.kill(program, signal.SIGKILL)


def test_a_program_whose_local_mode_is_gone_does_not_start() -> None:
    """Started by a local mode that died before the request was made: it says so."""
    program = (
        "from local_mode.worker_process import stop_with_the_local_mode\n"
        "print(stop_with_the_local_mode())"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), LOCAL_MODE_PID_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "False"
