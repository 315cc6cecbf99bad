"""What the worker's tests (and the later reliability suite) build on.

- ``Pipeline``: the AWS side in moto, the stack created from the template (bucket, job table,
  queues with their DLQs, the GPU group), in the library mock or a moto server;
- ``FakeImds``: a local HTTP server that imitates IMDSv2 (session token required);
- ``WorkerProcess``: ``python -m gpu_worker`` as a real subprocess, its JSON log lines
  readable while it runs, so that a test can wait for ``paused after step`` and kill it;
- ``tiny_engine()``: the real tiny.en weights, loaded once per test process.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from support.repo_paths import REPO_ROOT

from cloudformation.call_ledger import AccountScope, CallLedger
from cloudformation.emulated import (
    REGION,
    WORKER,
    EmulatedStack,
    create_emulated_stack,
    create_identities,
)
from gpu_worker.daemon import AwsClients, Worker
from gpu_worker.lifecycle.stopping import StopController
from gpu_worker.transcription.engine_cache import EngineCache
from gpu_worker.transcription.engines import AsrEngine, load_engine
from gpu_worker.weights.bundled import tiny_en_ct2
from pipeline_core.config import WorkerSettings
from pipeline_core.contracts import AudioJob, LlmJob, Result
from pipeline_core.jobs import JobField, JobRecord, JobTable, job_id_for

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

MAX_RECEIVES = 3  # the template's maxReceiveCount on the Audio Queue


@functools.cache
def tiny_engine() -> AsrEngine:
    return load_engine("faster-whisper", str(tiny_en_ct2()), device="cpu")


@dataclass
class Pipeline:
    """The pipeline's stack, created from the template under a unique name."""

    stack: EmulatedStack
    sqs: SQSClient
    s3: S3Client
    dynamodb: DynamoDBClient
    autoscaling: AutoScalingClient
    instance_id: str | None = None

    @classmethod
    def create(cls, endpoint_url: str | None = None) -> Pipeline:
        """The stack in the emulator at ``endpoint_url`` (the library mock if None)."""
        # A unique stack name and stage: the tests of a module share one moto server, and
        # the stage names the stack's Lambda log groups (/aws/lambda/<app>-<stage>-<function>).
        unique = secrets.token_hex(4)
        stack = create_emulated_stack(
            {"Stage": f"test-{unique}"},
            stack_name=f"pipeline-{unique}",
            endpoint_url=endpoint_url,
        )
        return cls(
            stack=stack,
            sqs=stack.client("sqs"),
            s3=stack.client("s3"),
            dynamodb=stack.client("dynamodb"),
            autoscaling=stack.client("autoscaling"),
        )

    # ---- the world around the worker ------------------------------------------------

    def start_gpu_instance(self) -> str:
        """One instance in the stack's Spot GPU group (0..1), as the Dispatcher starts it."""
        self.autoscaling.set_desired_capacity(
            AutoScalingGroupName=self.stack.asg_name, DesiredCapacity=1
        )
        self.instance_id = self.group()["Instances"][0]["InstanceId"]
        return self.stack.asg_name

    def group(self) -> Any:
        return self.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.stack.asg_name]
        )["AutoScalingGroups"][0]

    def upload(self, name: str, path: Path) -> str:
        key = f"audio-input/{name}"
        self.s3.upload_file(str(path), self.stack.bucket, key)
        return key

    def dispatch(
        self,
        key: str,
        language: str = "english",
        details: str = "",
        *,
        with_job_row: bool = True,
        speakers: str | None = None,
        glossary: str | None = None,
        version_id: str | None = None,
    ) -> str:
        """What the Dispatcher does for an upload: a job row and an Audio Queue message
        (pinned to ``version_id`` when given, as the Dispatcher pins a versioned upload)."""
        etag = self.s3.head_object(Bucket=self.stack.bucket, Key=key)["ETag"].strip('"')
        job_id = job_id_for(self.stack.bucket, key, version_id or etag)
        output_name = None
        if with_job_row:
            output_name = self.jobs().reserve_output_name(self.stack.bucket, key)
            self.jobs().create(
                job_id=job_id,
                bucket=self.stack.bucket,
                s3_key=key,
                version=version_id or etag,
                language=language,
                details=details,
                extra={JobField.OUTPUT_NAME: output_name},
            )
        message = AudioJob(
            s3_key=key,
            language=language,
            details=details,
            job_id=job_id,
            output_name=output_name,
            speakers=speakers,
            glossary=glossary,
            version_id=version_id,
        )
        self.send_audio(message.to_json())
        return job_id

    def send_audio(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.stack.audio_queue_url, MessageBody=body)

    # ---- what came out --------------------------------------------------------------

    def jobs(self) -> JobTable:
        return JobTable(self.dynamodb, self.stack.job_table)

    def job(self, job_id: str) -> JobRecord:
        record = self.jobs().get(job_id)
        assert record is not None, f"no job {job_id}"
        return record

    def drain(self, url: str) -> list[str]:
        """Every visible message body on ``url``, deleting them."""
        bodies: list[str] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(message["Body"])
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def llm_jobs(self) -> list[LlmJob]:
        return [LlmJob.from_json(body) for body in self.drain(self.stack.llm_queue_url)]

    def results(self) -> list[Result]:
        return [Result.from_json(body) for body in self.drain(self.stack.results_queue_url)]

    def depth(self, url: str) -> tuple[int, int]:
        """(visible, in flight) on ``url``."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    def text(self, key: str) -> str:
        return self.s3.get_object(Bucket=self.stack.bucket, Key=key)["Body"].read().decode("utf-8")

    # ---- the worker -----------------------------------------------------------------

    def settings(self, **overrides: Any) -> WorkerSettings:
        """Settings for a worker that serves this pipeline and exits when it is idle."""
        base = WorkerSettings(
            bucket=self.stack.bucket,
            job_table=self.stack.job_table,
            audio_queue_url=self.stack.audio_queue_url,
            llm_queue_url=self.stack.llm_queue_url,
            results_queue_url=self.stack.results_queue_url,
            asg_name=None,
            engine="faster-whisper",
            models={"*": str(tiny_en_ct2())},
            device="cpu",
            poll_wait_seconds=0,
            visibility_timeout_seconds=30,
            heartbeat_seconds=10,
            idle_shutdown_seconds=0,
            imds_endpoint=None,
            log_level="INFO",
            retry_delay_seconds=0,
            spot_poll_seconds=0.1,
            progress_log_seconds=0,
        )
        return replace(base, **overrides)

    def worker(
        self, stop: StopController | None = None, aws: AwsClients | None = None, **overrides: Any
    ) -> Worker:
        """An in-process worker on the shared tiny.en engine (``aws``: its clients, if not
        the emulator's administrator's)."""
        from gpu_worker.lifecycle.imds import ImdsClient

        settings = self.settings(**overrides)
        engines = EngineCache(
            settings.engine,
            settings.models,
            settings.device,
            loaded={str(tiny_en_ct2()): tiny_engine()},
        )
        aws = aws or AwsClients(
            sqs=self.sqs, s3=self.s3, dynamodb=self.dynamodb, autoscaling=self.autoscaling
        )
        imds = ImdsClient(settings.imds_endpoint) if settings.imds_endpoint else None
        return Worker(settings, aws, engines, stop or StopController(), imds=imds)

    def clients(self) -> AwsClients:
        """The emulator's administrator's clients, new ones: hooks a test registers on them
        (a fault, a wait) touch the worker's calls only."""
        return AwsClients(
            sqs=self.stack.client("sqs"),
            s3=self.stack.client("s3"),
            dynamodb=self.stack.client("dynamodb"),
            autoscaling=self.stack.client("autoscaling"),
        )

    def instance_role(self) -> tuple[AwsClients, CallLedger, dict[str, list[dict[str, Any]]]]:
        """Clients that call as the template's worker role (once moto enforces IAM), the
        ledger that records their calls, and the role's policies to hold the calls to."""
        identities = create_identities(self.stack, {})
        ledger = CallLedger(AccountScope(REGION, self.stack.outputs["AudioQueueArn"].split(":")[4]))
        session = identities.components[WORKER].session()
        ledger.attach(session.events, WORKER)
        aws = AwsClients(
            sqs=session.client("sqs"),
            s3=session.client("s3"),
            dynamodb=session.client("dynamodb"),
            autoscaling=session.client("autoscaling"),
            sns=session.client("sns"),
        )
        return aws, ledger, identities.policies

    def environment(self, **overrides: str) -> dict[str, str]:
        """The environment of a worker subprocess (what the systemd env file sets)."""
        assert self.stack.endpoint_url is not None
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(REPO_ROOT),
            "AWS_ENDPOINT_URL": self.stack.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "PIPELINE_BUCKET": self.stack.bucket,
            "JOB_TABLE": self.stack.job_table,
            "AUDIO_QUEUE_URL": self.stack.audio_queue_url,
            "LLM_QUEUE_URL": self.stack.llm_queue_url,
            "RESULTS_QUEUE_URL": self.stack.results_queue_url,
            "WORKER_MODELS": f"*={tiny_en_ct2()}",
            "WORKER_DEVICE": "cpu",
            "POLL_WAIT_SECONDS": "1",
            "VISIBILITY_TIMEOUT_SECONDS": "6",
            "HEARTBEAT_SECONDS": "2",
            "IDLE_SHUTDOWN_SECONDS": "0",
            "RETRY_DELAY_SECONDS": "0",
            "PROGRESS_LOG_SECONDS": "0",
        }
        for name in ("XDG_CACHE_HOME", "TRANSCRIBE_MODEL_CACHE"):
            if name in os.environ:
                env[name] = os.environ[name]
        env.update(overrides)
        return env


