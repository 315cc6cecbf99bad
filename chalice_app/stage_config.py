"""Write one stage of ``.chalice/config.json`` and its IAM policies from the stack outputs.

    python chalice_app/stage_config.py --stage prod --outputs-json outputs.json

``outputs.json`` is what ``aws cloudformation describe-stacks`` prints (or its ``Outputs``
list, or a flat ``{"BucketName": ...}`` object). The stage gets the environment variables
each function reads (the names of ``pipeline_core.config``), timeouts, memory, the LLM
Caller's reserved concurrency, and one hand-written least-privilege policy per function
(``autogen_policy`` off): only the actions each function calls, on the resources of this
deployment. Run it again after any stack change; it rewrites only its own keys of the stage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

_HERE = Path(__file__).resolve().parent
if str(_HERE / "vendor") not in sys.path:  # run as a script: pipeline_core via the bundle link
    sys.path.append(str(_HERE / "vendor"))

import lambda_wildcards  # noqa: E402

from pipeline_core import config as cfg  # noqa: E402
from pipeline_core.errors import DISPATCHER_READER, LLM_CALLER_READER, ObjectReader  # noqa: E402
from pipeline_core.glossary import check_name  # noqa: E402
from pipeline_core.keys import (  # noqa: E402
    AUDIO_PREFIX,
    FINAL_PREFIX,
    LLM_WORK_PREFIX,
    TRANSCRIPT_PREFIX,
)

APP_NAME: Final = "transcription-pipeline"
DISPATCHER: Final = "dispatcher"
LLM_CALLER: Final = "llm_caller"
RECONCILER: Final = "reconciler"

# Timeouts (see README "Lambda timeouts"). The LLM Queue's visibility timeout must be at
# least 6 x the LLM Caller's timeout (AWS's rule for SQS event sources): 5400 s.
DISPATCHER_TIMEOUT_S: Final = 60
DISPATCHER_MEMORY_MB: Final = 256
LLM_CALLER_TIMEOUT_S: Final = 900
LLM_CALLER_MEMORY_MB: Final = 512
# The LLM Caller's reserved (and event-source maximum) concurrency when the stack has no
# LlmCallerConcurrency output (a stack from before the parameter); the template's default.
LLM_CALLER_CONCURRENCY: Final = 3
LLM_CALLER_CONCURRENCY_OUTPUT: Final = "LlmCallerConcurrency"
LLM_QUEUE_VISIBILITY_S: Final = 6 * LLM_CALLER_TIMEOUT_S
LLM_QUEUE_MAX_RECEIVES: Final = 3
LLM_RETRY_DELAY_S: Final = 300  # a throttled message comes back after 5 min, not 90
LLM_TIME_RESERVE_S: Final = 240  # no new model call in the last 4 min of an invocation
# The Dispatcher's asynchronous invocations (S3 -> Lambda), set by scripts/deploy.sh from
# the file write_stage renders (docs/design.md "Dispatch failures"): Lambda's 2 retries (1
# and 2 minutes apart; the Dispatcher is idempotent), and an event throttled for an hour is
# given up to the on-failure destination rather than kept 6 hours (Lambda's default).
DISPATCHER_MAX_RETRY_ATTEMPTS: Final = 2
DISPATCHER_MAX_EVENT_AGE_S: Final = 3600
# The reconciler (every 15 minutes, app.py): uploads younger than the maximum event age may
# still reach the Dispatcher through Lambda, so only older ones are dispatched from a listing.
RECONCILER_TIMEOUT_S: Final = 300
RECONCILER_MEMORY_MB: Final = 256
RECONCILE_GRACE_S: Final = DISPATCHER_MAX_EVENT_AGE_S

# The one statement of a policy whose resource is "*": the actions it calls that have no
# resource-level permissions. scripts/iam_report.py writes its actions from the recorded calls
# (here: lambda_wildcards.py; in the template: WorkerPolicy and OnPremPolicy) and fails on a
# generated action without a reason below, or on a reason for an action nothing calls. A
# template statement may stay hand-written on "*" only with a condition that narrows it or a
# statement-level reason in GRANTS_WITHOUT_CALLS (no run calls it).
WILDCARD_SID: Final = "NoResourceLevelPermissions"
WILDCARD_ACTION_REASONS: Final = {
    "autoscaling:DescribeAutoScalingGroups": "reads the GPU group's desired capacity before "
    "raising it (the Dispatcher on each upload, the worker when a message arrived as it left) "
    "and an idle worker's count of the group's other workers; read-only.",
}

# Grants a run may or may not use, by the same keys as GRANTS_WITHOUT_CALLS: a race decides
# (never stale, unlike those). The generated "*" statement holds such an action either way.
GRANTS_CALLED_SOMETIMES: Final = {
    f"worker/{WILDCARD_SID}/autoscaling:DescribeAutoScalingGroups": "Read by an idle worker "
    "only while messages are in flight (are they the other workers' jobs?), and in the "
    "scale-in race: a message arrived while the last worker left the group, and the worker "
    "reads the group's desired capacity before raising it back (gpu_worker/lifecycle/"
    "scale_to_zero.py). A run meets either only when its timing falls so.",
    "worker/RaiseOwnGroupAgain/autoscaling:SetDesiredCapacity": "The same race: the leaving "
    "worker raises its group back to 1 so the message is not stranded.",
}

# Grants no call of the local-mode runs uses (docs/iam.md), and why each stays, for every
# component's policy (these functions' and the template's worker and on-prem policies): by
# "component/Sid" (the statement's unused actions) or "component/Sid/action".
# tests/test_iam_report.py fails on a grant unused and unexplained, or on a stale reason.
GRANTS_WITHOUT_CALLS: Final = {
    **{
        f"{function}/OwnLogs": "The Lambda runtime writes the function's logs with its role; "
        "the local mode runs the handlers in-process and logs to a file."
        for function in (DISPATCHER, LLM_CALLER, RECONCILER)
    },
    **{
        f"{function}/MissingObjectsRead404": "Without it S3 answers a read of a missing object "
        "with 403, not 404 (a deleted upload or transcript); moto answers 404 either way."
        for function in (DISPATCHER, LLM_CALLER, RECONCILER, "worker", "onprem")
    },
    **{
        f"{function}/ReadUploads/s3:GetObject": "An upload to a bucket whose versioning was "
        "suspended has no version id and is read without one; the emulated bucket is versioned."
        for function in (DISPATCHER, RECONCILER)
    },
    f"{LLM_CALLER}/ReadTranscripts/s3:GetObject": "An LLM job without the transcript's "
    "version id (one sent before the worker pinned versions, or a bucket whose versioning was "
    "suspended) reads the latest transcript and JSON; the emulated bucket is versioned and "
    "the worker always pins them.",
    f"{LLM_CALLER}/LlmQueue/sqs:GetQueueAttributes": "Lambda's SQS event source mapping reads "
    "the queue's attributes with the function's role when it is created; the local one does not.",
    f"{LLM_CALLER}/LlmQueue/sqs:SendMessage": "A transcript too long for one invocation "
    "continues in a new LLM Queue message (tests/test_llm_caller.py); the runs' are short.",
    f"{RECONCILER}/PublishResultNotifications": "An upload the reconciler dispatches again "
    "and the Dispatcher's checks refuse (not audio, empty, gone) gets its failure Result "
    "published as the Dispatcher's would; the fault suite re-dispatches audio only.",
    "worker/JobTable/dynamodb:PutItem": "A message that came without a job row (sent by hand) "
    "gets one (gpu_worker/job/claim.py); the Dispatcher always writes it first.",
    "worker/ShipLogLines": "The AMI's CloudWatch agent ships the worker's log file with the "
    "instance role (packer/files/amazon-cloudwatch-agent.json); local mode writes a file.",
    "worker/SessionManager": "The AMI's SSM agent, for an operator's `aws ssm start-session` "
    "(docs/operations.md); no instance runs it in local mode.",
    "onprem/UploadAudioAndReadItBackToVerify/s3:AbortMultipartUpload": "A killed run's "
    "unfinished multipart upload is aborted by the next run (onprem/upload.py).",
    "onprem/UploadAudioAndReadItBackToVerify/s3:ListMultipartUploadParts": "Resuming a large "
    "upload of a killed run; the runs' recordings are small.",
    "onprem/PollResults/sqs:ChangeMessageVisibility": "The poller hands back at once the "
    "messages it received but did not handle when told to stop (onprem/poll.py).",
    "onprem/InspectAndDrainDeadLetterQueues": "The operator's `onprem dlq` and `onprem "
    "redrive` commands after a failure, not part of a run.",
    "onprem/RedriveToSourceQueues": "`onprem redrive` sends a dead letter back to its queue.",
    "onprem/ListUploadVersionsToReconcile": "`onprem status --reconcile`, an operator's "
    "command (tests/component/onprem/test_onprem_reconcile.py), not part of a run.",
    "onprem/HandUnfinishedUploadsToTheReconciler": "`onprem status --reconcile` asks the "
    "reconciler for an upload whose dispatch did not finish; not part of a run.",
    "onprem/JobStatusAndRedriveReset": "`onprem status` and the redrive's job reset; the local "
    "mode's live view reads the job table as the emulator's administrator.",
}

REQUIRED_OUTPUTS: Final = (
    "BucketName", "AudioQueueUrl", "AudioQueueArn", "LlmQueueUrl", "LlmQueueArn",
    "LlmQueueName", "ResultsQueueUrl", "ResultsQueueArn", "JobTableName", "JobTableArn",
    "GpuAsgName", "DispatcherDlqUrl", "DispatcherDlqArn",
)  # fmt: skip


class StageConfigError(ValueError):
    """Stack outputs or options that cannot make a working stage."""


@dataclass(frozen=True)
class StackOutputs:
    values: Mapping[str, str]
    region: str
    account: str
    partition: str

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    def get(self, name: str) -> str | None:
        return self.values.get(name) or None

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, str], region: str | None = None, account: str | None = None
    ) -> StackOutputs:
        missing = [name for name in REQUIRED_OUTPUTS if not values.get(name)]
        if missing:
            raise StageConfigError(f"the stack outputs lack {', '.join(missing)}")
        # arn:<partition>:sqs:<region>:<account>:<name>
        arn = values["AudioQueueArn"].split(":")
        if len(arn) < 6 or arn[0] != "arn":
            raise StageConfigError(f"AudioQueueArn {values['AudioQueueArn']!r} is not an ARN")
        return cls(
            values=dict(values),
            region=region or values.get("Region") or arn[3],
            account=account or values.get("AccountId") or arn[4],
            partition=arn[1],
        )


@dataclass(frozen=True)
class StageOptions:
    corrector: str = "bedrock"
    bedrock_model_id: str | None = None  # None: cfg.default_bedrock_model_id of the region
    openai_base_url: str | None = None
    openai_model: str | None = None
    glossary_key: str | None = None
    default_language: str | None = None
    default_glossary: str | None = None  # DEFAULT_GLOSSARY (pipeline_core/glossary.py)
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.corrector not in cfg.LLM_CORRECTORS:
            raise StageConfigError(
                f"corrector {self.corrector!r} is not one of {', '.join(cfg.LLM_CORRECTORS)}"
            )
        if self.corrector == "openai" and not self.openai_base_url:
            raise StageConfigError("the openai corrector needs --openai-base-url")

    def model_id(self, out: StackOutputs) -> str:
        return self.bedrock_model_id or cfg.default_bedrock_model_id(out.region)


def load_outputs(path: Path) -> dict[str, str]:
    """Outputs from describe-stacks JSON, its Outputs list, or a flat object."""
    data: Any = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "Stacks" in data:
        data = data["Stacks"][0].get("Outputs", [])
    if isinstance(data, dict) and "Outputs" in data:
        data = data["Outputs"]
    if isinstance(data, list):
        return {item["OutputKey"]: str(item["OutputValue"]) for item in data}
    if isinstance(data, dict):
        return {str(k): str(v) for k, v in data.items()}
    raise StageConfigError(f"{path}: not CloudFormation outputs")


def function_name(stage: str, function: str) -> str:
    return f"{APP_NAME}-{stage}-{function}"


def _statement(sid: str, actions: Sequence[str], resources: Sequence[str]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": list(resources)}


def _logs(out: StackOutputs, stage: str, function: str) -> dict[str, Any]:
    group = (
        f"arn:{out.partition}:logs:{out.region}:{out.account}:log-group:"
        f"/aws/lambda/{function_name(stage, function)}"
    )
    return _statement(
        "OwnLogs",
        ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        [group, f"{group}:*"],
    )


def _objects(out: StackOutputs, prefix: str) -> str:
    return f"arn:{out.partition}:s3:::{out['BucketName']}/{prefix}*"


def _list_bucket(out: StackOutputs, reader: ObjectReader, *keys: str) -> dict[str, Any]:
    # Without s3:ListBucket, reading a missing object answers 403 instead of 404, and a
    # deleted upload or transcript could not be told from a permissions problem. S3 checks
    # that ListBucket with the object's key as s3:prefix, so the grant lists nothing else.
    bucket = f"arn:{out.partition}:s3:::{out['BucketName']}"
    statement = _statement("MissingObjectsRead404", ["s3:ListBucket"], [bucket])
    patterns = [f"{prefix}*" for prefix in reader.probed_prefixes] + list(keys)
    statement["Condition"] = {"StringLike": {"s3:prefix": patterns}}
    return statement


def _kms(out: StackOutputs) -> list[dict[str, Any]]:
    key = out.get("KmsKeyArn")
    if key is None:
        return []
    return [_statement("UseDataKey", ["kms:Decrypt", "kms:GenerateDataKey"], [key])]


def _without_resource_level_permissions(function: str) -> list[dict[str, Any]]:
    actions = lambda_wildcards.WILDCARD_ACTIONS.get(function, ())
    return [_statement(WILDCARD_SID, actions, ["*"])] if actions else []


def _asg_arn(out: StackOutputs) -> str:
    arn = out.get("GpuAsgArn")
    if arn:
        return arn
    # The group's ARN holds a generated id; the name pins it down.
    return (
        f"arn:{out.partition}:autoscaling:{out.region}:{out.account}:autoScalingGroup:*:"
        f"autoScalingGroupName/{out['GpuAsgName']}"
    )


def bedrock_model_arns(out: StackOutputs, model_id: str) -> list[str]:
    if model_id.startswith("arn:"):
        return [model_id]
    if model_id.startswith(cfg.INFERENCE_PROFILE_PREFIXES):
        # A cross-region inference profile sends each request to a region of its geography
        # (any commercial region for global.), where the call is authorised against that
        # region's foundation model; a global profile's model ARN has no region, which the
        # "*" also matches.
        base = cfg.foundation_model_id(model_id)
        return [
            f"arn:{out.partition}:bedrock:{out.region}:{out.account}:inference-profile/{model_id}",
            f"arn:{out.partition}:bedrock:*::foundation-model/{base}",
        ]
    return [f"arn:{out.partition}:bedrock:{out.region}::foundation-model/{model_id}"]


def _publish_results(out: StackOutputs) -> list[dict[str, Any]]:
    """sns:Publish on the stack's notification topic, where the stack has one (a stack made
    before the topic existed has no NotificationTopicArn output: nothing is published)."""
    topic = out.get("NotificationTopicArn")
    if topic is None:
        return []
    return [_statement("PublishResultNotifications", ["sns:Publish"], [topic])]


def _dispatch_statements(out: StackOutputs) -> list[dict[str, Any]]:
    """What ``dispatch_object`` calls: the Dispatcher's and the reconciler's."""
    return [
        _statement(
            "ReadUploads",
            ["s3:GetObject", "s3:GetObjectVersion"],
            [_objects(out, AUDIO_PREFIX)],
        ),
        _list_bucket(out, DISPATCHER_READER),
        _statement(
            "SendJobsAndResults",
            ["sqs:SendMessage"],
            [out["AudioQueueArn"], out["ResultsQueueArn"]],
        ),
        _statement(
            "JobTable",
            ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
            [out["JobTableArn"]],
        ),
        _statement("StartGpuWorker", ["autoscaling:SetDesiredCapacity"], [_asg_arn(out)]),
        # A refused upload's failure Result is published too (contracts.send_result).
        *_publish_results(out),
    ]


def dispatcher_policy(out: StackOutputs, stage: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            _logs(out, stage, DISPATCHER),
            *_dispatch_statements(out),
            # Lambda sends the record of an invocation that failed all its retries to the
            # on-failure destination with the function's role.
            _statement("OnFailureDestination", ["sqs:SendMessage"], [out["DispatcherDlqArn"]]),
            *_kms(out),
            *_without_resource_level_permissions(DISPATCHER),
        ],
    }


def reconciler_policy(out: StackOutputs, stage: str) -> dict[str, Any]:
    bucket = f"arn:{out.partition}:s3:::{out['BucketName']}"
    list_versions = _statement("ListUploadVersions", ["s3:ListBucketVersions"], [bucket])
    list_versions["Condition"] = {"StringLike": {"s3:prefix": [f"{AUDIO_PREFIX}*"]}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            _logs(out, stage, RECONCILER),
            *_dispatch_statements(out),
            list_versions,
            _statement(
                "ReadDispatchFailures",
                ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                [out["DispatcherDlqArn"]],
            ),
            *_kms(out),
            *_without_resource_level_permissions(RECONCILER),
        ],
    }


def dispatcher_event_invoke_config(out: StackOutputs, stage: str) -> dict[str, Any]:
    """``aws lambda put-function-event-invoke-config --cli-input-json`` for the Dispatcher."""
    return {
        "FunctionName": function_name(stage, DISPATCHER),
        "MaximumRetryAttempts": DISPATCHER_MAX_RETRY_ATTEMPTS,
        "MaximumEventAgeInSeconds": DISPATCHER_MAX_EVENT_AGE_S,
        "DestinationConfig": {"OnFailure": {"Destination": out["DispatcherDlqArn"]}},
    }


def event_invoke_config_file(stage: str) -> str:
    """Where write_stage puts it, in the project's ``.chalice/`` (scripts/deploy.sh reads it)."""
    return f"event-invoke-config-{stage}-{DISPATCHER}.json"


