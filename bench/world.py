"""The pipeline's AWS side in moto, driven by the real Dispatcher, worker and LLM Caller code.

The clients share one botocore session so every API call can be counted: moto answers in
microseconds, real AWS in milliseconds, so calls per file are the figure that carries over.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3
from moto import mock_aws

from bench.paths import ensure_chalicelib
from cloudformation.emulated import REGION, EmulatedStack, create_emulated_stack
from gpu_worker.daemon import AwsClients, Worker
from gpu_worker.lifecycle.stopping import StopController
from gpu_worker.transcription.engine_cache import EngineCache
from local_mode.emulator import moto_server
from pipeline_core.config import DispatcherSettings, LlmCallerSettings, WorkerSettings
from pipeline_core.metadata import encode_metadata

if TYPE_CHECKING:
    from gpu_worker.transcription.engines import AsrEngine

_FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


# The components ``World.counting`` attributes calls to.
DISPATCHER: Final = "Dispatcher"
WORKER: Final = "worker"
LLM_CALLER: Final = "LLM Caller"
# The Lambda service's polling of the LLM Queue for the LLM Caller (receive, then delete
# once the handler returned): SQS requests of the pipeline, though no code of ours makes them.
LLM_EVENT_SOURCE: Final = "LLM Queue event source"


@dataclass
class World:
    session: boto3.Session
    clients: AwsClients
    stack: EmulatedStack
    calls: Counter[str] = field(default_factory=Counter)  # "<service>.<Operation>" -> count
    # component -> its calls, by operation, counted inside ``counting``
    by_component: dict[str, Counter[str]] = field(default_factory=dict)

    @contextmanager
    def counting(self, component: str) -> Iterator[None]:
        """Attribute the calls made inside to ``component`` (not nested)."""
        before = Counter(self.calls)
        try:
            yield
        finally:
            counted = self.by_component.setdefault(component, Counter())
            counted.update(self.calls - before)

    def upload(self, name: str, path: Path, language: str) -> tuple[str, dict[str, Any]]:
        """Put ``path`` under audio-input/ and return its key and the S3 event record."""
        key = f"audio-input/{name}"
        metadata = encode_metadata(language, "")
        self.clients.s3.upload_file(
            str(path), self.stack.bucket, key, ExtraArgs={"Metadata": metadata}
        )
        head = self.clients.s3.head_object(Bucket=self.stack.bucket, Key=key)
        record = {
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "bucket": {"name": self.stack.bucket},
                "object": {
                    "key": key,
                    "size": head["ContentLength"],
                    "eTag": head["ETag"].strip('"'),
                    "sequencer": secrets.token_hex(8),
                },
            },
        }
        return key, record

    def dispatch(self, records: list[dict[str, Any]]) -> None:
        ensure_chalicelib()
        from chalicelib.dispatch.dispatcher import DispatcherClients, handle_s3_event

        settings = DispatcherSettings(
            bucket=self.stack.bucket,
            job_table=self.stack.job_table,
            audio_queue_url=self.stack.audio_queue_url,
            results_queue_url=self.stack.results_queue_url,
            asg_name=self.stack.asg_name,
            default_language=None,
            log_level="WARNING",
            notification_topic_arn=self.stack.notification_topic_arn,
        )
        clients = DispatcherClients(
            s3=self.clients.s3,
            sqs=self.clients.sqs,
            dynamodb=self.clients.dynamodb,
            autoscaling=self.clients.autoscaling,
            sns=self.clients.sns,
        )
        handle_s3_event({"Records": records}, clients, settings)

    def worker_settings(self, engine: str, model_dir: str, device: str) -> WorkerSettings:
        return WorkerSettings(
            bucket=self.stack.bucket,
            job_table=self.stack.job_table,
            audio_queue_url=self.stack.audio_queue_url,
            llm_queue_url=self.stack.llm_queue_url,
            results_queue_url=self.stack.results_queue_url,
            asg_name=None,  # exit when the queue is empty instead of leaving a group
            engine=engine,
            models={"*": model_dir},
            device=device,
            poll_wait_seconds=0,
            visibility_timeout_seconds=300,
            heartbeat_seconds=60,
            idle_shutdown_seconds=0,
            imds_endpoint=None,
            log_level="WARNING",
            retry_delay_seconds=0,
            spot_poll_seconds=5,
            progress_log_seconds=5,
            notification_topic_arn=self.stack.notification_topic_arn,
        )

    def run_worker(
        self,
        engine: AsrEngine,
        engine_name: str,
        model_dir: str,
        device: str,
        clients: AwsClients | None = None,
    ) -> int:
        """The daemon's loop, with ``engine`` already loaded, until the Audio Queue is empty;
        its AWS calls go through ``clients`` (default: the world's own)."""
        settings = self.worker_settings(engine_name, model_dir, device)
        engines = EngineCache(settings.engine, settings.models, device, loaded={model_dir: engine})
        chosen = clients or self.clients
        worker = Worker(settings, chosen, engines, StopController(), worker_id="bench")
        return worker.run()

    def run_llm_caller(self) -> int:
        """The LLM Caller on every LLM Queue message, with no corrector (pass-through)."""
        ensure_chalicelib()
        from chalicelib.correction.llm_caller import Delivery, LlmCallerClients, handle_llm_message

        settings = LlmCallerSettings(
            bucket=self.stack.bucket,
            job_table=self.stack.job_table,
            results_queue_url=self.stack.results_queue_url,
            corrector="none",
            bedrock_model_id="none",
            openai_base_url=None,
            openai_model="none",
            glossary_key=None,
            log_level="WARNING",
            llm_queue_url=self.stack.llm_queue_url,
            notification_topic_arn=self.stack.notification_topic_arn,
        )
        clients = LlmCallerClients(
            s3=self.clients.s3,
            sqs=self.clients.sqs,
            dynamodb=self.clients.dynamodb,
            sns=self.clients.sns,
        )
        handled = 0
        while True:
            with self.counting(LLM_EVENT_SOURCE):
                messages = self.clients.sqs.receive_message(
                    QueueUrl=self.stack.llm_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
                ).get("Messages", [])
            if not messages:
                return handled
            for message in messages:
                with self.counting(LLM_CALLER):
                    handle_llm_message(Delivery(message["Body"]), clients, settings, None)
                with self.counting(LLM_EVENT_SOURCE):
                    self.clients.sqs.delete_message(
                        QueueUrl=self.stack.llm_queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )
                handled += 1

    def results(self) -> list[dict[str, Any]]:
        bodies: list[dict[str, Any]] = []
        while True:
            messages = self.clients.sqs.receive_message(
                QueueUrl=self.stack.results_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                self.clients.sqs.delete_message(
                    QueueUrl=self.stack.results_queue_url, ReceiptHandle=message["ReceiptHandle"]
                )


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in (*values, "AWS_ENDPOINT_URL", "AWS_PROFILE")}
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def count_calls(session: boto3.Session) -> Counter[str]:
    """A count, by ``"<service>.<Operation>"``, of the calls of every client ``session``
    makes from now on (each client takes a copy of the session's handlers when made)."""
    calls: Counter[str] = Counter()

    def count_call(event_name: str, **_: Any) -> None:
        calls[event_name.removeprefix("before-call.")] += 1

    session.events.register("before-call", count_call)
    return calls


def counted_clients(
    session: boto3.Session, endpoint_url: str | None = None
) -> tuple[AwsClients, Counter[str]]:
    """Clients of ``session`` at ``endpoint_url`` and a count of their calls by operation."""
    calls = count_calls(session)
    clients = AwsClients(
        sqs=session.client("sqs", endpoint_url=endpoint_url),
        s3=session.client("s3", endpoint_url=endpoint_url),
        dynamodb=session.client("dynamodb", endpoint_url=endpoint_url),
        autoscaling=session.client("autoscaling", endpoint_url=endpoint_url),
        sns=session.client("sns", endpoint_url=endpoint_url),
    )
    return clients, calls


@contextmanager
def moto_world() -> Iterator[World]:
    """The pipeline's stack created from the template in a fresh moto mock."""
    with _environment(_FAKE_CREDENTIALS), mock_aws():
        session = boto3.Session(region_name=REGION)
        stack = create_emulated_stack(stack_name="bench", session=session)
        clients, calls = counted_clients(session)
        yield World(session=session, clients=clients, stack=stack, calls=calls)


@contextmanager
def server_world() -> Iterator[World]:
    """The same stack in a moto server on 127.0.0.1, for clients that go over HTTP."""
    with _environment(_FAKE_CREDENTIALS), moto_server() as emulator:
        session = boto3.Session(region_name=REGION)
        stack = create_emulated_stack(
            stack_name="bench", session=session, endpoint_url=emulator.endpoint_url
        )
        clients, calls = counted_clients(session, emulator.endpoint_url)
        yield World(session=session, clients=clients, stack=stack, calls=calls)