class WorkerProcess:
    """``python -m gpu_worker`` with its JSON log lines collected as they come."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.lines: list[dict[str, Any]] = []
        self._new: queue.Queue[dict[str, Any]] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gpu_worker"],
            cwd=REPO_ROOT,
            env=dict(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"message": raw.rstrip("\n"), "raw": True}
            self.lines.append(line)
            self._new.put(line)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> None:
        """Block until a log line satisfies ``predicate``; fail with the log if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.process.poll() is not None and self._new.empty()):
                raise AssertionError(f"no such log line; the worker logged:\n{self.log()}")
            try:
                line = self._new.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if predicate(line):
                return

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def log(self) -> str:
        return "\n".join(json.dumps(line, ensure_ascii=False) for line in self.lines)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()


class FakeImds:
    """IMDSv2 on 127.0.0.1: a PUT for a token first, every GET must carry it (else 401)."""

    def __init__(self, instance_id: str = "i-0123456789abcdef0") -> None:
        self.instance_id = instance_id
        self.spot_action: dict[str, str] | None = None
        self.rebalance: dict[str, str] | None = None
        self.tokens: set[str] = set()
        self.refused = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def _send(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                if self.path != "/latest/api/token":
                    self._send(404)
                elif not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self._send(400, "missing X-aws-ec2-metadata-token-ttl-seconds")
                else:
                    token = secrets.token_urlsafe(16)
                    fake.tokens.add(token)
                    self._send(200, token)

            def do_GET(self) -> None:
                if self.headers.get("X-aws-ec2-metadata-token") not in fake.tokens:
                    fake.refused += 1
                    self._send(401)
                    return
                documents = {
                    "/latest/meta-data/instance-id": fake.instance_id,
                    "/latest/meta-data/spot/instance-action": fake.spot_action,
                    "/latest/meta-data/events/recommendations/rebalance": fake.rebalance,
                }
                document = documents.get(self.path)
                if document is None:
                    self._send(404)
                else:
                    self._send(200, document if isinstance(document, str) else json.dumps(document))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def announce_spot_interruption(self, in_seconds: float, action: str = "terminate") -> None:
        moment = datetime.fromtimestamp(time.time() + in_seconds, UTC)
        self.spot_action = {"action": action, "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def recommend_rebalance(self) -> None:
        self.rebalance = {"noticeTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
