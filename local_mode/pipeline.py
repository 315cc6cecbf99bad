"""The emulated deployment: stack, Lambda event sources, the ASG and its worker process."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3

from cloudformation.call_ledger import (
    LEDGER_ACCOUNT_ENV,
    LEDGER_PATH_ENV,
    AccountScope,
    CallLedger,
    CallRecord,
    denied,
    merge_into,
    read_records,
    ungranted,
)
from cloudformation.emulated import (
    REGION,
    WORKER,
    EmulatedStack,
    Identities,
    create_emulated_stack,
    create_identities,
    enforce_iam,
)
from cloudformation.stack import load_template
from gpu_worker.lifecycle.give_back import ENV_STATE_DIRECTORY
from local_mode.emulator import Emulator, environment, moto_server
from local_mode.lambda_runtime import (
    AsyncInvocation,
    Handler,
    QueueTrigger,
    ScheduleTrigger,
    scheduled_event,
    sqs_event,
    with_version_ids,
)
from local_mode.lambdas import chalice_functions, load_chalice_app
from local_mode.scaler import LocalScaler
from local_mode.systemd_unit import RestartPolicy
from local_mode.template import scaling_alarm
from local_mode.view import FileStatus
from local_mode.worker_process import GIVE_BACK, LOCAL_MODE_PID_ENV
from pipeline_core import config as core
from pipeline_core.jobs import JobField, JobRecord, JobState, JobTable
from pipeline_core.keys import AUDIO_PREFIX

if TYPE_CHECKING:
    from types import TracebackType

    from botocore.awsrequest import AWSPreparedRequest

log = logging.getLogger(__name__)

STACK_NAME: Final = "transcription-local"
# S3 notifications for the Dispatcher arrive through this queue (moto delivers bucket
# notifications to SQS, not to an in-process function); not part of the deployed stack.
NOTIFICATION_QUEUE: Final = "local-s3-notifications"
# The LLM Caller's batch size in .chalice/config.json (its concurrency is the stack's
# LlmCallerConcurrency: LocalDeployment.llm_caller_concurrency).
LLM_CALLER_BATCH_SIZE: Final = 1
# The stage whose policies the local Lambda functions' roles carry (names only).
LOCAL_STAGE: Final = "local"
# Lambda waits about 1 and then 2 minutes before retrying a failed asynchronous invocation.
ASYNC_RETRY_DELAYS_SECONDS: Final = (1, 2)


@dataclass(frozen=True)
class LocalOptions:
    work_dir: Path
    engine: str = "faster-whisper"
    models: dict[str, str] = field(default_factory=dict)  # language code or "*" -> model dir
    corrector: str = "none"
    llm_url: str | None = None
    llm_model: str = "local-model"
    idle_shutdown_seconds: int = 10
    # The stack's MaxWorkers (the emulated group's MaxSize: at most that many worker
    # processes) and TargetBacklogPerWorker (None: the template's default).
    max_workers: int = 1
    target_backlog_per_worker: int | None = None
    log_file: Path | None = None
    # Extra environment for the Lambda functions and for each worker process started from
    # now on (the reliability suite: a Bedrock endpoint, short timeouts, fault injection).
    # Mutable on purpose: a test changes the next worker's settings while a run goes on.
    lambda_overrides: dict[str, str] = field(default_factory=dict)
    worker_overrides: dict[str, str] = field(default_factory=dict)
    # Where the run's AWS calls are added, generalized, when it ends (scripts/iam_report.py).
    calls_ledger: Path | None = None
    # How often the reconciler runs (app.py's schedule is 15 minutes); None: only when
    # ``LocalDeployment.run_reconciler`` is called.
    reconcile_every_seconds: float | None = 60.0


def stack_parameters(options: LocalOptions) -> dict[str, str]:
    """The template parameters a local run sets."""
    parameters = {
        "IdleShutdownSeconds": str(options.idle_shutdown_seconds),
        "MaxWorkers": str(options.max_workers),
    }
    if options.target_backlog_per_worker is not None:
        parameters["TargetBacklogPerWorker"] = str(options.target_backlog_per_worker)
    return parameters


def _resource_environment(stack: EmulatedStack) -> dict[str, str]:
    """The stack's resources as the Lambdas and the worker read them from their environment."""
    return {
        core.ENV_BUCKET: stack.bucket,
        core.ENV_JOB_TABLE: stack.job_table,
        core.ENV_AUDIO_QUEUE_URL: stack.audio_queue_url,
        core.ENV_LLM_QUEUE_URL: stack.llm_queue_url,
        core.ENV_RESULTS_QUEUE_URL: stack.results_queue_url,
        core.ENV_ASG_NAME: stack.asg_name,
        # Created by the stack with no subscriber: the publishes are made and granted as in
        # AWS, and a test or an operator may subscribe (docs/operations.md).
        core.ENV_NOTIFICATION_TOPIC_ARN: stack.notification_topic_arn,
    }