def llm_caller_policy(out: StackOutputs, stage: str, options: StageOptions) -> dict[str, Any]:
    statements = [
        _logs(out, stage, LLM_CALLER),
        _statement(
            "ReadTranscripts",
            ["s3:GetObject", "s3:GetObjectVersion"],  # the version its job's worker wrote
            [_objects(out, TRANSCRIPT_PREFIX)],
        ),
        # GetObject: HEAD before writing, so that another recording's output is not replaced.
        _statement("WriteOutputs", ["s3:GetObject", "s3:PutObject"], [_objects(out, FINAL_PREFIX)]),
        _statement(
            "ChunkCheckpoints",
            ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            [_objects(out, LLM_WORK_PREFIX)],
        ),
        _list_bucket(out, LLM_CALLER_READER, *filter(None, [options.glossary_key])),
        _statement(
            "LlmQueue",
            [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ChangeMessageVisibility",  # a throttled message returns sooner
                "sqs:SendMessage",  # a long transcript continues in a new message
            ],
            [out["LlmQueueArn"]],
        ),
        _statement("SendResults", ["sqs:SendMessage"], [out["ResultsQueueArn"]]),
        *_publish_results(out),
        _statement("JobTable", ["dynamodb:GetItem", "dynamodb:UpdateItem"], [out["JobTableArn"]]),
        *_kms(out),
    ]
    if options.glossary_key:
        glossary = f"arn:{out.partition}:s3:::{out['BucketName']}/{options.glossary_key}"
        statements.insert(2, _statement("ReadGlossary", ["s3:GetObject"], [glossary]))
    if options.corrector == "bedrock":
        statements.append(
            _statement(
                "InvokeModel",
                ["bedrock:InvokeModel"],
                bedrock_model_arns(out, options.model_id(out)),
            )
        )
    statements += _without_resource_level_permissions(LLM_CALLER)
    return {"Version": "2012-10-17", "Statement": statements}


