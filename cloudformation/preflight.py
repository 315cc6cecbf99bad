"""Deploy preflight: what the account would refuse, found before ``scripts/deploy.sh`` changes
anything.

    python -m cloudformation.preflight --region us-east-1 --stage dev \\
        [--stack-name NAME] [--bedrock-model-id ID] [--corrector bedrock] \\
        [--parameter Key=Value ...]

``--parameter`` takes the stack parameters deploy.sh passes (``WorkerAmiId``,
``GpuInstanceTypes``, ``MaxWorkers``...); the rest come from the deployed stack, else from
the template's defaults. Each check prints one line, ``ok``, ``WARN`` or ``FAIL``, saying in
plain words what it found and what to do; the exit status is 1 when a check failed.

- the Bedrock model: a one-token Converse call (model access, the id itself, IAM), and its
  lifecycle (``GetFoundationModel``; for an inference profile, the model behind it): Legacy
  warns, end of life (or unknown) fails;
- Lambda concurrency: the LLM Caller's reserved concurrency must leave Lambda's minimum
  unreserved (100, or the whole limit where it is lower: ``GetAccountSettings``);
- the Spot G and VT vCPU quota (``L-3819A6DF``) against the worker types and ``MaxWorkers``;
- the worker AMI exists, available, in the region (``DescribeImages``);
- Packer >= 1.7, which ``packer/`` needs to build that AMI.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from cloudformation.stack import load_template
from pipeline_core.config import default_bedrock_model_id
from pipeline_core.errors import bedrock_misconfiguration

_CHALICE_APP = Path(__file__).resolve().parents[1] / "chalice_app"
if str(_CHALICE_APP) not in sys.path:  # stage_config is a script of the Chalice project
    sys.path.append(str(_CHALICE_APP))

import stage_config  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

# Lambda refuses a reservation that leaves fewer unreserved executions than 100, or than the
# account's whole limit where that is lower (new accounts: 10, "below its minimum value of
# [10]"), so such an account can reserve nothing at all.
MAX_MIN_UNRESERVED_CONCURRENCY: Final = 100
SPOT_G_VCPU_QUOTA: Final = "L-3819A6DF"  # EC2 "All G and VT Spot Instance Requests" (vCPUs)
PACKER_MIN_VERSION: Final = (1, 7)
_PROFILE_PREFIX: Final = re.compile(r"^[a-z-]+\.(?=[a-z0-9-]+\.)")  # "us." of us.anthropic...


class Verdict(StrEnum):
    OK = "ok"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    check: str
    verdict: Verdict
    detail: str

    def line(self) -> str:
        return f"[{self.verdict.value:>4}] {self.check}: {self.detail}"


def _error(exc: ClientError) -> tuple[str, str]:
    error = exc.response.get("Error", {})
    return str(error.get("Code", "?")), str(error.get("Message", ""))


# -- Bedrock ---------------------------------------------------------------------------------


def check_model_access(runtime: BedrockRuntimeClient, model_id: str) -> Finding:
    """One Converse call of one output token, as the LLM Caller calls the model."""
    name = f"Bedrock model {model_id}"
    try:
        runtime.converse(
            modelId=model_id,
            messages=[{"role": "user", "content": [{"text": "Reply with OK."}]}],
            inferenceConfig={"maxTokens": 1},
        )
    except ClientError as exc:
        code, message = _error(exc)
        if "not authorized to perform" in message:
            # This identity's IAM, not the LLM Caller's (stage_config.py grants that role
            # the model): it says nothing about model access.
            return Finding(
                name, Verdict.WARN, f"could not be checked: the deploying identity may not "
                f"call it ({message}); allow it bedrock:InvokeModel to check model access",
            )  # fmt: skip
        misconfigured = bedrock_misconfiguration(code, message, model_id)
        if misconfigured is not None:
            return Finding(name, Verdict.FAIL, str(misconfigured))
        return Finding(name, Verdict.WARN, f"could not be checked ({code}: {message})")
    except BotoCoreError as exc:
        return Finding(name, Verdict.WARN, f"could not be checked (Bedrock unreachable: {exc})")
    return Finding(name, Verdict.OK, "answers a Converse call")


def foundation_model_of(bedrock: Any, model_id: str) -> str:
    """The foundation model id behind ``model_id`` (itself, unless it is an inference profile)."""
    if model_id.startswith("arn:") and "foundation-model/" in model_id:
        return model_id.rsplit("/", 1)[1]
    if _PROFILE_PREFIX.match(model_id) or ":inference-profile/" in model_id:
        profile = bedrock.get_inference_profile(inferenceProfileIdentifier=model_id)
        arns = [str(model["modelArn"]) for model in profile.get("models", [])]
        if arns:
            return arns[0].rsplit("/", 1)[1]
    return model_id


def check_model_lifecycle(bedrock: Any, model_id: str) -> Finding:
    name = f"Bedrock model lifecycle of {model_id}"
    try:
        base = foundation_model_of(bedrock, model_id)
        details = bedrock.get_foundation_model(modelIdentifier=base)["modelDetails"]
    except ClientError as exc:
        code, message = _error(exc)
        if code in ("ResourceNotFoundException", "ValidationException"):
            return Finding(
                name,
                Verdict.FAIL,
                f"Bedrock does not know it in this region ({code}: {message}); it may have "
                "reached its end of life. Choose a current model (--bedrock-model-id).",
            )
        return Finding(name, Verdict.WARN, f"could not be checked ({code}: {message})")
    status = str(details.get("modelLifecycle", {}).get("status", "?")).upper()
    if status == "ACTIVE":
        return Finding(name, Verdict.OK, f"{base} is Active")
    if status == "LEGACY":
        return Finding(
            name,
            Verdict.WARN,
            f"{base} is Legacy: it works today but reaches its end of life soon, after which "
            "every correction fails. Plan a move to its successor (--bedrock-model-id).",
        )
    return Finding(
        name,
        Verdict.FAIL,
        f"{base} is {status}: Bedrock refuses calls to it. Choose a current model "
        "(--bedrock-model-id).",
    )


# -- Lambda ----------------------------------------------------------------------------------


def check_lambda_concurrency(lambda_: Any, function_name: str, reserved: int) -> Finding:
    name = "Lambda concurrency"
    limits = lambda_.get_account_settings()["AccountLimit"]
    minimum = min(MAX_MIN_UNRESERVED_CONCURRENCY, int(limits["ConcurrentExecutions"]))
    needed = reserved + minimum
    unreserved = int(limits["UnreservedConcurrentExecutions"])
    try:  # a redeploy: the function's own reservation is already taken off "unreserved"
        current = lambda_.get_function_concurrency(FunctionName=function_name)
        unreserved += int(current.get("ReservedConcurrentExecutions", 0))
    except ClientError as exc:
        if _error(exc)[0] != "ResourceNotFoundException":
            raise
    if unreserved >= needed:
        return Finding(
            name, Verdict.OK, f"{unreserved} unreserved; the LLM Caller reserves {reserved}"
        )
    return Finding(
        name,
        Verdict.FAIL,
        f"the account has {unreserved} unreserved concurrent executions (limit "
        f"{limits['ConcurrentExecutions']}); reserving {reserved} for the LLM Caller needs at "
        f"least {needed}, as Lambda keeps {minimum} unreserved. Ask for a "
        "higher 'Concurrent executions' quota (Service Quotas, AWS Lambda) before deploying.",
    )


# -- EC2 -------------------------------------------------------------------------------------


def check_spot_gpu_quota(
    quotas: Any, ec2: Any, instance_types: Sequence[str], max_workers: int
) -> Finding:
    name = "Spot G and VT vCPU quota"
    described = ec2.describe_instance_types(InstanceTypes=list(instance_types))["InstanceTypes"]
    vcpus = max(int(item["VCpuInfo"]["DefaultVCpus"]) for item in described)
    needed = vcpus * max_workers
    try:
        quota = quotas.get_service_quota(ServiceCode="ec2", QuotaCode=SPOT_G_VCPU_QUOTA)
    except ClientError as exc:
        if _error(exc)[0] != "NoSuchResourceException":
            raise
        quota = quotas.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=SPOT_G_VCPU_QUOTA)
    value = int(quota["Quota"]["Value"])
    if value >= needed:
        return Finding(name, Verdict.OK, f"{value} vCPUs; {max_workers} worker(s) need {needed}")
    return Finding(
        name,
        Verdict.FAIL,
        f"the account may run {value} Spot G/VT vCPUs; {max_workers} worker(s) of up to "
        f"{vcpus} vCPUs ({', '.join(instance_types)}) need {needed}, so no GPU worker would "
        f"start. Request 'All G and VT Spot Instance Requests' ({SPOT_G_VCPU_QUOTA}) of at "
        f"least {needed} in Service Quotas (EC2), then deploy.",
    )


def check_ami(ec2: Any, ami_id: str | None, region: str) -> Finding:
    name = "worker AMI"
    if not ami_id:
        return Finding(
            name, Verdict.FAIL, "no --ami-id given and no stack to take it from: build it "
            "with packer/ (README 'Deploy') and pass its id",
        )  # fmt: skip
    try:
        images = ec2.describe_images(ImageIds=[ami_id])["Images"]
    except ClientError as exc:
        if not _error(exc)[0].startswith("InvalidAMIID"):
            raise
        images = []
    if not images:
        return Finding(
            name, Verdict.FAIL, f"{ami_id} does not exist in {region}: an AMI is regional; "
            "build it there (packer build -var region=...) or copy it (aws ec2 copy-image)",
        )  # fmt: skip
    state = images[0].get("State", "?")
    if state != "available":
        return Finding(name, Verdict.FAIL, f"{ami_id} is {state}, not available yet")
    return Finding(name, Verdict.OK, f"{ami_id} ({images[0].get('Name', '?')}) is available")


# -- Packer ----------------------------------------------------------------------------------


def packer_version() -> tuple[int, ...] | None:
    """The installed Packer's version, None when there is none."""
    if shutil.which("packer") is None:
        return None
    done = subprocess.run(
        ["packer", "version"], capture_output=True, text=True, check=False, timeout=30
    )
    return parse_packer_version(done.stdout)