def lambda_environment(stack: EmulatedStack, options: LocalOptions) -> dict[str, str]:
    """What ``.chalice/config.json`` gives both functions, from the stack's outputs."""
    values = {
        **_resource_environment(stack),
        core.ENV_DISPATCHER_DLQ_URL: stack.outputs["DispatcherDlqUrl"],
        "LLM_QUEUE_NAME": stack.llm_queue_name,
        "CORRECTOR": options.corrector,
        "OPENAI_MODEL": options.llm_model,
    }
    if options.llm_url:
        values["OPENAI_BASE_URL"] = options.llm_url
    values.update(options.lambda_overrides)
    return values


def function_policies(stack: EmulatedStack, environment: dict[str, str]) -> dict[str, Any]:
    """The policy ``chalice deploy`` attaches to each function, for this stack and settings."""
    import stage_config  # chalice_app/, on the path once the app is loaded

    outputs = stage_config.StackOutputs.from_mapping(stack.outputs)
    options = stage_config.StageOptions(
        corrector=environment.get("CORRECTOR", "none"),
        bedrock_model_id=environment.get("BEDROCK_MODEL_ID"),
        openai_base_url=environment.get("OPENAI_BASE_URL"),
    )
    return {
        stage_config.DISPATCHER: stage_config.dispatcher_policy(outputs, LOCAL_STAGE),
        stage_config.LLM_CALLER: stage_config.llm_caller_policy(outputs, LOCAL_STAGE, options),
        stage_config.RECONCILER: stage_config.reconciler_policy(outputs, LOCAL_STAGE),
    }


def account_scope(stack: EmulatedStack) -> AccountScope:
    """The emulated account and region, read from a queue's ARN."""
    return AccountScope(region=REGION, account=stack.outputs["AudioQueueArn"].split(":")[4])


def worker_environment(
    stack: EmulatedStack,
    options: LocalOptions,
    emulator: Emulator,
    instance_id: str,
    identities: Identities,
) -> dict[str, str]:
    """What the launch template's user data writes to the worker's environment file, and the
    instance role's credentials (the instance metadata service's, on EC2)."""
    models = ",".join(f"{lang}={path}" for lang, path in options.models.items())
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **emulator.environment(),
        **identities.components[WORKER].environment(),
        LEDGER_PATH_ENV: str(worker_ledger_path(options)),
        LEDGER_ACCOUNT_ENV: account_scope(stack).account,
        **_resource_environment(stack),
        "WORKER_ENGINE": options.engine,
        "WORKER_MODELS": models,
        "WORKER_DEVICE": "cpu",
        "WORKER_INSTANCE_ID": instance_id,
        "IDLE_SHUTDOWN_SECONDS": str(options.idle_shutdown_seconds),
        "POLL_WAIT_SECONDS": "2",
        LOCAL_MODE_PID_ENV: str(os.getpid()),
        **options.worker_overrides,
    }


def worker_ledger_path(options: LocalOptions) -> Path:
    return options.work_dir / "worker-aws-calls.jsonl"


