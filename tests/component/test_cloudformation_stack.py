"""The CloudFormation template, created in moto and driven like the pipeline drives it."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from cloudformation.emulated import REGION, EmulatedStack, create_emulated_stack
from cloudformation.stack import OUTPUT_NAMES
from pipeline_core import keys
from pipeline_core.config import WorkerSettings
from pipeline_core.contracts import AudioJob, LlmJob, Result, send_to_queue
from pipeline_core.jobs import JobState, JobTable, job_id_for
from pipeline_core.metadata import decode_metadata, encode_metadata

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


@pytest.fixture(scope="module")
def stack() -> Iterator[EmulatedStack]:
    """One stack for this module's tests (each uses its own objects and messages)."""
    with mock_aws():
        yield create_emulated_stack()


def _receive_one(sqs: SQSClient, url: str, visibility: int | None = None) -> Any:
    kwargs: dict[str, Any] = {"QueueUrl": url, "MaxNumberOfMessages": 1, "WaitTimeSeconds": 0}
    if visibility is not None:
        kwargs["VisibilityTimeout"] = visibility
    messages = sqs.receive_message(**kwargs).get("Messages", [])
    assert len(messages) <= 1
    return messages[0] if messages else None


def test_stack_has_every_output_the_other_parts_read(stack: EmulatedStack) -> None:
    assert set(OUTPUT_NAMES) <= set(stack.outputs)
    assert stack.outputs["AudioQueueUrl"] == stack.ids["AudioQueue"]
    assert stack.outputs["LlmQueueUrl"].endswith("/" + stack.outputs["LlmQueueName"])
    assert stack.outputs["BucketArn"] == f"arn:aws:s3:::{stack.outputs['BucketName']}"
    # The constructed ARN pattern must match the group's real ARN (which embeds a UUID).
    (group,) = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[stack.outputs["GpuAsgName"]]
    )["AutoScalingGroups"]
    pattern = re.escape(stack.outputs["GpuAsgArn"]).replace(r"\*", "[0-9a-f-]+")
    assert re.fullmatch(pattern, group["AutoScalingGroupARN"])


def test_a_job_travels_through_the_bucket_queues_and_table(stack: EmulatedStack) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    bucket = stack.outputs["BucketName"]
    key = keys.audio_key("shiur 12.mp3")

    # On-prem upload: metadata travels with the object; versioning gives the job its id.
    put = s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=b"ID3 not really audio",
        Metadata=encode_metadata("hebrew", "בבא קמא ב."),
    )
    assert put["ServerSideEncryption"] == "AES256"
    version = put.get("VersionId")
    assert version, "the bucket must be versioned: the Dispatcher keys jobs on VersionId"
    head = s3.head_object(Bucket=bucket, Key=key)
    assert decode_metadata(head["Metadata"]).details == "בבא קמא ב."

    # Dispatcher: a job row and an Audio Queue message.
    jobs = JobTable(dynamodb, stack.outputs["JobTableName"])
    job_id = job_id_for(bucket, key, version)
    assert jobs.create(
        job_id=job_id, bucket=bucket, s3_key=key, version=version, language="he", details="x"
    )
    assert not jobs.create(  # a duplicate S3 event finds its job
        job_id=job_id, bucket=bucket, s3_key=key, version=version, language="he", details="x"
    )
    audio = AudioJob(s3_key=key, language="hebrew", details="x", job_id=job_id, version_id=version)
    send_to_queue(sqs, stack.outputs["AudioQueueUrl"], audio)

    # Worker: receive, read the pinned version, write the transcript, hand on, delete.
    message = _receive_one(sqs, stack.outputs["AudioQueueUrl"])
    received = AudioJob.from_json(message["Body"])
    assert received.version_id == version
    body = s3.get_object(Bucket=bucket, Key=received.object_key, VersionId=version)
    assert body["Body"].read() == b"ID3 not really audio"
    assert jobs.transition(job_id, JobState.TRANSCRIBING, expected=[JobState.QUEUED])
    timed = keys.transcript_keys(keys.stem(key)).timed
    s3.put_object(Bucket=bucket, Key=timed, Body="[00:00.000 --> 00:01.000] שלום".encode())
    llm = LlmJob(timed_key=timed, details="x", language="hebrew", job_id=job_id, source_key=key)
    send_to_queue(sqs, stack.outputs["LlmQueueUrl"], llm)
    sqs.delete_message(
        QueueUrl=stack.outputs["AudioQueueUrl"], ReceiptHandle=message["ReceiptHandle"]
    )

    # LLM Caller: receive, write final output, send the result.
    message = _receive_one(sqs, stack.outputs["LlmQueueUrl"])
    received_llm = LlmJob.from_json(message["Body"])
    final = keys.final_keys(received_llm.stem).text
    s3.put_object(Bucket=bucket, Key=final, Body="שלום".encode())
    result = Result.success(key, keys.s3_uri(bucket, final), job_id=job_id)
    send_to_queue(sqs, stack.outputs["ResultsQueueUrl"], result)
    sqs.delete_message(
        QueueUrl=stack.outputs["LlmQueueUrl"], ReceiptHandle=message["ReceiptHandle"]
    )

    # On-prem poller.
    message = _receive_one(sqs, stack.outputs["ResultsQueueUrl"])
    got = Result.from_json(message["Body"])
    bucket_name, final_key = keys.parse_s3_uri(got.output_file or "")
    assert s3.get_object(Bucket=bucket_name, Key=final_key)["Body"].read().decode() == "שלום"
    sqs.delete_message(
        QueueUrl=stack.outputs["ResultsQueueUrl"], ReceiptHandle=message["ReceiptHandle"]
    )
    for name in ("AudioQueueUrl", "LlmQueueUrl", "ResultsQueueUrl"):
        assert _receive_one(sqs, stack.outputs[name]) is None
    record = jobs.get(job_id)
    assert record is not None
    assert record.state is JobState.TRANSCRIBING


