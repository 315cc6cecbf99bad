"""The deploy preflight, check by check. What answers each check:

- the one-token Converse call: ``fake_llm``'s Converse server over real HTTP (moto has no
  Converse), with Bedrock's status codes, error headers and messages;
- ``GetFoundationModel`` / ``GetInferenceProfile``, Lambda's ``GetAccountSettings`` /
  ``GetFunctionConcurrency`` and Service Quotas' ``GetServiceQuota``: botocore Stubbers (moto
  has none of the first three, and its Service Quotas knows only VPC quotas);
- ``DescribeImages``, ``DescribeInstanceTypes`` and ``DescribeStacks``: moto.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from support.fake_llm import (
    MODEL_ID_INVALID,
    NO_MODEL_ACCESS,
    RETIRED_MODEL_ID,
    FakeModel,
    running_model,
)

from cloudformation import preflight
from cloudformation.emulated import REGION
from cloudformation.preflight import Finding, Verdict

PROFILE = "us.anthropic.claude-sonnet-4-6"
BASE = "anthropic.claude-sonnet-4-6"
FUNCTION = "transcription-pipeline-dev-llm_caller"


@pytest.fixture
def model() -> Iterator[FakeModel]:
    with running_model() as fake:
        yield fake


def runtime(model: FakeModel) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=model.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


def stubbed(service: Any) -> tuple[Any, Stubber]:
    client = boto3.Session(
        region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    ).client(service)
    return client, Stubber(client)


# -- Bedrock: access ---------------------------------------------------------------------------


def test_a_callable_model_passes_with_one_token(model: FakeModel) -> None:
    finding = preflight.check_model_access(runtime(model), PROFILE)
    assert finding.verdict is Verdict.OK
    [call] = model.converse_calls()
    assert call.path == f"/model/{PROFILE}/converse"
    assert call.body["inferenceConfig"] == {"maxTokens": 1}


def test_a_retired_model_fails_and_says_to_choose_another(model: FakeModel) -> None:
    finding = preflight.check_model_access(runtime(model), RETIRED_MODEL_ID)
    assert finding.verdict is Verdict.FAIL
    assert MODEL_ID_INVALID[1] in finding.detail
    assert "--bedrock-model-id" in finding.detail


def test_a_model_without_access_fails_and_says_where_to_enable_it(model: FakeModel) -> None:
    model.script.model_errors[PROFILE] = NO_MODEL_ACCESS
    finding = preflight.check_model_access(runtime(model), PROFILE)
    assert finding.verdict is Verdict.FAIL
    assert "Model access" in finding.detail


def test_a_deployer_without_bedrock_permission_is_told_so_not_failed(model: FakeModel) -> None:
    denied = "User: arn:aws:iam::123456789012:user/deployer is not authorized to perform: ..."
    model.script.model_errors[PROFILE] = ("AccessDeniedException", denied)
    finding = preflight.check_model_access(runtime(model), PROFILE)
    assert finding.verdict is Verdict.WARN
    assert "deploying identity" in finding.detail


def test_a_throttled_check_warns_instead_of_failing(model: FakeModel) -> None:
    model.script.fail_times = 1
    finding = preflight.check_model_access(runtime(model), PROFILE)
    assert finding.verdict is Verdict.WARN
    assert "ThrottlingException" in finding.detail


# -- Bedrock: lifecycle ------------------------------------------------------------------------


def foundation_model(status: str) -> dict[str, Any]:
    arn = f"arn:aws:bedrock:{REGION}::foundation-model/{BASE}"
    return {
        "modelDetails": {
            "modelArn": arn, "modelId": BASE, "providerName": "Anthropic",
            "modelLifecycle": {"status": status},
        }
    }  # fmt: skip


def stub_profile(stubber: Stubber) -> None:
    stubber.add_response(
        "get_inference_profile",
        {
            "inferenceProfileName": "US Claude Sonnet 4.6",
            "inferenceProfileArn": f"arn:aws:bedrock:{REGION}:123456789012:"
            f"inference-profile/{PROFILE}",
            "inferenceProfileId": PROFILE,
            "status": "ACTIVE",
            "type": "SYSTEM_DEFINED",
            "models": [
                {"modelArn": f"arn:aws:bedrock:{region}::foundation-model/{BASE}"}
                for region in ("us-east-1", "us-east-2", "us-west-2")
            ],
        },
        {"inferenceProfileIdentifier": PROFILE},
    )


@pytest.mark.parametrize(("status", "verdict"), [("ACTIVE", Verdict.OK), ("LEGACY", Verdict.WARN)])
def test_the_lifecycle_is_read_from_the_model_behind_the_profile(
    status: str, verdict: Verdict
) -> None:
    bedrock, stubber = stubbed("bedrock")
    stub_profile(stubber)
    stubber.add_response(
        "get_foundation_model", foundation_model(status), {"modelIdentifier": BASE}
    )
    with stubber:
        finding = preflight.check_model_lifecycle(bedrock, PROFILE)
    stubber.assert_no_pending_responses()
    assert finding.verdict is verdict
    assert BASE in finding.detail
    if status == "LEGACY":
        assert "end of life" in finding.detail


def test_a_model_bedrock_no_longer_knows_is_refused() -> None:
    bedrock, stubber = stubbed("bedrock")
    stubber.add_client_error(
        "get_foundation_model", "ResourceNotFoundException", "Model not found", 404
    )
    with stubber:
        finding = preflight.check_model_lifecycle(bedrock, RETIRED_MODEL_ID)
    assert finding.verdict is Verdict.FAIL
    assert "end of life" in finding.detail


# -- Lambda ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "unreserved", "own", "verdict", "needed"),
    [
        (10, 10, None, Verdict.FAIL, 13),  # a new account: no reservation is possible
        (1000, 1000, None, Verdict.OK, 103),
        (1000, 102, None, Verdict.FAIL, 103),  # other functions reserve 898
        (1000, 100, 3, Verdict.OK, 103),  # a redeploy: its own 3 come back
    ],
    ids=["new-account", "ample", "mostly-reserved", "redeploy"],
)
def test_lambda_concurrency_leaves_the_minimum_unreserved(
    limit: int, unreserved: int, own: int | None, verdict: Verdict, needed: int
) -> None:
    lambda_, stubber = stubbed("lambda")
    stubber.add_response(
        "get_account_settings",
        {"AccountLimit": {"ConcurrentExecutions": limit,
                          "UnreservedConcurrentExecutions": unreserved}},
    )  # fmt: skip
    if own is None:
        stubber.add_client_error(
            "get_function_concurrency", "ResourceNotFoundException", "Function not found", 404
        )
    else:
        stubber.add_response(
            "get_function_concurrency",
            {"ReservedConcurrentExecutions": own},
            {"FunctionName": FUNCTION},
        )
    with stubber:
        finding = preflight.check_lambda_concurrency(lambda_, FUNCTION, 3)
    assert finding.verdict is verdict
    if verdict is Verdict.FAIL:
        assert f"at least {needed}" in finding.detail


# -- EC2 ---------------------------------------------------------------------------------------


def quota(value: float) -> dict[str, Any]:
    return {"Quota": {"ServiceCode": "ec2", "QuotaCode": "L-3819A6DF", "Value": value}}


@pytest.mark.parametrize(("value", "verdict"), [(0.0, Verdict.FAIL), (8.0, Verdict.OK)])
def test_the_spot_gpu_quota_covers_the_largest_worker_times_max_workers(
    aws: None, value: float, verdict: Verdict
) -> None:
    quotas, stubber = stubbed("service-quotas")
    stubber.add_response(
        "get_service_quota", quota(value), {"ServiceCode": "ec2", "QuotaCode": "L-3819A6DF"}
    )
    ec2 = boto3.client("ec2", region_name=REGION)
    with stubber:
        finding = preflight.check_spot_gpu_quota(quotas, ec2, ["g4dn.xlarge", "g5.xlarge"], 2)
    assert finding.verdict is verdict
    assert "need 8" in finding.detail  # 4 vCPUs each (moto's instance data), 2 workers
    if verdict is Verdict.FAIL:
        assert "L-3819A6DF" in finding.detail


def test_an_unset_quota_reads_the_default(aws: None) -> None:
    quotas, stubber = stubbed("service-quotas")
    stubber.add_client_error("get_service_quota", "NoSuchResourceException", "", 400)
    stubber.add_response("get_aws_default_service_quota", quota(0.0))
    with stubber:
        finding = preflight.check_spot_gpu_quota(
            quotas, boto3.client("ec2", region_name=REGION), ["g4dn.xlarge"], 1
        )
    assert finding.verdict is Verdict.FAIL


@pytest.mark.slow  # waits out retries or runs an external tool; not in the fast loop
def test_the_ami_must_exist_in_the_region(aws: None) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]
    ami = ec2.create_image(InstanceId=instance["InstanceId"], Name="transcription-worker")
    assert preflight.check_ami(ec2, ami["ImageId"], REGION).verdict is Verdict.OK
    missing = preflight.check_ami(ec2, "ami-0123456789abcdef0", REGION)
    assert missing.verdict is Verdict.FAIL
    assert "does not exist in us-east-1" in missing.detail
    assert preflight.check_ami(ec2, None, REGION).verdict is Verdict.FAIL


# -- Packer ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "verdict"),
    [("Packer v1.11.2\n", Verdict.OK), ("Packer v1.6.6\n", Verdict.FAIL), (None, Verdict.WARN)],
)
def test_packer_must_be_at_least_1_7_to_build_the_ami(output: str | None, verdict: Verdict) -> None:
    version = preflight.parse_packer_version(output) if output is not None else None
    assert preflight.check_packer(version).verdict is verdict


# -- all of it ---------------------------------------------------------------------------------


def test_the_whole_preflight_reads_the_deploy_parameters_and_survives_a_denied_check(
    aws: None, model: FakeModel
) -> None:
    bedrock, bedrock_stub = stubbed("bedrock")
    stub_profile(bedrock_stub)
    bedrock_stub.add_response("get_foundation_model", foundation_model("ACTIVE"))
    lambda_, lambda_stub = stubbed("lambda")
    lambda_stub.add_client_error("get_account_settings", "AccessDeniedException", "denied", 403)
    quotas, quota_stub = stubbed("service-quotas")
    quota_stub.add_response("get_service_quota", quota(4.0))
    clients = preflight.PreflightClients(
        bedrock_runtime=runtime(model),
        bedrock=bedrock,
        lambda_=lambda_,
        service_quotas=quotas,
        ec2=boto3.client("ec2", region_name=REGION),
        cloudformation=boto3.client("cloudformation", region_name=REGION),
    )
    with bedrock_stub, lambda_stub, quota_stub:
        findings = preflight.run_preflight(
            clients,
            region=REGION,
            stage="dev",
            stack_name="transcription-pipeline",  # not deployed yet: the template's defaults
            parameters={"WorkerAmiId": "ami-0123456789abcdef0", "MaxWorkers": "1"},
            packer=(1, 11, 2),
        )
    verdicts = {f.check: f.verdict for f in findings}
    assert verdicts == {
        f"Bedrock model {PROFILE}": Verdict.OK,  # the region's default profile
        f"Bedrock model lifecycle of {PROFILE}": Verdict.OK,
        "Lambda concurrency": Verdict.WARN,  # this identity may not read it: said, not fatal
        "Spot G and VT vCPU quota": Verdict.OK,  # g4dn/g5/g6.xlarge: 4 vCPUs, 1 worker
        "worker AMI": Verdict.FAIL,
        "Packer": Verdict.OK,
    }
    assert all(isinstance(f, Finding) and f.line().startswith("[") for f in findings)
