"""stage_config.py: the stage's settings and least-privilege policies from stack outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import stage_config
from support.repo_paths import repo_root

from cloudformation.stack import load_template
from pipeline_core.config import DispatcherSettings, LlmCallerSettings, ReconcilerSettings

ROOT = Path(repo_root())
SCRIPT = ROOT / "chalice_app" / "stage_config.py"
EXAMPLE = json.loads((ROOT / "chalice_app" / "stage-outputs.example.json").read_text())
ASG_ARN = (
    "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:"
    "6d2f9c1e-1111-2222-3333-444455556666:autoScalingGroupName/transcription-dev-gpu"
)


def run(tmp_path: Path, outputs: Any, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--outputs-json", str(path),
         "--project-dir", str(tmp_path), *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def describe_stacks(outputs: dict[str, str]) -> dict[str, Any]:
    """The shape `aws cloudformation describe-stacks` prints."""
    return {
        "Stacks": [
            {
                "StackName": "transcription",
                "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()],
            }
        ]
    }


def stage(tmp_path: Path, name: str) -> dict[str, Any]:
    config = json.loads((tmp_path / ".chalice" / "config.json").read_text())
    entry: dict[str, Any] = config["stages"][name]
    return entry


def function_env(entry: dict[str, Any], function: str) -> dict[str, str]:
    return {
        **entry["environment_variables"],
        **entry["lambda_functions"][function]["environment_variables"],
    }


def policy(tmp_path: Path, entry: dict[str, Any], function: str) -> dict[str, Any]:
    name = entry["lambda_functions"][function]["iam_policy_file"]
    loaded: dict[str, Any] = json.loads((tmp_path / ".chalice" / name).read_text())
    return loaded


def test_the_stage_environment_is_what_the_functions_read(tmp_path: Path) -> None:
    result = run(tmp_path, describe_stacks(EXAMPLE), "--stage", "prod", "--log-level", "DEBUG")
    assert result.returncode == 0, result.stderr
    entry = stage(tmp_path, "prod")

    dispatcher = DispatcherSettings.from_env(function_env(entry, "dispatcher"))
    assert dispatcher.bucket == EXAMPLE["BucketName"]
    assert dispatcher.audio_queue_url == EXAMPLE["AudioQueueUrl"]
    assert dispatcher.results_queue_url == EXAMPLE["ResultsQueueUrl"]
    assert dispatcher.asg_name == EXAMPLE["GpuAsgName"]
    assert dispatcher.job_table == EXAMPLE["JobTableName"]
    assert dispatcher.log_level == "DEBUG"
    assert (
        dispatcher.enqueue_lease_seconds
        == entry["lambda_functions"]["dispatcher"]["lambda_timeout"]
    )

    caller = LlmCallerSettings.from_env(function_env(entry, "llm_caller"))
    assert caller.llm_queue_url == EXAMPLE["LlmQueueUrl"]
    assert caller.corrector == "bedrock"
    assert caller.max_receives == 3
    functions = entry["lambda_functions"]
    assert functions["llm_caller"]["reserved_concurrency"] == 3
    timeout = functions["llm_caller"]["lambda_timeout"]
    assert timeout <= 900
    assert 6 * timeout <= stage_config.LLM_QUEUE_VISIBILITY_S  # AWS's SQS event source rule
    assert caller.lease_seconds > timeout
    assert caller.time_reserve_seconds < timeout
    # Read by chalice when it loads app.py to deploy: the decorators' bucket and queue.
    assert entry["environment_variables"]["LLM_QUEUE_NAME"] == EXAMPLE["LlmQueueName"]
    assert entry["autogen_policy"] is False
    assert all(f["autogen_policy"] is False for f in functions.values())


# Wildcards a policy may hold besides its "*" statement (WILDCARD_SID), and why.
ALLOWED_WILDCARDS: dict[str, Callable[[str], bool]] = {
    # objects below one prefix of the pipeline's bucket
    "s3-prefix": lambda r: r.startswith("arn:aws:s3:::") and r.endswith("/*") and r.count("*") == 1,
    # the function's own log group's streams
    "own-log-streams": lambda r: r.startswith("arn:aws:logs:") and r.endswith(":*")
    and "/aws/lambda/transcription-pipeline-" in r and r.count("*") == 1,
    # the GPU group by name where the stack does not output its ARN (the id is generated)
    "asg-by-name": lambda r: r.startswith("arn:aws:autoscaling:")
    and ":autoScalingGroup:*:autoScalingGroupName/" in r and r.count("*") == 1,
    # a cross-region inference profile may route to its base model in any region
    "profile-regions": lambda r: r.startswith("arn:aws:bedrock:*::foundation-model/")
    and r.count("*") == 1,
}  # fmt: skip


def assert_least_privilege(document: dict[str, Any]) -> None:
    assert document["Version"] == "2012-10-17"
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            assert "*" not in action, statement
        for resource in statement["Resource"]:
            if resource == "*":
                assert statement["Sid"] == stage_config.WILDCARD_SID, statement
                assert set(statement["Action"]) <= set(stage_config.WILDCARD_ACTION_REASONS)
            elif "*" in resource:
                assert any(ok(resource) for ok in ALLOWED_WILDCARDS.values()), resource


def actions(document: dict[str, Any]) -> dict[str, set[str]]:
    granted: dict[str, set[str]] = {}
    for statement in document["Statement"]:
        for action in statement["Action"]:
            granted.setdefault(action, set()).update(statement["Resource"])
    return granted


def test_policies_grant_each_function_only_what_it_calls(tmp_path: Path) -> None:
    outputs = {**EXAMPLE, "GpuAsgArn": ASG_ARN}
    assert run(tmp_path, outputs, "--stage", "prod").returncode == 0
    entry = stage(tmp_path, "prod")
    dispatcher, caller = (
        policy(tmp_path, entry, "dispatcher"),
        policy(tmp_path, entry, "llm_caller"),
    )
    assert_least_privilege(dispatcher)
    assert_least_privilege(caller)

    bucket = f"arn:aws:s3:::{EXAMPLE['BucketName']}"
    d = actions(dispatcher)
    assert d["s3:GetObject"] == {f"{bucket}/audio-input/*"}
    # Its jobs and results, and (Lambda sends with its role) its on-failure destination.
    assert d["sqs:SendMessage"] == {
        EXAMPLE["AudioQueueArn"],
        EXAMPLE["ResultsQueueArn"],
        EXAMPLE["DispatcherDlqArn"],
    }
    assert d["dynamodb:PutItem"] == {EXAMPLE["JobTableArn"]}
    assert d["autoscaling:SetDesiredCapacity"] == {ASG_ARN}
    assert not any(a.startswith(("bedrock:", "s3:Put", "s3:Delete", "sqs:Receive")) for a in d)

    c = actions(caller)
    # The default: Claude Sonnet 4.6 through the US profile, and the models it routes to.
    assert c["bedrock:InvokeModel"] == {
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-6",
        "arn:aws:bedrock:*::foundation-model/anthropic.claude-sonnet-4-6",
    }
    assert c["s3:PutObject"] == {f"{bucket}/final-output/*", f"{bucket}/llm-work/*"}
    # final-output/: the HEAD that keeps it from writing over another recording's output.
    assert c["s3:GetObject"] == {
        f"{bucket}/transcriptions/*", f"{bucket}/llm-work/*", f"{bucket}/final-output/*",
    }  # fmt: skip
    assert c["s3:GetObjectVersion"] == {f"{bucket}/transcriptions/*"}  # its worker's version
    assert c["sqs:ReceiveMessage"] == {EXAMPLE["LlmQueueArn"]}
    assert c["sqs:SendMessage"] == {EXAMPLE["LlmQueueArn"], EXAMPLE["ResultsQueueArn"]}
    assert "dynamodb:PutItem" not in c
    assert not any(a.startswith(("autoscaling:", "kms:")) for a in c)
    for document, function in ((dispatcher, "dispatcher"), (caller, "llm_caller")):
        logs = actions(document)["logs:PutLogEvents"]
        assert all(f"transcription-pipeline-prod-{function}" in r for r in logs)


def test_options_change_exactly_their_statements(tmp_path: Path) -> None:
    outputs = {**EXAMPLE, "KmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/abc"}
    args = ["--stage", "eu", "--corrector", "openai", "--openai-base-url", "http://llm:8000/v1",
            "--glossary-key", "config/glossary.txt", "--default-language", "hebrew",
            "--default-glossary", "talmud"]  # fmt: skip
    assert run(tmp_path, outputs, *args).returncode == 0
    entry = stage(tmp_path, "eu")
    caller = policy(tmp_path, entry, "llm_caller")
    assert_least_privilege(caller)
    granted = actions(caller)
    assert "bedrock:InvokeModel" not in granted
    assert f"arn:aws:s3:::{EXAMPLE['BucketName']}/config/glossary.txt" in granted["s3:GetObject"]
    assert granted["kms:Decrypt"] == {outputs["KmsKeyArn"]}
    settings = LlmCallerSettings.from_env(function_env(entry, "llm_caller"))
    assert (settings.corrector, settings.openai_base_url) == ("openai", "http://llm:8000/v1")
    assert settings.glossary_key == "config/glossary.txt"
    dispatcher = DispatcherSettings.from_env(function_env(entry, "dispatcher"))
    assert dispatcher.default_language == "hebrew"
    assert dispatcher.default_glossary == "talmud"
    reconciler = function_env(entry, "reconciler")
    assert reconciler["DEFAULT_GLOSSARY"] == "talmud"  # it dispatches with the same rule
    assert run(tmp_path, outputs, "--stage", "x", "--default-glossary", "talmus").returncode == 2


def test_inference_profiles_get_the_profile_and_its_base_model(tmp_path: Path) -> None:
    out = stage_config.StackOutputs.from_mapping(EXAMPLE)
    profile = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
    arns = stage_config.bedrock_model_arns(out, profile)
    assert arns == [
        f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{profile}",
        "arn:aws:bedrock:*::foundation-model/anthropic.claude-3-5-sonnet-20241022-v2:0",
    ]
    options = stage_config.StageOptions(bedrock_model_id=profile)
    assert_least_privilege(stage_config.llm_caller_policy(out, "prod", options))


@pytest.mark.parametrize(
    ("region", "profile"),
    [
        ("us-east-1", "us.anthropic.claude-sonnet-4-6"),
        ("eu-central-1", "eu.anthropic.claude-sonnet-4-6"),
        ("ap-northeast-1", "jp.anthropic.claude-sonnet-4-6"),
        ("ap-southeast-2", "global.anthropic.claude-sonnet-4-6"),
    ],
)
def test_the_default_model_is_the_profile_of_the_regions_geography(
    tmp_path: Path, region: str, profile: str
) -> None:
    assert run(tmp_path, EXAMPLE, "--stage", "prod", "--region", region).returncode == 0
    entry = stage(tmp_path, "prod")
    assert LlmCallerSettings.from_env(function_env(entry, "llm_caller")).bedrock_model_id == profile
    granted = actions(policy(tmp_path, entry, "llm_caller"))["bedrock:InvokeModel"]
    assert f"arn:aws:bedrock:{region}:123456789012:inference-profile/{profile}" in granted
    # Unset (a hand-made stage), the function picks the same from the region it runs in.
    unset = {**function_env(entry, "llm_caller"), "AWS_REGION": region}
    del unset["BEDROCK_MODEL_ID"]
    assert LlmCallerSettings.from_env(unset).bedrock_model_id == profile


def test_a_chosen_model_id_is_deployed_and_granted(tmp_path: Path) -> None:
    chosen = "anthropic.claude-haiku-4-5-20251001-v1:0"
    assert run(tmp_path, EXAMPLE, "--stage", "prod", "--bedrock-model-id", chosen).returncode == 0
    entry = stage(tmp_path, "prod")
    assert function_env(entry, "llm_caller")["BEDROCK_MODEL_ID"] == chosen
    granted = actions(policy(tmp_path, entry, "llm_caller"))["bedrock:InvokeModel"]
    assert granted == {f"arn:aws:bedrock:us-east-1::foundation-model/{chosen}"}


def test_missing_outputs_are_named(tmp_path: Path) -> None:
    outputs = {k: v for k, v in EXAMPLE.items() if k != "JobTableArn"}
    result = run(tmp_path, outputs, "--stage", "prod")
    assert result.returncode == 2
    assert "JobTableArn" in result.stderr
    assert not (tmp_path / ".chalice" / "config.json").exists()


def test_an_unknown_corrector_is_refused() -> None:
    with pytest.raises(stage_config.StageConfigError, match="openai-base-url"):
        stage_config.StageOptions(corrector="openai")


def test_the_committed_dev_stage_is_rendered_from_the_example(tmp_path: Path) -> None:
    committed = ROOT / "chalice_app" / ".chalice"
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text((committed / "config.json").read_text())
    assert run(tmp_path, EXAMPLE, "--stage", "dev").returncode == 0
    rendered = [f"policy-dev-{function}.json" for function in ("dispatcher", "llm_caller")]
    rendered += ["config.json", "policy-dev-reconciler.json"]
    rendered.append(stage_config.event_invoke_config_file("dev"))
    for name in rendered:
        assert (tmp_path / ".chalice" / name).read_text() == (committed / name).read_text(), name


def test_the_dispatchers_async_invocation_config_is_valid_for_lambda(tmp_path: Path) -> None:
    """What scripts/deploy.sh hands to ``aws lambda put-function-event-invoke-config``: valid
    input for Lambda's API (botocore's own model), for the function Chalice deploys, with the
    stack's Dispatcher DLQ as on-failure destination, which the Dispatcher's role may reach."""
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    assert run(tmp_path, EXAMPLE, "--stage", "prod").returncode == 0
    path = tmp_path / ".chalice" / stage_config.event_invoke_config_file("prod")
    config = json.loads(path.read_text())
    model = get_session().get_service_model("lambda")
    shape = model.operation_model("PutFunctionEventInvokeConfig").input_shape
    assert shape is not None
    report = ParamValidator().validate(config, shape)
    assert not report.has_errors(), report.generate_report()
    assert config["FunctionName"] == "transcription-pipeline-prod-dispatcher"
    assert config["MaximumRetryAttempts"] == stage_config.DISPATCHER_MAX_RETRY_ATTEMPTS == 2
    assert 60 <= config["MaximumEventAgeInSeconds"] <= 21600  # Lambda's bounds
    destination = config["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == EXAMPLE["DispatcherDlqArn"]
    granted = actions(policy(tmp_path, stage(tmp_path, "prod"), "dispatcher"))
    assert granted["sqs:SendMessage"] >= {destination}
    # The reconciler leaves alone what Lambda may still deliver.
    reconciler = function_env(stage(tmp_path, "prod"), "reconciler")
    assert int(reconciler["RECONCILE_GRACE_SECONDS"]) >= config["MaximumEventAgeInSeconds"]


def test_the_reconciler_may_dispatch_and_read_the_dispatcher_dlq_only(tmp_path: Path) -> None:
    outputs = {**EXAMPLE, "GpuAsgArn": ASG_ARN}
    assert run(tmp_path, outputs, "--stage", "prod").returncode == 0
    entry = stage(tmp_path, "prod")
    document = policy(tmp_path, entry, "reconciler")
    assert_least_privilege(document)
    granted = actions(document)
    dispatcher = actions(policy(tmp_path, entry, "dispatcher"))
    # What dispatch_object calls, as the Dispatcher holds it ...
    for action in ("s3:GetObject", "dynamodb:PutItem", "autoscaling:SetDesiredCapacity"):
        assert granted[action] == dispatcher[action], action
    assert granted["sqs:SendMessage"] == {EXAMPLE["AudioQueueArn"], EXAMPLE["ResultsQueueArn"]}
    # ... and the Dispatcher DLQ and the upload listing, which the Dispatcher does not hold.
    assert (
        granted["sqs:ReceiveMessage"]
        == granted["sqs:DeleteMessage"]
        == {EXAMPLE["DispatcherDlqArn"]}
    )
    assert "sqs:ReceiveMessage" not in dispatcher
    (listing,) = [s for s in document["Statement"] if "s3:ListBucketVersions" in s["Action"]]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["audio-input/*"]}}
    assert not any(a.startswith(("s3:Put", "s3:Delete", "bedrock:")) for a in granted)
    settings = ReconcilerSettings.from_env(function_env(entry, "reconciler"))
    assert settings.dispatcher_dlq_url == EXAMPLE["DispatcherDlqUrl"]
    assert settings.dispatcher.audio_queue_url == EXAMPLE["AudioQueueUrl"]
    assert settings.grace_seconds == stage_config.RECONCILE_GRACE_S


def test_the_llm_callers_concurrency_is_the_stacks_parameter() -> None:
    """LlmCallerConcurrency (a stack parameter, sized to the Bedrock quota) becomes the
    function's reserved concurrency and its event source's maximum; a stack without the
    output gets the template's default."""
    template = load_template()
    default = template["Parameters"]["LlmCallerConcurrency"]["Default"]
    assert default == stage_config.LLM_CALLER_CONCURRENCY
    assert template["Outputs"]["LlmCallerConcurrency"]["Value"] == {"Ref": "LlmCallerConcurrency"}
    options = stage_config.StageOptions()
    for outputs, expected in (
        ({**EXAMPLE, "LlmCallerConcurrency": "12"}, 12),
        ({k: v for k, v in EXAMPLE.items() if k != "LlmCallerConcurrency"}, default),
    ):
        entry = stage_config.stage_entry(
            stage_config.StackOutputs.from_mapping(outputs), "prod", options
        )
        assert entry["lambda_functions"]["llm_caller"]["reserved_concurrency"] == expected
        assert entry["environment_variables"]["LLM_MAX_CONCURRENCY"] == str(expected)
