"""The whole pipeline on this machine, for fault injection: what ``./run-local.sh`` runs.

``Scenario`` starts a ``LocalDeployment`` (a moto server built from the CloudFormation
template, the real Chalice handlers behind their event sources, the GPU worker daemon as a
real process started by the emulated Auto Scaling Group) with the LLM Caller correcting
through ``fake_llm``'s Converse server, so that Bedrock's wire protocol, botocore's retries
and error parsing are the real ones. Uploads go through S3 like the on-prem uploader's;
waits poll the job table with a deadline; ``check()`` runs the one-outcome invariant.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from support.fake_llm import FakeModel, running_model
from support.waiting import WaitTimeoutError, wait_until
from system.reliability.invariant import Figures, Upload, check_invariant, queue_count

from cloudformation.call_ledger import LEDGER_ALL_RUNS_ENV
from gpu_worker.weights.bundled import tiny_en_ct2
from local_mode.pipeline import LocalDeployment, LocalOptions
from pipeline_core.contracts import Result
from pipeline_core.jobs import RESULT_NOT_SENDABLE, JobField, JobRecord, JobTable
from pipeline_core.metadata import encode_metadata

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

# The worker's timings, shortened so that a killed worker's message is back in seconds.
FAST_WORKER = {
    "VISIBILITY_TIMEOUT_SECONDS": "6",
    "HEARTBEAT_SECONDS": "2",
    "POLL_WAIT_SECONDS": "1",
    "RETRY_DELAY_SECONDS": "1",
    "PROGRESS_LOG_SECONDS": "0",
    "SPOT_POLL_SECONDS": "0.2",
}
# The LLM Caller: Bedrock at the fake server, no waiting between tries.
FAST_LAMBDA = {
    "CORRECTOR": "bedrock",
    "TIME_RESERVE_SECONDS": "0",
    "RETRY_DELAY_SECONDS": "0",
    "LLM_RETRY_MODE": "standard",
    "LLM_MAX_ATTEMPTS": "3",
}
FINISH_TIMEOUT = 180.0


class Scenario:
    def __init__(
        self,
        deployment: LocalDeployment,
        model: FakeModel,
        work_dir: Path,
    ) -> None:
        self.deployment = deployment
        self.model = model
        self.work_dir = work_dir
        self.bucket = deployment.stack.bucket
        self.s3: S3Client = boto3.client("s3")
        self.sqs: SQSClient = boto3.client("sqs")
        self.table: JobTable = deployment.job_table()
        self.results: list[Result] = []
        self.uploads: list[Upload] = []
        self.worker_log = deployment.options.log_file or work_dir / "worker.log"

    # ---- input ------------------------------------------------------------------------

    def upload(
        self,
        name: str,
        body: bytes | Path,
        language: str | None = "english",
        details: str = "",
        metadata: dict[str, str] | None = None,
    ) -> Upload:
        data = body.read_bytes() if isinstance(body, Path) else body
        key = name if name.startswith("audio-input/") else f"audio-input/{name}"
        meta = encode_metadata(language, details) if metadata is None else metadata
        response = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=meta)
        # The bucket is versioned: the Dispatcher keys the job on the new VersionId.
        version = response.get("VersionId") or response["ETag"].strip('"')
        upload = Upload(key=key, version=version)
        self.uploads.append(upload)
        return upload

    # ---- waiting ----------------------------------------------------------------------

    def record(self, upload: Upload) -> JobRecord | None:
        return self.table.get(upload.job_id(self.bucket))

    def collect_results(self) -> list[Result]:
        """Drain the Results Queue (what the on-prem poller would fetch)."""
        url = self.deployment.stack.results_queue_url
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return self.results
            for message in messages:
                self.results.append(Result.from_json(message["Body"]))
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def finished(self, uploads: list[Upload]) -> bool:
        self.collect_results()
        told = {result.job_id for result in self.results}
        records = {record.job_id: record for record in self.table.scan()}
        return all(
            _has_outcome(records.get(upload.job_id(self.bucket)), told) for upload in uploads
        )

    def wait_finished(
        self, uploads: list[Upload] | None = None, timeout: float = FINISH_TIMEOUT
    ) -> float:
        wanted = list(uploads if uploads is not None else self.uploads)
        interval = 0.25 if len(wanted) < 20 else 5.0  # a scan of the table each time
        try:
            return wait_until(
                lambda: self.finished(wanted), timeout, f"{len(wanted)} final outcomes", interval
            )
        except WaitTimeoutError as exc:
            raise WaitTimeoutError(f"{exc}\n{self.describe_unfinished(wanted)}") from None

    def describe_unfinished(self, uploads: list[Upload]) -> str:
        """Where each upload without its outcome stands: its row, the queues, and the
        worker's log lines that name its job (what a timeout on CI must show to be read)."""
        told = {result.job_id for result in self.results}
        depths = {name: self.queue_depth(name) for name in self.queues()}
        lines = [f"queue depths: {depths}"]
        for upload in uploads:
            job_id = upload.job_id(self.bucket)
            record = self.table.get(job_id)
            if _has_outcome(record, told):
                continue
            attributes = record.attributes if record is not None else None
            lines.append(f"unfinished {upload.key} ({job_id}): told={job_id in told} {attributes}")
            lines.extend(
                f"  worker: {line}" for line in self.worker_lines() if line.get("job_id") == job_id
            )
        return "\n".join([*lines, *self.stacks()])

    def stacks(self) -> list[str]:
        """Every thread's stack: each running worker's (SIGUSR1, written to its log) and this
        process's, where the Lambda handlers and the scaler run."""
        scaler = self.deployment.scaler
        pids = list(scaler.worker_pids.values()) if scaler is not None else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it exited since
                os.kill(pid, signal.SIGUSR1)
        time.sleep(1.0)  # faulthandler writes at once; the log file is the worker's stderr
        text = self.worker_log.read_text(encoding="utf-8", errors="replace")
        dumped = [line for line in text.splitlines() if line and not line.startswith("{")]
        with tempfile.TemporaryFile("w+") as own:  # faulthandler writes to a file descriptor
            faulthandler.dump_traceback(own, all_threads=True)
            own.seek(0)
            return [f"workers {pids}, their stacks:", *dumped[-300:], "this process:", own.read()]

    def wait_scaled_in(self, timeout: float = 60.0) -> float:
        scaler = self.deployment.scaler
        assert scaler is not None

        def idle() -> bool:
            return scaler.state.desired_capacity == 0 and not scaler.worker_running

        return wait_until(idle, timeout, "the worker to scale to zero")

    def wait_queues_empty(
        self, timeout: float = 30.0, expected: dict[str, int] | None = None
    ) -> float:
        want = expected or {}

        def settled() -> bool:
            return all(
                queue_count(self.sqs, url) == want.get(name, 0)
                for name, url in self.queues().items()
            )

        return wait_until(settled, timeout, f"the queues to settle at {want or 'empty'}")

    def wait_until_queued(self, name: str, count: int, timeout: float) -> float:
        return wait_until(
            lambda: self.queue_depth(name) == count, timeout, f"{count} message(s) on {name}"
        )

    def peek(self, name: str) -> str:
        """The body of a message on one of the stack's queues, left there (visible again)."""
        url = self.queues()[name]
        (message,) = self.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"]
        self.sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
        return message["Body"]

    def purge(self, name: str) -> None:
        """Delete what is on one of the stack's queues (a record lost, an operator's purge)."""
        url = self.queues()[name]
        while messages := self.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get(
            "Messages", []
        ):
            for message in messages:
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    # ---- the worker ---------------------------------------------------------------------

    def worker_lines(self) -> list[dict[str, Any]]:
        if not self.worker_log.exists():
            return []
        lines = []
        for raw in self.worker_log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return lines

    def wait_worker_line(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 120.0
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [line for line in self.worker_lines() if predicate(line)]
            return bool(found)

        wait_until(seen, timeout, "a worker log line")
        return found[0]

    def kill_worker(self, pid: int | None = None) -> int:
        """SIGKILL a worker process (an instance crash): ``pid``, else a running one; returns
        its pid."""
        scaler = self.deployment.scaler
        assert scaler is not None
        pid = pid if pid is not None else scaler.worker_pid
        assert pid is not None, "no worker is running"
        assert pid in scaler.worker_pids.values(), f"{pid} is not a running worker"
        os.kill(pid, signal.SIGKILL)
        return pid

    # ---- the promise ------------------------------------------------------------------

    def queue_depth(self, name: str) -> int:
        """Messages on one of the stack's queues (``"DispatcherDlq"``), in flight included."""
        return queue_count(self.sqs, self.queues()[name])

    def queues(self) -> dict[str, str]:
        return self.deployment.stack.queue_urls()

    def check(
        self,
        uploads: list[Upload] | None = None,
        expected_depths: dict[str, int] | None = None,
        injected: dict[str, str] | None = None,
        results_fetched_by_poller: bool = False,
        expected_refusals: Collection[str] = (),
    ) -> Figures:
        """The one-outcome invariant, and IAM's: every component ran under its own role, and
        nothing was refused (but ``expected_refusals``, each of which must have happened:
        "worker may not s3:GetObject on ARN") and nothing called beyond its policy."""
        self.collect_results()
        findings = self.deployment.iam_findings()
        refused = {f.removeprefix("refused: ") for f in findings if f.startswith("refused: ")}
        assert set(expected_refusals) <= refused, (expected_refusals, findings)
        unexpected = [f for f in findings if f.removeprefix("refused: ") not in expected_refusals]
        assert unexpected == []
        return check_invariant(
            s3=self.s3,
            sqs=self.sqs,
            table=self.table,
            bucket=self.bucket,
            uploads=uploads if uploads is not None else self.uploads,
            results=self.results,
            queues=self.queues(),
            expected_depths=expected_depths,
            other_jobs_allowed=injected is not None,
            injected=injected,
            results_fetched_by_poller=results_fetched_by_poller,
        )


def _has_outcome(record: JobRecord | None, told: Collection[str | None]) -> bool:
    """The job is final, and its Result was sent where it has one to send."""
    if record is None or not record.state.is_final:
        return False
    sendable = record.attributes.get(JobField.RESULT_SENT_AT) != RESULT_NOT_SENDABLE
    return not sendable or record.job_id in told


@contextmanager
def scenario(
    work_dir: Path,
    *,
    worker: dict[str, str] | None = None,
    lambdas: dict[str, str] | None = None,
    idle_seconds: int = 2,
    max_workers: int = 1,
) -> Iterator[Scenario]:
    """A fresh deployment with the fake Bedrock; everything stopped at the end.

    ``max_workers`` > 1: a fleet, a worker per waiting message (TargetBacklogPerWorker 1)
    up to that many."""
    with running_model() as model:
        options = LocalOptions(
            work_dir=work_dir,
            models={"*": str(tiny_en_ct2())},
            idle_shutdown_seconds=idle_seconds,
            max_workers=max_workers,
            target_backlog_per_worker=1 if max_workers > 1 else None,
            log_file=work_dir / "worker.log",
            lambda_overrides={**FAST_LAMBDA, "BEDROCK_ENDPOINT_URL": model.url, **(lambdas or {})},
            worker_overrides={**FAST_WORKER, **(worker or {})},
            calls_ledger=Path(os.environ[LEDGER_ALL_RUNS_ENV]),
            # The reconciler runs when a test says so (``deployment.run_reconciler()``).
            reconcile_every_seconds=None,
        )
        with LocalDeployment(options) as deployment:
            yield Scenario(deployment, model, work_dir)
