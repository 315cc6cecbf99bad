"""The pipeline stack created from ``pipeline.yaml`` in an emulated account (moto).

Every emulated world of the project is this one stack: the tests (``mock_aws`` or a moto
server), the local mode (a moto server) and the benchmark (``mock_aws``). What the stack
made is read from its outputs into ``EmulatedStack``; nothing is named by hand.
"""

from __future__ import annotations

import contextlib
import functools
import json
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

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
    notification_topic_arn: str
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
            notification_topic_arn=outputs["NotificationTopicArn"],
        )

    def client(self, service: Any) -> Any:
        """A client of the emulator the stack lives in (``"sqs"``, ``"s3"``, ...)."""
        return self.session.client(service, region_name=REGION, endpoint_url=self.endpoint_url)

    def generated_names(self) -> dict[str, str]:
        """The names moto generated -> ``${LogicalId}``, to compare runs and policies."""
        names = {
            self.bucket: "${PipelineBucket}",
            self.job_table: "${JobTable}",
            self.outputs["AudioQueueArn"].split(":")[4]: "${AWS::AccountId}",
            self.notification_topic_arn.rsplit(":", 1)[-1]: "${NotificationTopic}",
            self.name: "${AWS::StackName}",
            REGION: "${AWS::Region}",
        }
        for logical, url in self.queue_urls().items():
            names[url.rsplit("/", 1)[-1]] = f"${{{logical}}}"
        return names

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
    if not subnets:
        raise StackError("the emulated region has no subnets")
    return {
        **{
            name: str(parameter["Default"])
            for name, parameter in _template()["Parameters"].items()
            if parameter["Type"] == "CommaDelimitedList" and "Default" in parameter
        },
        "VpcId": vpc_id,
        "SubnetIds": ",".join(subnet["SubnetId"] for subnet in subnets[:2]),
        "WorkerAmiId": _worker_ami(ec2),
    }


EMULATED_AMI_NAME: Final = "Deep Learning AMI Ubuntu (emulated worker AMI)"


def _worker_ami(ec2: Any) -> str:
    """A Deep Learning AMI from moto's catalogue, or one registered in the emulated account
    when the catalogue is not loaded (``MOTO_EC2_LOAD_DEFAULT_AMIS=false``, as in the tests)."""
    # A filtered listing: moto's whole AMI catalogue takes a second to describe.
    by_name = [{"Name": "name", "Values": ["Deep Learning AMI Ubuntu*"]}]
    images = ec2.describe_images(Owners=["amazon", "self"], Filters=by_name)["Images"]
    if images:
        return str(images[0]["ImageId"])
    registered = ec2.register_image(
        Name=EMULATED_AMI_NAME,
        Architecture="x86_64",
        RootDeviceName="/dev/sda1",
        VirtualizationType="hvm",
    )
    return str(registered["ImageId"])


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


# ---- identities: every component calls as its own IAM principal ---------------------------

WORKER: Final = "worker"
ONPREM: Final = "onprem"
_ALLOW_EVERYTHING: Final = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
_LAMBDA_TRUST: Final = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


# Services whose resources moto's access control evaluates; for every other service it
# checks the action against resource "*", which a statement naming its resource never grants.
_RESOURCE_CHECKED_BY_MOTO: Final = frozenset({"s3", "sqs", "iam", "sts"})
# AWS authorises SQS's batch operations as the single ones; moto asks for the batch name.
_MOTO_BATCH_ACTIONS: Final = {
    "sqs:DeleteMessage": "sqs:DeleteMessageBatch",
    "sqs:SendMessage": "sqs:SendMessageBatch",
    "sqs:ChangeMessageVisibility": "sqs:ChangeMessageVisibilityBatch",
}

# moto names some services' actions by their endpoint ("monitoring:PutMetricData").
_MOTO_ACTION_PREFIXES: Final = {"cloudwatch": "monitoring"}


def as_moto_enforces(policy: Mapping[str, Any]) -> dict[str, Any]:
    """``policy`` as moto can enforce it: statements of services whose resource moto does not
    evaluate are widened to resource "*" without their conditions (their actions stay exact),
    SQS's single actions also name their batch operations, and CloudWatch's their moto names;
    an object deletion is also granted on its bucket, where moto checks S3's DeleteObjects.
    The resources of the widened statements' calls are held to the real policy by the call
    ledger's check instead."""
    statements = policy["Statement"]
    widened = []
    for statement in [statements] if isinstance(statements, Mapping) else statements:
        if statement.get("Effect") != "Allow":
            widened.append(dict(statement))
            continue
        named = statement.get("Action", [])
        actions = [named] if isinstance(named, str) else list(named)
        actions += [_MOTO_BATCH_ACTIONS[a] for a in actions if a in _MOTO_BATCH_ACTIONS]
        actions += [
            f"{_MOTO_ACTION_PREFIXES[service]}:{name}"
            for service, name in (action.split(":", 1) for action in list(actions))
            if service in _MOTO_ACTION_PREFIXES
        ]
        services = {action.split(":", 1)[0] for action in actions}
        if "s3:DeleteObject" in actions:
            # AWS authorises DeleteObjects for each key it names; moto asks for DeleteObject on
            # the bucket, and refuses every key (in a 200 answer) when that is not granted.
            named = statement["Resource"]
            objects = [named] if isinstance(named, str) else list(named)
            buckets = sorted({arn.split("/", 1)[0] for arn in objects if ":s3:::" in arn})
            widened.append({"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": buckets})
        if services <= _RESOURCE_CHECKED_BY_MOTO:
            widened.append({**statement, "Action": actions})
            continue
        # moto knows none of these services' condition keys (a statement with one never
        # applies there), so the condition goes with the resource.
        unconditional = {key: value for key, value in statement.items() if key != "Condition"}
        widened.append({**unconditional, "Action": actions, "Resource": "*"})
    return {**policy, "Statement": widened}


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def environment(self) -> dict[str, str]:
        """As a process (a Lambda container, an instance) finds them in its environment."""
        values = {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }
        if self.session_token:
            values["AWS_SESSION_TOKEN"] = self.session_token
        return values

    def session(self) -> boto3.Session:
        return boto3.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            region_name=REGION,
        )