def parse_packer_version(text: str) -> tuple[int, ...] | None:
    """``Packer v1.9.4`` -> (1, 9, 4)."""
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part) for part in found.groups() if part is not None) if found else None


def check_packer(version: tuple[int, ...] | None) -> Finding:
    name = "Packer"
    wanted = ".".join(map(str, PACKER_MIN_VERSION))
    if version is None:
        return Finding(
            name, Verdict.WARN, f"not installed: only needed to build the worker AMI "
            f"(packer/ needs >= {wanted})",
        )  # fmt: skip
    shown = ".".join(map(str, version))
    if version < PACKER_MIN_VERSION:
        return Finding(
            name, Verdict.FAIL, f"{shown} is too old for packer/ (HCL2 and `packer init` need "
            f">= {wanted}): install a current Packer to build the worker AMI",
        )  # fmt: skip
    return Finding(name, Verdict.OK, shown)


# -- all of it -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreflightClients:
    bedrock_runtime: BedrockRuntimeClient
    bedrock: Any
    lambda_: Any
    service_quotas: Any
    ec2: Any
    cloudformation: Any


def stack_parameters(
    cloudformation: Any, stack_name: str, given: Mapping[str, str]
) -> dict[str, str]:
    """What the stack will be deployed with: the template's defaults, then the deployed
    stack's values, then the ones given."""
    template = load_template()["Parameters"]
    values = {k: str(p["Default"]) for k, p in template.items() if "Default" in p}
    try:
        [stack] = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
        values.update({p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]})
    except ClientError as exc:
        if "does not exist" not in _error(exc)[1]:
            raise
    values.update(given)
    return values