def _present(values: Mapping[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def _dispatch_environment(out: StackOutputs, options: StageOptions) -> dict[str, str]:
    """What ``dispatch_object`` reads: the Dispatcher's settings, the reconciler's too."""
    return _present(
        {
            cfg.ENV_AUDIO_QUEUE_URL: out["AudioQueueUrl"],
            cfg.ENV_ASG_NAME: out["GpuAsgName"],
            "DEFAULT_LANGUAGE": options.default_language,
            "DEFAULT_GLOSSARY": options.default_glossary,
            "ENQUEUE_LEASE_SECONDS": str(DISPATCHER_TIMEOUT_S),
        }
    )


def llm_caller_concurrency(out: StackOutputs) -> int:
    """The stack's ``LlmCallerConcurrency`` (sized to the Bedrock quota: docs/design.md
    "Scaling"), else the default."""
    value = out.get(LLM_CALLER_CONCURRENCY_OUTPUT)
    return int(value) if value is not None else LLM_CALLER_CONCURRENCY


def stage_entry(out: StackOutputs, stage: str, options: StageOptions) -> dict[str, Any]:
    """This tool's keys of ``stages[stage]`` in ``.chalice/config.json``."""
    return {
        "autogen_policy": False,
        # Shared by both functions; also read when chalice loads app.py to deploy it (the
        # decorators' bucket and queue names).
        "environment_variables": _present(
            {
                cfg.ENV_BUCKET: out["BucketName"],
                cfg.ENV_JOB_TABLE: out["JobTableName"],
                cfg.ENV_RESULTS_QUEUE_URL: out["ResultsQueueUrl"],
                cfg.ENV_NOTIFICATION_TOPIC_ARN: out.get("NotificationTopicArn"),
                cfg.ENV_LOG_LEVEL: options.log_level,
                "LLM_QUEUE_NAME": out["LlmQueueName"],
                "LLM_MAX_CONCURRENCY": str(llm_caller_concurrency(out)),
            }
        ),
        "lambda_functions": {
            DISPATCHER: {
                "lambda_timeout": DISPATCHER_TIMEOUT_S,
                "lambda_memory_size": DISPATCHER_MEMORY_MB,
                "autogen_policy": False,
                "iam_policy_file": f"policy-{stage}-{DISPATCHER}.json",
                "environment_variables": _dispatch_environment(out, options),
            },
            LLM_CALLER: {
                "lambda_timeout": LLM_CALLER_TIMEOUT_S,
                "lambda_memory_size": LLM_CALLER_MEMORY_MB,
                "reserved_concurrency": llm_caller_concurrency(out),
                "autogen_policy": False,
                "iam_policy_file": f"policy-{stage}-{LLM_CALLER}.json",
                "environment_variables": _present(
                    {
                        cfg.ENV_LLM_QUEUE_URL: out["LlmQueueUrl"],
                        "CORRECTOR": options.corrector,
                        "BEDROCK_MODEL_ID": options.model_id(out),
                        "OPENAI_BASE_URL": options.openai_base_url,
                        "OPENAI_MODEL": options.openai_model,
                        "GLOSSARY_KEY": options.glossary_key,
                        "MAX_RECEIVES": str(LLM_QUEUE_MAX_RECEIVES),
                        "RETRY_DELAY_SECONDS": str(LLM_RETRY_DELAY_S),
                        "TIME_RESERVE_SECONDS": str(LLM_TIME_RESERVE_S),
                        "CORRECTION_LEASE_SECONDS": str(LLM_CALLER_TIMEOUT_S + 60),
                    }
                ),
            },
            RECONCILER: {
                "lambda_timeout": RECONCILER_TIMEOUT_S,
                "lambda_memory_size": RECONCILER_MEMORY_MB,
                "autogen_policy": False,
                "iam_policy_file": f"policy-{stage}-{RECONCILER}.json",
                "environment_variables": {
                    **_dispatch_environment(out, options),
                    cfg.ENV_DISPATCHER_DLQ_URL: out["DispatcherDlqUrl"],
                    "RECONCILE_GRACE_SECONDS": str(RECONCILE_GRACE_S),
                },
            },
        },
    }


def write_stage(
    project_dir: Path, stage: str, outputs: StackOutputs, options: StageOptions
) -> list[Path]:
    """Update ``stages[stage]`` of the project's config and write the stage's policies."""
    chalice_dir = project_dir / ".chalice"
    config_path = chalice_dir / "config.json"
    config: dict[str, Any] = (
        json.loads(config_path.read_text(encoding="utf-8"))
        if config_path.exists()
        else {"version": "2.0", "app_name": APP_NAME, "stages": {}}
    )
    entry = config.setdefault("stages", {}).setdefault(stage, {})
    entry.update(stage_entry(outputs, stage, options))
    policies = {
        DISPATCHER: dispatcher_policy(outputs, stage),
        LLM_CALLER: llm_caller_policy(outputs, stage, options),
        RECONCILER: reconciler_policy(outputs, stage),
    }
    documents = {
        entry["lambda_functions"][function]["iam_policy_file"]: policy
        for function, policy in policies.items()
    }
    documents[event_invoke_config_file(stage)] = dispatcher_event_invoke_config(outputs, stage)
    written = []
    chalice_dir.mkdir(parents=True, exist_ok=True)
    for name, document in documents.items():
        path = chalice_dir / name
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    config_path.write_text(text, encoding="utf-8")
    written.append(config_path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--outputs-json", required=True, type=Path)
    parser.add_argument("--project-dir", type=Path, default=_HERE)
    parser.add_argument("--region")
    parser.add_argument("--account")
    parser.add_argument("--corrector", default="bedrock", choices=cfg.LLM_CORRECTORS)
    parser.add_argument(
        "--bedrock-model-id",
        help="model or inference profile id (default: Claude Sonnet 4.6 through the profile "
        "of the region's geography)",
    )
    parser.add_argument("--openai-base-url")
    parser.add_argument("--openai-model")
    parser.add_argument("--glossary-key")
    parser.add_argument("--default-language")
    parser.add_argument(
        "--default-glossary",
        help="glossary of recordings that name none and whose details mention none "
        "(pipeline_core/glossaries/; default: none)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        outputs = StackOutputs.from_mapping(
            load_outputs(args.outputs_json), region=args.region, account=args.account
        )
        options = StageOptions(
            corrector=args.corrector,
            bedrock_model_id=args.bedrock_model_id,
            openai_base_url=args.openai_base_url,
            openai_model=args.openai_model,
            glossary_key=args.glossary_key,
            default_language=args.default_language,
            default_glossary=(check_name(args.default_glossary) if args.default_glossary else None),
            log_level=args.log_level,
        )
        for path in write_stage(args.project_dir, args.stage, outputs, options):
            print(path)
    except (StageConfigError, OSError, ValueError, KeyError) as exc:
        print(f"stage_config: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