@dataclass(frozen=True)
class Identities:
    """Who calls the emulator once IAM is enforced, and what each component's policies say."""

    admin: Credentials  # the parts that play AWS itself: event sources, the scaler
    components: dict[str, Credentials]  # component -> its role's (or user's) credentials
    policies: dict[str, list[dict[str, Any]]]  # component -> the policy documents it holds


def create_identities(
    stack: EmulatedStack, function_policies: Mapping[str, Mapping[str, Any]]
) -> Identities:
    """Principals for every component, made while IAM is not yet enforced.

    The worker assumes the template's ``WorkerRole``; the on-prem client is a user with the
    template's ``OnPremPolicyArn``; each Lambda function (``function_policies``: name ->
    the policy ``chalice deploy`` attaches) gets a role carrying exactly that policy.
    """
    iam = stack.client("iam")

    def user(name: str) -> Credentials:
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Credentials(key["AccessKeyId"], key["SecretAccessKey"])

    admin_name = f"{stack.name}-emulated-aws"
    admin = user(admin_name)
    iam.put_user_policy(
        UserName=admin_name, PolicyName="everything", PolicyDocument=json.dumps(_ALLOW_EVERYTHING)
    )
    components: dict[str, Credentials] = {}
    policies: dict[str, list[dict[str, Any]]] = {}
    for function, policy in function_policies.items():
        components[function] = function_role(stack, function, policy)
        policies[function] = [dict(policy)]
    worker_role = stack.ids["WorkerRole"]
    components[WORKER] = _assume(stack, iam, worker_role, "i-local-worker")
    policies[WORKER] = [
        _enforceable_policy(iam, attached["PolicyArn"])
        for attached in iam.list_attached_role_policies(RoleName=worker_role)["AttachedPolicies"]
    ]
    onprem_name = f"{stack.name}-onprem"
    components[ONPREM] = user(onprem_name)
    iam.attach_user_policy(UserName=onprem_name, PolicyArn=stack.outputs["OnPremPolicyArn"])
    policies[ONPREM] = [_enforceable_policy(iam, stack.outputs["OnPremPolicyArn"])]
    return Identities(admin=admin, components=components, policies=policies)


def function_role(stack: EmulatedStack, function: str, policy: Mapping[str, Any]) -> Credentials:
    """The credentials of a Lambda function's role that carries exactly ``policy`` (made while
    IAM is not yet enforced; made again, the role's policy is replaced)."""
    iam = stack.client("iam")
    role = f"{stack.name}-{function}"
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(_LAMBDA_TRUST))
    iam.put_role_policy(
        RoleName=role, PolicyName=function, PolicyDocument=json.dumps(as_moto_enforces(policy))
    )
    return _assume(stack, iam, role, function)


def _assume(stack: EmulatedStack, iam: Any, role_name: str, session_name: str) -> Credentials:
    arn = iam.get_role(RoleName=role_name)["Role"]["Arn"]
    issued = stack.client("sts").assume_role(RoleArn=arn, RoleSessionName=session_name)
    keys = issued["Credentials"]
    return Credentials(keys["AccessKeyId"], keys["SecretAccessKey"], keys["SessionToken"])


def _enforceable_policy(iam: Any, arn: str) -> dict[str, Any]:
    """A managed policy the template made, as written; moto is given ``as_moto_enforces``."""
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    policy = dict(json.loads(unquote(document)) if isinstance(document, str) else document)
    iam.create_policy_version(
        PolicyArn=arn, PolicyDocument=json.dumps(as_moto_enforces(policy)), SetAsDefault=True
    )
    return policy


def enforce_iam(endpoint_url: str, *, enforced: bool = True) -> None:
    """Turn the moto server's IAM checks on (every request after this one) or off.

    The setting is the process's, not the server's: turn it off before the server goes.
    """
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/reset-auth",
        data=b"0" if enforced else b"inf",
        method="POST",
        headers={"Content-Type": "text/plain"},  # moto reads the raw body
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