def run_preflight(
    clients: PreflightClients,
    *,
    region: str,
    stage: str,
    stack_name: str,
    parameters: Mapping[str, str],
    corrector: str = "bedrock",
    bedrock_model_id: str | None = None,
    packer: tuple[int, ...] | None = None,
) -> list[Finding]:
    values = stack_parameters(clients.cloudformation, stack_name, parameters)
    types = [t.strip() for t in values["GpuInstanceTypes"].split(",") if t.strip()]
    model_id = bedrock_model_id or default_bedrock_model_id(region)
    checks: list[tuple[str, Callable[[], Finding]]] = []
    if corrector == "bedrock":
        checks += [
            (f"Bedrock model {model_id}",
             lambda: check_model_access(clients.bedrock_runtime, model_id)),
            (f"Bedrock model lifecycle of {model_id}",
             lambda: check_model_lifecycle(clients.bedrock, model_id)),
        ]  # fmt: skip
    checks += [
        ("Lambda concurrency", lambda: check_lambda_concurrency(
            clients.lambda_,
            stage_config.function_name(stage, stage_config.LLM_CALLER),
            int(values["LlmCallerConcurrency"]),
        )),
        ("Spot G and VT vCPU quota", lambda: check_spot_gpu_quota(
            clients.service_quotas, clients.ec2, types, int(values["MaxWorkers"])
        )),
        ("worker AMI", lambda: check_ami(clients.ec2, values.get("WorkerAmiId"), region)),
        ("Packer", lambda: check_packer(packer)),
    ]  # fmt: skip
    return [_guarded(name, check) for name, check in checks]


def _guarded(name: str, check: Callable[[], Finding]) -> Finding:
    """A check the deploying identity may not run (no permission to read a quota, say)
    warns instead of stopping the others."""
    try:
        return check()
    except ClientError as exc:
        code, message = _error(exc)
        return Finding(name, Verdict.WARN, f"could not be checked ({code}: {message})")
    except BotoCoreError as exc:
        return Finding(name, Verdict.WARN, f"could not be checked ({exc})")


def _parameters(pairs: Sequence[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--parameter {pair!r} is not Key=Value")
        values[key] = value
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudformation.preflight", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--region", required=True)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--stack-name", default="transcription-pipeline")
    parser.add_argument("--corrector", default="bedrock")
    parser.add_argument("--bedrock-model-id")
    parser.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    import boto3

    session = boto3.Session(region_name=args.region)
    clients = PreflightClients(
        bedrock_runtime=session.client("bedrock-runtime"),
        bedrock=session.client("bedrock"),
        lambda_=session.client("lambda"),
        service_quotas=session.client("service-quotas"),
        ec2=session.client("ec2"),
        cloudformation=session.client("cloudformation"),
    )
    findings = run_preflight(
        clients,
        region=args.region,
        stage=args.stage,
        stack_name=args.stack_name,
        parameters=_parameters(args.parameter),
        corrector=args.corrector,
        bedrock_model_id=args.bedrock_model_id,
        packer=packer_version(),
    )
    for finding in findings:
        print(finding.line())
    failed = [f for f in findings if f.verdict is Verdict.FAIL]
    if failed:
        print(f"preflight: {len(failed)} check(s) failed; nothing was changed.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
