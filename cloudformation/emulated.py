"""The pipeline stack created from ``pipeline.yaml`` in an emulated account (moto).

Every emulated world of the project is this one stack: the tests (``mock_aws`` or a moto
server), the local mode (a moto server) and the benchmark (``mock_aws``). What the stack
made is read from its outputs into ``EmulatedStack``; nothing is named by hand.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import boto3

from cloudformation.stack import (
    DEFAULT_STACK_NAME,
    StackError,
    create_stack,
    load_template,
    physical_ids,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

REGION: Final = "us-east-1"


@dataclass(frozen=True)
class EmulatedStack:
    """What the stack created, read from its outputs (and its resource list)."""

    name: str
    parameters: dict[str, str]
    outputs: dict[str, str]  # output name -> value, as scripts/deploy.sh reads them
    ids: dict[str, str]  # logical id -> physical id
    bucket: str
    job_table: str
    audio_queue_url: str
    audio_dlq_url: str
    llm_queue_url: str
    llm_queue_name: str
    llm_dlq_url: str
    results_queue_url: str
    results_dlq_url: str
    asg_name: str
    # Where the stack lives: clients for it come from this session at this endpoint.
    session: boto3.Session = field(compare=False, repr=False)
    endpoint_url: str | None = None

    @classmethod
    def from_outputs(
        cls,
        name: str,
        *,
        parameters: Mapping[str, str],
        outputs: Mapping[str, str],
        ids: Mapping[str, str],
        session: boto3.Session,
        endpoint_url: str | None,
    ) -> EmulatedStack:
        return cls(
            session=session,
            endpoint_url=endpoint_url,
            name=name,
            parameters=dict(parameters),
            outputs=dict(outputs),
            ids=dict(ids),
            bucket=outputs["BucketName"],
            job_table=outputs["JobTableName"],
            audio_queue_url=outputs["AudioQueueUrl"],
            audio_dlq_url=outputs["AudioDlqUrl"],
            llm_queue_url=outputs["LlmQueueUrl"],
            llm_queue_name=outputs["LlmQueueName"],
            llm_dlq_url=outputs["LlmDlqUrl"],
            results_queue_url=outputs["ResultsQueueUrl"],
            results_dlq_url=outputs["ResultsDlqUrl"],
            asg_name=outputs["GpuAsgName"],
        )

    def client(self, service: Any) -> Any:
        """A client of the emulator the stack lives in (``"sqs"``, ``"s3"``, ...)."""
        return self.session.client(service, region_name=REGION, endpoint_url=self.endpoint_url)

    def queue_urls(self) -> dict[str, str]:
        """Every queue and DLQ of the stack by its output's name less "Url" (``AudioDlq``)."""
        return {
            name.removesuffix("Url"): url
            for name, url in self.outputs.items()
            if name.endswith(("QueueUrl", "DlqUrl"))
        }


@functools.cache
def _template() -> Mapping[str, Any]:
    """The template as data, parsed once per process (read only)."""
    return load_template()


@functools.cache
def _emulator_session() -> boto3.Session:
    """One boto3 session for the stacks a process creates.

    A session loads each service's model once; ``mock_aws`` gives boto3 a new default
    session per mock, so clients made from that would load the CloudFormation and EC2
    models again for every stack (most of the time a stack takes). Endpoint and credentials
    are still read from the environment when each client is made. moto intercepts the
    clients of sessions made after it was imported, which holds here: the first stack is
    created inside an emulator.
    """
    return boto3.Session()


def create_emulated_stack(
    parameters: Mapping[str, str] | None = None,
    *,
    stack_name: str = DEFAULT_STACK_NAME,
    session: boto3.Session | None = None,
    endpoint_url: str | None = None,
) -> EmulatedStack:
    """Create the stack in the emulator that boto3 reaches now, with the emulator's gaps filled.

    ``parameters`` are added to (and override) the emulated account's (``emulator_parameters``).
    The clients come from ``session`` (if None, one kept for this purpose) at ``endpoint_url``
    (the environment's, ``AWS_ENDPOINT_URL``, if None): a ``mock_aws`` block or a moto
    server. Stack names are unique per emulator: callers that share one pass their own.
    """
    chosen_session = session if session is not None else _emulator_session()

    def client(service: Any) -> Any:
        return chosen_session.client(service, region_name=REGION, endpoint_url=endpoint_url)

    cloudformation = client("cloudformation")
    chosen = {**emulator_parameters(client("ec2")), **(parameters or {})}
    with warnings.catch_warnings():
        # moto skips the alarms, the scaling policy and the bucket policy, warning for each:
        # the local mode evaluates the alarm and policy itself, the rest changes nothing here.
        warnings.filterwarnings("ignore", "Tried to parse AWS::", UserWarning)
        outputs = create_stack(cloudformation, chosen, stack_name=stack_name)
        ids = physical_ids(cloudformation, stack_name)
    apply_emulator_gaps(client("s3"), client("dynamodb"), _template(), ids)
    return EmulatedStack.from_outputs(
        stack_name,
        parameters=chosen,
        outputs=outputs,
        ids=ids,
        session=chosen_session,
        endpoint_url=endpoint_url,
    )


def emulator_parameters(
    ec2: Any,  # an EC2 client (its stubs, mypy_boto3_ec2, are not among the dev stubs)
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
    lists = {
        name: str(parameter["Default"])
        for name, parameter in _template()["Parameters"].items()
        if parameter["Type"] == "CommaDelimitedList" and "Default" in parameter
    }
    return {
        **lists,
        "VpcId": vpc_id,
        "SubnetIds": ",".join(subnet["SubnetId"] for subnet in subnets[:2]),
        "WorkerAmiId": images[0]["ImageId"],
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