class LocalDeployment:
    """Everything the cloud would run, on this machine; a context manager that cleans up.

    IAM is enforced: each Lambda function calls with its own role's credentials (the policy
    ``chalice deploy`` attaches), the worker with the template's instance role, the on-prem
    client (``client_as(ONPREM, ...)``) with the template's on-prem policy. Only what plays
    AWS itself (event sources, the scaler, the notification pump) calls as an administrator,
    through the process's environment. Every component's calls are recorded (``calls()``);
    ``denied_calls()`` names each refusal.
    """

    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        self._cleanup = ExitStack()
        self._resources: EmulatedStack | None = None
        self.emulator: Emulator | None = None
        self.scaler: LocalScaler | None = None
        self.llm_trigger: QueueTrigger | None = None
        self.dispatch_trigger: QueueTrigger | None = None
        self.reconcile_trigger: ScheduleTrigger | None = None
        self._outages: set[tuple[str, str]] = set()  # (function, service) refused
        self._identities: Identities | None = None
        self._ledger: CallLedger | None = None

    def __enter__(self) -> LocalDeployment:
        try:
            self._start()
        except BaseException:
            self._cleanup.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cleanup.close()

    @property
    def stack(self) -> EmulatedStack:
        """What the emulated stack created; there once the deployment has started."""
        if self._resources is None:
            raise RuntimeError("the local deployment has not started")
        return self._resources

    def _start(self) -> None:
        options = self.options
        options.work_dir.mkdir(parents=True, exist_ok=True)
        emulator = self._cleanup.enter_context(moto_server())
        self.emulator = emulator
        self._cleanup.enter_context(environment(emulator.environment()))
        stack = create_emulated_stack(stack_parameters(options), stack_name=STACK_NAME)
        self._resources = stack
        log.info(
            "emulated stack created",
            extra={"endpoint_url": emulator.endpoint_url, "outputs": stack.outputs},
        )
        function_environment = lambda_environment(stack, options)
        self._cleanup.enter_context(environment(function_environment))

        functions = chalice_functions(load_chalice_app())
        import stage_config  # chalice_app/, on the path once the app is loaded

        identities = create_identities(stack, function_policies(stack, function_environment))
        self._identities = identities
        self._ledger = CallLedger(account_scope(stack))
        worker_ledger_path(options).unlink(missing_ok=True)
        if options.calls_ledger is not None:
            self._cleanup.callback(self.record_calls, options.calls_ledger)
        # From here the process calls as the administrator: boto3's default session (and the
        # stack's) would keep the credentials they resolved first, so they are made again.
        self._cleanup.callback(boto3.setup_default_session)
        self._cleanup.enter_context(environment(identities.admin.environment()))
        boto3.setup_default_session()
        self._resources = dataclasses.replace(stack, session=identities.admin.session())
        enforce_iam(emulator.endpoint_url)
        # moto's switch is the process's: off again before the server and its state go.
        self._cleanup.callback(enforce_iam, emulator.endpoint_url, enforced=False)

        sqs = boto3.client("sqs")
        self.dispatch_trigger = self._notification_trigger(
            sqs,
            self._as_function(stage_config.DISPATCHER, functions.dispatcher),
            self._dispatcher_async_invocation(functions.dispatcher_name),
        )
        account = account_scope(stack).account
        self.reconcile_trigger = ScheduleTrigger(
            self._as_function(stage_config.RECONCILER, functions.reconciler),
            function_name=functions.reconciler_name,
            every_seconds=options.reconcile_every_seconds or 0.0,
            make_event=lambda: scheduled_event(
                f"arn:aws:events:{REGION}:{account}:rule/{functions.reconciler_name}",
                REGION,
                account,
            ),
            timeout_seconds=stage_config.RECONCILER_TIMEOUT_S,
        )
        self.llm_trigger = QueueTrigger(
            # An SQS event source mapping receives and deletes with the function's role.
            self.client_as(stage_config.LLM_CALLER, "sqs"),
            stack.llm_queue_url,
            stack.outputs["LlmQueueArn"],
            self._as_function(stage_config.LLM_CALLER, functions.llm_caller),
            function_name=functions.llm_caller_name,
            make_event=sqs_event,
            batch_size=LLM_CALLER_BATCH_SIZE,
            max_concurrency=self.llm_caller_concurrency,
        )
        alarm = scaling_alarm(load_template(), stack.ids, stack.parameters)
        self.scaler = LocalScaler(
            boto3.client("autoscaling"),
            sqs,
            stack.asg_name,
            alarm,
            self._start_worker,
            restart_policy=RestartPolicy.from_unit(),
            on_failure=self._start_give_back,
        )
        triggers: list[QueueTrigger | ScheduleTrigger] = [self.dispatch_trigger, self.llm_trigger]
        if options.reconcile_every_seconds is not None:
            triggers.append(self.reconcile_trigger)
        for trigger in triggers:
            trigger.start()
            self._cleanup.callback(trigger.stop)
        self.scaler.start()
        self._cleanup.callback(self.scaler.stop)

    @property
    def llm_caller_concurrency(self) -> int:
        """The LLM Caller's reserved concurrency, as stage_config.py sets it from the stack."""
        import stage_config  # chalice_app/, on the path once the app is loaded

        return stage_config.llm_caller_concurrency(
            stage_config.StackOutputs.from_mapping(self.stack.outputs)
        )

    def _dispatcher_async_invocation(self, function_name: str) -> AsyncInvocation:
        """The Dispatcher's asynchronous invocation config, as scripts/deploy.sh sets it; the
        record goes to the stack's Dispatcher DLQ, sent with the function's role."""
        import stage_config  # chalice_app/, on the path once the app is loaded

        destination = self.client_as(stage_config.DISPATCHER, "sqs")
        url = self.stack.outputs["DispatcherDlqUrl"]
        scope = account_scope(self.stack)
        return AsyncInvocation(
            function_arn=f"arn:aws:lambda:{scope.region}:{scope.account}:function:"
            f"{function_name}:$LATEST",
            max_retry_attempts=stage_config.DISPATCHER_MAX_RETRY_ATTEMPTS,
            retry_delays_seconds=ASYNC_RETRY_DELAYS_SECONDS,
            send_on_failure=lambda body: destination.send_message(QueueUrl=url, MessageBody=body),
        )

    def _notification_trigger(
        self, sqs: Any, dispatcher: Any, asynchronous: AsyncInvocation
    ) -> QueueTrigger:
        """Wire the bucket's ObjectCreated notification (as `chalice deploy` does) via SQS: one
        message is one asynchronous invocation, retried and recorded as Lambda does."""
        url = sqs.create_queue(QueueName=NOTIFICATION_QUEUE)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        boto3.client("s3").put_bucket_notification_configuration(
            Bucket=self.stack.bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {
                            "Key": {"FilterRules": [{"Name": "prefix", "Value": AUDIO_PREFIX}]}
                        },
                    }
                ]
            },
        )
        return QueueTrigger(
            sqs,
            url,
            arn,
            dispatcher,
            function_name="dispatcher",
            make_event=with_version_ids(boto3.client("s3")),
            max_concurrency=4,
            asynchronous=asynchronous,
        )

    def run_reconciler(self) -> Any:
        """Invoke the reconciler now, as its schedule does; returns what it reports."""
        if self.reconcile_trigger is None:
            raise RuntimeError("the local deployment has not started")
        return self.reconcile_trigger.invoke()

    @contextmanager
    def unreachable(self, function: str, service: str) -> Iterator[None]:
        """``service``'s endpoint (``"dynamodb"``, ``"sqs"``) refuses ``function``'s
        connections inside the block: an outage as the function sees it (botocore retries,
        then the call fails). Other components reach the service as before."""
        outage = (function, service)
        self._outages.add(outage)
        try:
            yield
        finally:
            self._outages.discard(outage)

    def _refuse_during_outages(self, function: str, session: boto3.Session) -> None:
        # Registered before the function makes its clients: each client copies the session's
        # handlers when it is made.
        from botocore.exceptions import EndpointConnectionError

        def refuse(request: AWSPreparedRequest, event_name: str, **_: Any) -> None:
            service = event_name.split(".")[1]
            if (function, service) in self._outages:
                raise EndpointConnectionError(endpoint_url=request.url)

        session.events.register("before-send", refuse, unique_id=f"outage-{function}")

    @property
    def identities(self) -> Identities:
        if self._identities is None:
            raise RuntimeError("the local deployment has not started")
        return self._identities

    @property
    def ledger(self) -> CallLedger:
        if self._ledger is None:
            raise RuntimeError("the local deployment has not started")
        return self._ledger

    def session_as(self, component: str) -> boto3.Session:
        """A session with ``component``'s credentials whose calls the ledger records."""
        session = self.identities.components[component].session()
        self.ledger.attach(session.events, component)
        return session

    def client_as(self, component: str, service: str) -> Any:
        return self.session_as(component).client(  # type: ignore[call-overload]
            service, endpoint_url=self.stack.endpoint_url
        )

    def _as_function(self, function: str, handler: Handler) -> Handler:
        """``handler`` invoked with the function's role, as its Lambda container would be."""
        from chalicelib.aws import calling_as  # chalice_app/, on the path once the app is loaded

        session = self.session_as(function)
        self._refuse_during_outages(function, session)

        def invoke(event: dict[str, Any], context: Any) -> Any:
            with calling_as(session):
                return handler(event, context)

        return invoke

    def calls(self) -> list[CallRecord]:
        """Every recorded AWS call of the components: in this process and the workers'."""
        return self.ledger.records() + read_records(worker_ledger_path(self.options))

    def iam_findings(self) -> list[str]:
        """Each call AWS refused, and each call its component's policy does not grant (moto
        checks only the action of most services), once: component, action and resource."""
        calls = self.calls()
        refused = denied(calls)
        return [f"refused: {call.describe()}" for call in refused] + [
            f"not granted by its policy: {call.describe()}"
            for call in ungranted(calls, self.identities.policies)
            if call not in refused
        ]

    def record_calls(self, path: Path) -> None:
        """Add this run's calls and policies to the ledger of all runs (``docs/iam.md``)."""
        merge_into(path, self.identities.policies, self.calls(), self.stack.generated_names())

    def _start_worker(self, instance_id: str) -> subprocess.Popen[bytes]:
        return self._on_instance(instance_id)

    def _start_give_back(self, instance_id: str) -> subprocess.Popen[bytes]:
        """The worker unit's OnFailure= program, on the instance whose worker failed."""
        return self._on_instance(instance_id, GIVE_BACK)

    def _on_instance(self, instance_id: str, *args: str) -> subprocess.Popen[bytes]:
        """``local_mode.worker_process`` as a program of the instance: its environment file,
        its role, its state directory (systemd's StateDirectory=) and its log file."""
        assert self.emulator is not None
        env = worker_environment(
            self.stack, self.options, self.emulator, instance_id, self.identities
        )
        state_directory = self.options.work_dir / "instances" / instance_id
        state_directory.mkdir(parents=True, exist_ok=True)
        env[ENV_STATE_DIRECTORY] = str(state_directory)
        log_path = self.options.log_file or (self.options.work_dir / "worker.log")
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "local_mode.worker_process", *args],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the local mode, which stops it cleanly
        )
        log_file.close()
        return process

    def queue_depths(self) -> dict[str, int]:
        """Messages left (visible, in flight or delayed) in every queue and DLQ of the stack."""
        sqs = boto3.client("sqs")
        depths: dict[str, int] = {}
        for name, url in self.stack.queue_urls().items():
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
                "Attributes"
            ]
            depths[name] = sum(
                int(attributes.get(attribute, "0"))
                for attribute in (
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                )
            )
        return depths

    def desired_capacity(self) -> int:
        groups = boto3.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.stack.asg_name]
        )["AutoScalingGroups"]
        return groups[0]["DesiredCapacity"]

    def job_table(self) -> JobTable:
        return JobTable(boto3.client("dynamodb"), self.stack.job_table)

    def file_statuses(self, keys: list[str]) -> list[FileStatus]:
        return job_statuses(self.job_table(), keys)


