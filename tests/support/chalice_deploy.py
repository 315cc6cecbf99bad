"""The Chalice app "deployed" into moto: the stack's resources, a stage rendered by
``stage_config.py`` from their real names and ARNs, and ``chalice.test.Client`` invoking the
real handlers with that stage's environment."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import stage_config
from botocore.exceptions import ClientError
from chalice.local import LambdaContext
from chalice.test import Client, InvokeResponse, TestLambdaClient
from moto.core import set_initial_no_auth_action_count

from app import app
from chalicelib import entrypoints
from chalicelib.aws import calling_as
from cloudformation.call_ledger import AccountScope, CallLedger
from cloudformation.emulated import REGION, EmulatedStack, create_emulated_stack, create_identities
from pipeline_core.contracts import Result
from pipeline_core.jobs import JobRecord, JobTable

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


class _LambdaClientWithTimeout(TestLambdaClient):
    """``chalice.test`` invokes every function with a 3 s context (``LambdaContext``'s
    default), whatever its ``lambda_timeout``; Lambda gives an invocation the configured
    time. The LLM Caller plans its model calls by the time left, so with 3 s a busy machine
    made it stop early. This is chalice's ``invoke`` with the configured timeout."""

    def invoke(self, function_name: str, payload: Any = None) -> InvokeResponse:
        scoped = self._config.scope(self._config.chalice_stage, function_name)
        context = LambdaContext(
            function_name,
            memory_size=scoped.lambda_memory_size,
            max_runtime_ms=scoped.lambda_timeout * 1000,
        )
        handler = self._app.handler_map[function_name]
        with self._patched_env_vars(scoped.environment_variables):
            return InvokeResponse(payload=handler({} if payload is None else payload, context))


class _Client(Client):
    @property
    def lambda_(self) -> TestLambdaClient:
        if self._lambda_client is None:
            self._lambda_client = _LambdaClientWithTimeout(self._app, self._chalice_config)
        return self._lambda_client


@dataclass
class Deployment:
    """One stage in moto; ``client(**env)`` renders the stage with test overrides."""

    project_dir: Path
    stack: EmulatedStack
    s3: S3Client = field(init=False)
    sqs: SQSClient = field(init=False)
    autoscaling: AutoScalingClient = field(init=False)

    def __post_init__(self) -> None:
        self.s3 = self.stack.client("s3")
        self.sqs = self.stack.client("sqs")
        self.autoscaling = self.stack.client("autoscaling")

    @property
    def outputs(self) -> dict[str, str]:
        return self.stack.outputs

    @property
    def bucket(self) -> str:
        return self.stack.bucket

    def client(
        self,
        options: stage_config.StageOptions | None = None,
        dispatcher_env: Mapping[str, str] | None = None,
        llm_env: Mapping[str, str] | None = None,
        stage: str = "test",
        *,
        reconciler_env: Mapping[str, str] | None = None,
        llm_timeout_seconds: int | None = None,
    ) -> Client:
        """A test client for the stage rendered from the stack outputs, plus overrides
        (e.g. the local model server's endpoint, shorter delays, a shorter timeout)."""
        entrypoints.forget_container_state()
        stage_config.write_stage(
            self.project_dir,
            stage,
            stage_config.StackOutputs.from_mapping(self.outputs),
            options or stage_config.StageOptions(),
        )
        path = self.project_dir / ".chalice" / "config.json"
        config = json.loads(path.read_text())
        functions = config["stages"][stage]["lambda_functions"]
        functions["dispatcher"]["environment_variables"].update(dispatcher_env or {})
        functions["llm_caller"]["environment_variables"].update(llm_env or {})
        functions["reconciler"]["environment_variables"].update(reconciler_env or {})
        if llm_timeout_seconds is not None:
            functions["llm_caller"]["lambda_timeout"] = llm_timeout_seconds
        path.write_text(json.dumps(config))
        return _Client(app, stage_name=stage, project_dir=str(self.project_dir))

    def invoke_as_role(
        self, function: str, policy: dict[str, Any], invoke: Callable[[], object]
    ) -> tuple[CallLedger, dict[str, list[dict[str, Any]]]]:
        """Run ``invoke`` (a test client's invocation) with moto's access control on and the
        function's clients calling as a role that carries ``policy``, every call recorded.
        A refused call fails the invocation (it would be retried); the ledger names it."""
        identities = create_identities(self.stack, {function: policy})
        ledger = CallLedger(AccountScope(REGION, self.outputs["AudioQueueArn"].split(":")[4]))
        session = identities.components[function].session()
        ledger.attach(session.events, function)

        @set_initial_no_auth_action_count(0)
        def enforced() -> None:
            with calling_as(session):
                invoke()

        with contextlib.suppress(ClientError):
            enforced()
        return ledger, identities.policies

    # -- reading what the functions did ----------------------------------------------------

    def table(self) -> JobTable:
        return JobTable(self.stack.client("dynamodb"), self.stack.job_table)

    def job(self, job_id: str) -> JobRecord:
        record = self.table().get(job_id)
        assert record is not None, f"job {job_id} not in the table"
        return record

    def drain(self, queue_url: str) -> list[str]:
        """Every message body now on a queue (deleted as read)."""
        bodies: list[str] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(message["Body"])
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    def results(self) -> list[Result]:
        return [Result.from_json(body) for body in self.drain(self.stack.results_queue_url)]

    def desired_capacity(self) -> int:
        group = self.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.stack.asg_name]
        )["AutoScalingGroups"][0]
        return group["DesiredCapacity"]

    def read(self, key: str) -> str:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()

    def keys(self, prefix: str) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for item in listing.get("Contents", [])]


def s3_event(client: Client, deployment: Deployment, key: str, **obj: Any) -> dict[str, Any]:
    """The event S3 sends for ``key``: URL-encoded key, the object's real ETag and size."""
    event = client.events.generate_s3_event(deployment.bucket, quote_plus(key, safe="/"))
    record = event["Records"][0]["s3"]["object"]
    record.update({"eTag": None, "size": 0})
    try:
        head = deployment.s3.head_object(Bucket=deployment.bucket, Key=key)
        record.update({"eTag": head["ETag"].strip('"'), "size": head["ContentLength"]})
        if head.get("VersionId") not in (None, "null"):
            record["versionId"] = head["VersionId"]
    except deployment.s3.exceptions.ClientError:
        record["eTag"] = "0123456789abcdef0123456789abcdef"  # the object is gone
    record.update(obj)
    return event


def deploy(tmp_path: Path, *, versioned: bool = False) -> Deployment:
    """The stack created from the template (inside an active ``mock_aws``), and a stage for it.

    The template's bucket is versioned; ``versioned=False`` suspends versioning, for the
    tests of S3 events that carry no ``versionId`` (a job keyed on the ETag).
    """
    stack = create_emulated_stack()
    deployment = Deployment(tmp_path, stack)
    if not versioned:
        deployment.s3.put_bucket_versioning(
            Bucket=stack.bucket, VersioningConfiguration={"Status": "Suspended"}
        )
    return deployment