@pytest.mark.parametrize(
    ("queue", "dlq"),
    [
        ("AudioQueueUrl", "AudioDlqUrl"),
        ("LlmQueueUrl", "LlmDlqUrl"),
        ("ResultsQueueUrl", "ResultsDlqUrl"),
    ],
)
def test_a_message_received_three_times_moves_to_its_dlq(
    stack: EmulatedStack, queue: str, dlq: str
) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    sqs.send_message(QueueUrl=stack.outputs[queue], MessageBody='{"poison": true}')
    for _ in range(3):  # three failed attempts: received, never deleted
        assert _receive_one(sqs, stack.outputs[queue], visibility=0) is not None
    assert _receive_one(sqs, stack.outputs[queue], visibility=0) is None
    dead = _receive_one(sqs, stack.outputs[dlq])
    assert dead is not None
    assert json.loads(dead["Body"]) == {"poison": True}


def test_queue_attributes_follow_the_worker_and_lambda_rules(stack: EmulatedStack) -> None:
    sqs = boto3.client("sqs", region_name=REGION)

    def attributes(name: str) -> dict[str, str]:
        response = sqs.get_queue_attributes(QueueUrl=stack.outputs[name], AttributeNames=["All"])
        return {str(key): value for key, value in response["Attributes"].items()}

    assert attributes("AudioQueueUrl")["VisibilityTimeout"] == "600"
    assert attributes("LlmQueueUrl")["VisibilityTimeout"] == str(6 * 900)
    for name in ("AudioQueueUrl", "LlmQueueUrl", "ResultsQueueUrl"):
        queue = attributes(name)
        assert queue["SqsManagedSseEnabled"] == "true"
        redrive = json.loads(queue["RedrivePolicy"])
        assert redrive["maxReceiveCount"] == 3
        dlq_name = name.replace("QueueUrl", "DlqUrl")
        assert redrive["deadLetterTargetArn"] == attributes(dlq_name)["QueueArn"]
        assert attributes(dlq_name)["MessageRetentionPeriod"] == str(14 * 86400)
        assert attributes(dlq_name)["SqsManagedSseEnabled"] == "true"


def test_job_table_is_keyed_on_job_id_with_ttl_and_recovery(stack: EmulatedStack) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    name = stack.outputs["JobTableName"]
    table = dynamodb.describe_table(TableName=name)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "job_id", "AttributeType": "S"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TableArn"] == stack.outputs["JobTableArn"]
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    backups = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"


def test_bucket_blocks_public_access_and_keeps_versions(stack: EmulatedStack) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    bucket = stack.outputs["BucketName"]
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def _user_data_env(user_data_b64: str) -> dict[str, str]:
    script = base64.b64decode(user_data_b64).decode()
    match = re.search(r"<<'ENV'\n(.*?)\nENV\n", script, re.DOTALL)
    assert match, script
    env = dict(line.split("=", 1) for line in match.group(1).splitlines())
    assert "systemctl enable transcription-worker.service" in script
    return env


def test_launch_template_configures_the_worker_from_the_stack(stack: EmulatedStack) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    (version,) = ec2.describe_launch_template_versions(
        LaunchTemplateId=stack.ids["WorkerLaunchTemplate"]
    )["LaunchTemplateVersions"]
    data = version["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert all(mapping["Ebs"]["Encrypted"] for mapping in data["BlockDeviceMappings"])
    assert data["ImageId"] == stack.parameters["WorkerAmiId"]
    assert data["InstanceType"] == "g4dn.xlarge"
    assert data["IamInstanceProfile"]["Arn"].endswith(stack.ids["WorkerInstanceProfile"])

    env = _user_data_env(data["UserData"])
    # The env file is what the worker daemon reads: it must satisfy its settings reader.
    settings = WorkerSettings.from_env(env)
    assert settings.bucket == stack.outputs["BucketName"]
    assert settings.job_table == stack.outputs["JobTableName"]
    assert settings.audio_queue_url == stack.outputs["AudioQueueUrl"]
    assert settings.llm_queue_url == stack.outputs["LlmQueueUrl"]
    assert settings.results_queue_url == stack.outputs["ResultsQueueUrl"]
    assert settings.asg_name == stack.outputs["GpuAsgName"]
    assert settings.notification_topic_arn == stack.outputs["NotificationTopicArn"]
    assert settings.visibility_timeout_seconds == 600
    assert settings.device == "cuda"
    assert settings.imds_endpoint == "http://169.254.169.254"
    assert set(settings.models) == {"he", "*"}
    assert env["AWS_DEFAULT_REGION"] == REGION


def test_gpu_group_starts_empty_on_spot_across_gpu_types(stack: EmulatedStack) -> None:
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    (group,) = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[stack.outputs["GpuAsgName"]]
    )["AutoScalingGroups"]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 1, 0)
    assert group["Instances"] == []
    policy = group["MixedInstancesPolicy"]
    assert [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]] == [
        "g4dn.xlarge",
        "g5.xlarge",
        "g6.xlarge",
    ]
    distribution = policy["InstancesDistribution"]
    assert distribution["OnDemandBaseCapacity"] == 0
    assert distribution["OnDemandPercentageAboveBaseCapacity"] == 0
    assert distribution["SpotAllocationStrategy"] == "capacity-optimized"
    assert set(group["VPCZoneIdentifier"].split(",")) == set(
        stack.parameters["SubnetIds"].split(",")
    )