def job_statuses(table: JobTable, keys: list[str]) -> list[FileStatus]:
    """Each uploaded key's stage, from the job table (the newest job of a key wins)."""
    records: dict[str, JobRecord] = {}
    for record in table.scan():
        current = records.get(record.s3_key)
        if current is None or record.created_at >= current.created_at:
            records[record.s3_key] = record
    return [_status(key, records.get(key)) for key in keys]


def _number(record: JobRecord, name: str) -> float | None:
    value = record.attributes.get(name)
    return None if value is None else float(value)


def _status(key: str, record: JobRecord | None) -> FileStatus:
    name = key.removeprefix(AUDIO_PREFIX)
    if record is None:
        return FileStatus(name=name, stage="uploaded")
    stage = {JobState.SUCCEEDED: "done"}.get(record.state, record.state.value)
    return FileStatus(
        name=name,
        stage=stage,
        percent=_number(record, JobField.PROGRESS_PERCENT),
        audio_seconds=_number(record, JobField.AUDIO_SECONDS),
        transcribe_seconds=_number(record, JobField.TRANSCRIBE_SECONDS),
        result_status=record.attributes.get(JobField.RESULT_STATUS),
        error=record.error,
        output_name=record.output_name,
        worker=record.attributes.get(JobField.WORKER_ID),
    )
