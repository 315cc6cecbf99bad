"""``python -m local_mode.worker_process [give-back]``: a program of a local-mode instance,
with its AWS calls recorded.

The local mode starts this instead of ``python -m gpu_worker`` so that the calls the worker
makes under its instance role land in the run's call ledger (a JSON-lines file). With
``give-back`` it runs what the worker unit's ``OnFailure=`` runs on EC2
(``gpu-worker-give-back``), under the same role.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path
from typing import Final

import boto3

from cloudformation.call_ledger import (
    LEDGER_ACCOUNT_ENV,
    LEDGER_PATH_ENV,
    AccountScope,
    CallLedger,
)
from cloudformation.emulated import REGION, WORKER

GIVE_BACK: Final = "give-back"
# The local mode's process id, set in the environment it starts its instances' programs with.
LOCAL_MODE_PID_ENV: Final = "LOCAL_MODE_PID"
_PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>


def stop_with_the_local_mode() -> bool:
    """Have this process sent SIGTERM (a worker's stop) when the local mode that started it
    dies: a local mode killed with SIGKILL cannot stop its instances' programs, which would
    otherwise poll a moto server that is gone, for ever. On EC2, systemd stops them.

    False when the local mode is gone already (before the request could be made).
    """
    expected_parent = os.environ.get(LOCAL_MODE_PID_ENV)
    if expected_parent is None or not sys.platform.startswith("linux"):
        return True
    # prctl by hand: the standard library has no binding, and this one call needs none.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return True  # not fatal: the process works as before, it only may outlive the mode
    return os.getppid() == int(expected_parent)


def run(args: list[str]) -> int:
    if not stop_with_the_local_mode():
        return 0  # nothing started it any more: nothing to do
    path = os.environ.get(LEDGER_PATH_ENV)
    if path:
        boto3.setup_default_session()
        assert boto3.DEFAULT_SESSION is not None
        ledger = CallLedger(AccountScope(REGION, os.environ[LEDGER_ACCOUNT_ENV]), Path(path))
        ledger.attach(boto3.DEFAULT_SESSION.events, WORKER)
    if args == [GIVE_BACK]:
        from gpu_worker.lifecycle import give_back

        return give_back.main()
    from gpu_worker.daemon import main

    return main()


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
