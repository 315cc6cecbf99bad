"""The on-prem results poller at the end of the whole pipeline: a real ``python -m onprem
poll`` process, SIGKILLed between download and delete, and run against a read-only output
folder. Nothing is lost: the message stays until the files are on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.audio_factory import corrupt_mp3
from support.waiting import wait_until
from system.onprem.test_onprem_cli_process import confinement
from system.reliability.conftest import Report
from system.reliability.invariant import queue_count
from system.reliability.scenario import Scenario, scenario

from cloudformation.emulated import ONPREM
from pipeline_core import keys

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
# The real CLI, in a process that SIGKILLs itself when the poller is about to delete a
# message: after the files are written, before the delete (a crash, a power cut).
KILLED_BEFORE_DELETE = """
import os, signal, sys
from botocore.client import BaseClient
call = BaseClient._make_api_call
def dying(self, operation, params):
    if operation == "DeleteMessage":
        os.kill(os.getpid(), signal.SIGKILL)
    return call(self, operation, params)
BaseClient._make_api_call = dying
from onprem.cli import main
sys.exit(main(sys.argv[1:]))
"""


def poll(run: Scenario, out: Path, *, prefix: list[str] | None = None, code: str | None = None
         ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    emulator = run.deployment.emulator
    assert emulator is not None
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "onprem"]
    args = ["poll", "--once", "--queue-url", run.deployment.stack.results_queue_url,
            "--output-dir", str(out), "--wait-seconds", "1"]  # fmt: skip
    onprem = run.deployment.identities.components[ONPREM]  # the on-prem user polls at home
    env = {**os.environ, **emulator.environment(), **onprem.environment(), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*(prefix or []), *command, *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def test_poller_killed_before_delete_and_read_only_folder_lose_nothing(
    tmp_path: Path, fox_mp3: Path, report: Report
) -> None:
    out = tmp_path / "home"
    out.mkdir()
    with scenario(tmp_path / "run") as run:
        results_url = run.deployment.stack.results_queue_url
        # Test timing: a message a dead poller held is back in 2 s, not the stack's 300 s.
        run.sqs.set_queue_attributes(QueueUrl=results_url, Attributes={"VisibilityTimeout": "2"})
        good = run.upload("lecture.mp3", fox_mp3)
        bad = run.upload("broken.mp3", corrupt_mp3(tmp_path / "broken.mp3"))

        def told() -> bool:
            records = [run.record(u) for u in (good, bad)]
            final = all(r is not None and r.state.is_final for r in records)
            return final and queue_count(run.sqs, results_url) == 2

        wait_until(told, 180, "both Results to be sent")
        assert queue_count(run.sqs, results_url) == 2

        steps: dict[str, str] = {}
        how = confinement()
        if how == "namespace":
            script = 'mount -o bind,ro "$1" "$1" || exit 99; shift; exec "$@"'
            read_only = poll(
                run, out, prefix=["unshare", "-rm", "sh", "-c", script, "sh", str(out)]
            )
            assert read_only.returncode == 1, read_only.stderr
            assert "is not writable" in read_only.stderr
            assert list(out.iterdir()) == []
            wait_until(lambda: queue_count(run.sqs, results_url) == 2, 10, "messages kept")
            steps["read_only_exit"] = str(read_only.returncode)

        killed = poll(run, out, code=KILLED_BEFORE_DELETE)
        assert killed.returncode == -9, killed.stderr
        assert any(out.rglob("*")), "files are written before the delete"
        assert queue_count(run.sqs, results_url) == 2  # none deleted

        def fetched() -> bool:
            again = poll(run, out)
            assert again.returncode == 0, again.stderr
            return queue_count(run.sqs, results_url) == 0

        wait_until(fetched, 60, "a second poll run to fetch and delete both")
        text = (out / "lecture.txt").read_text(encoding="utf-8")
        final = keys.final_keys(keys.stem(good.key)).text
        assert text == run.s3.get_object(Bucket=run.bucket, Key=final)["Body"].read().decode()
        report_file = json.loads((out / "failed" / "broken.json").read_text(encoding="utf-8"))
        assert report_file["status"] == "failed"
        assert report_file["error"]

        run.wait_scaled_in()
        figures = run.check(results_fetched_by_poller=True)
    report(
        fault="poller SIGKILLed between download and delete"
        + ("; output folder read-only" if steps else " (read-only: no user namespace here)"),
        happened=(
            "read-only: exit 1 with 'not writable', nothing deleted; killed: files on disk, "
            "messages back after their visibility; the next run fetched both, deleted both"
        ),
        outcome="transcript and failure report at home once, Results queue empty",
        figures={**figures.as_dict(), "poll_runs": 2 + len(steps)},
    )
