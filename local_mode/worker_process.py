"""``python -m local_mode.worker_process [give-back]``: a program of a local-mode instance,
with its AWS calls recorded.

The local mode starts this instead of ``python -m gpu_worker`` so that the calls the worker
makes under its instance role land in the run's call ledger (a JSON-lines file). With
``give-back`` it runs what the worker unit's ``OnFailure=`` runs on EC2
(``gpu-worker-give-back``), under the same role.
"""

from __future__ import annotations

import os
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


def run(args: list[str]) -> int:
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
