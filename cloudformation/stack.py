"""Create the pipeline stack from ``pipeline.yaml`` through any CloudFormation endpoint.

The tests create it in moto (``mock_aws``), the local mode in a moto server, and both read
the same outputs that ``scripts/deploy.sh`` hands to ``chalice_app/stage_config.py``: one
template, whatever runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

TEMPLATE_PATH: Final = Path(__file__).resolve().parent / "pipeline.yaml"
DEFAULT_STACK_NAME: Final = "transcription-pipeline"

# Every output that scripts/deploy.sh, the Chalice stage config and the local mode read.
OUTPUT_NAMES: Final = (
    "BucketName",
    "BucketArn",
    "AudioQueueUrl",
    "AudioQueueArn",
    "LlmQueueUrl",
    "LlmQueueArn",
    "LlmQueueName",
    "ResultsQueueUrl",
    "ResultsQueueArn",
    "AudioDlqUrl",
    "LlmDlqUrl",
    "ResultsDlqUrl",
    "JobTableName",
    "JobTableArn",
    "GpuAsgName",
    "GpuAsgArn",
    "AlarmTopicArn",
    "OnPremPolicyArn",
)


class StackError(RuntimeError):
    """The stack did not reach CREATE_COMPLETE, or lacks an output."""


def template_body(path: Path = TEMPLATE_PATH) -> str:
    return path.read_text(encoding="utf-8")


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (``!Ref X`` -> ``{"Ref": "X"}``, ...)."""


def _short_form(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _short_form)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template as data, intrinsic functions in their long form."""
    loaded: dict[str, Any] = yaml.load(template_body(path), Loader=_CfnLoader)
    return loaded


def emulator_parameters(
    cloudformation: CloudFormationClient,
    ec2: Any,  # an EC2 client (its stubs, mypy_boto3_ec2, are not among the dev stubs)
    template: str | None = None,
) -> dict[str, str]:
    """Parameters for an emulated account: its default VPC, two subnets and an AMI.

    moto starts every region with a default VPC, subnets and a catalogue of AMIs; a real
    account passes its own (scripts/deploy.sh). List parameters are passed with their
    defaults too: moto splits a CommaDelimitedList only when it is given, not defaulted.
    """
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise StackError("the emulated region has no default VPC")
    vpc_id = vpcs[0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    # A filtered listing: moto's whole AMI catalogue takes a second to describe.
    images = (
        ec2.describe_images(
            Owners=["amazon"], Filters=[{"Name": "name", "Values": ["Deep Learning AMI Ubuntu*"]}]
        )["Images"]
        or ec2.describe_images(Owners=["amazon"])["Images"]
    )
    if not subnets or not images:
        raise StackError("the emulated region has no subnets or no AMIs")
    summary = cloudformation.get_template_summary(
        TemplateBody=template if template is not None else template_body()
    )
    lists = {
        parameter["ParameterKey"]: parameter["DefaultValue"]
        for parameter in summary["Parameters"]
        if parameter.get("ParameterType") == "CommaDelimitedList" and "DefaultValue" in parameter
    }
    return {
        **lists,
        "VpcId": vpc_id,
        "SubnetIds": ",".join(subnet["SubnetId"] for subnet in subnets[:2]),
        "WorkerAmiId": images[0]["ImageId"],
    }


def create_stack(
    cloudformation: CloudFormationClient,
    parameters: Mapping[str, str],
    stack_name: str = DEFAULT_STACK_NAME,
    template: str | None = None,
) -> dict[str, str]:
    """Create the stack, wait for it, and return its outputs (name -> value)."""
    cloudformation.create_stack(
        StackName=stack_name,
        TemplateBody=template if template is not None else template_body(),
        Parameters=[
            {"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()
        ],
        Capabilities=["CAPABILITY_IAM"],
    )
    cloudformation.get_waiter("stack_create_complete").wait(
        StackName=stack_name, WaiterConfig={"Delay": 1, "MaxAttempts": 300}
    )
    return stack_outputs(cloudformation, stack_name)


def stack_outputs(cloudformation: CloudFormationClient, stack_name: str) -> dict[str, str]:
    """The stack's outputs; raises StackError when one the pipeline needs is missing."""
    (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    status = stack["StackStatus"]
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise StackError(f"stack {stack_name} is {status}: {stack.get('StackStatusReason', '')}")
    outputs = {out["OutputKey"]: out["OutputValue"] for out in stack.get("Outputs", [])}
    missing = [name for name in OUTPUT_NAMES if name not in outputs]
    if missing:
        raise StackError(f"stack {stack_name} lacks outputs: {', '.join(missing)}")
    return outputs


def physical_ids(cloudformation: CloudFormationClient, stack_name: str) -> dict[str, str]:
    """Logical id -> what the stack created (a queue's URL, a bucket's name, ...)."""
    paginator = cloudformation.get_paginator("list_stack_resources")
    return {
        resource["LogicalResourceId"]: resource["PhysicalResourceId"]
        for page in paginator.paginate(StackName=stack_name)
        for resource in page["StackResourceSummaries"]
        if resource.get("PhysicalResourceId")
    }


def apply_emulator_gaps(
    s3: S3Client,
    dynamodb: DynamoDBClient,
    template: Mapping[str, Any],
    ids: Mapping[str, str],
) -> None:
    """Apply the template's settings that moto's CloudFormation ignores, read from the template.

    moto 5.2 creates the bucket and the table but drops versioning, the public access block,
    TTL and point-in-time recovery; the Dispatcher keys jobs on VersionId, so an emulated
    bucket without versioning would behave unlike the real one. Only settings without
    intrinsic functions are applied here (the rest, lifecycle and bucket policy, do not
    change what the pipeline sees).
    """
    for logical_id, resource in template["Resources"].items():
        props: Mapping[str, Any] = resource.get("Properties", {})
        if resource["Type"] == "AWS::S3::Bucket":
            bucket = ids[logical_id]
            versioning = props.get("VersioningConfiguration")
            if versioning:
                s3.put_bucket_versioning(
                    Bucket=bucket, VersioningConfiguration={"Status": versioning["Status"]}
                )
            block = props.get("PublicAccessBlockConfiguration")
            if block:
                s3.put_public_access_block(
                    Bucket=bucket,
                    PublicAccessBlockConfiguration={
                        "BlockPublicAcls": bool(block.get("BlockPublicAcls")),
                        "IgnorePublicAcls": bool(block.get("IgnorePublicAcls")),
                        "BlockPublicPolicy": bool(block.get("BlockPublicPolicy")),
                        "RestrictPublicBuckets": bool(block.get("RestrictPublicBuckets")),
                    },
                )
        elif resource["Type"] == "AWS::DynamoDB::Table":
            table = ids[logical_id]
            ttl = props.get("TimeToLiveSpecification")
            if ttl and ttl.get("Enabled"):
                dynamodb.update_time_to_live(
                    TableName=table,
                    TimeToLiveSpecification={
                        "AttributeName": ttl["AttributeName"],
                        "Enabled": True,
                    },
                )
            pitr = props.get("PointInTimeRecoverySpecification")
            if pitr and pitr.get("PointInTimeRecoveryEnabled"):
                dynamodb.update_continuous_backups(
                    TableName=table,
                    PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
                )
