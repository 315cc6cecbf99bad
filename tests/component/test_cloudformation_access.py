"""The stack's parameters and its IAM, each in a stack of its own in moto."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
import stage_config
from botocore.exceptions import ClientError
from moto import mock_aws

from cloudformation.emulated import REGION, create_emulated_stack


@pytest.mark.slow  # waits out retries or runs an external tool; not in the fast loop
def test_queue_visibilities_follow_the_caller_timeout_and_the_parameter() -> None:
    with mock_aws():
        stack = create_emulated_stack({"AudioVisibilityTimeoutSeconds": "900"})
        sqs = boto3.client("sqs", region_name=REGION)
        llm = sqs.get_queue_attributes(
            QueueUrl=stack.outputs["LlmQueueUrl"], AttributeNames=["VisibilityTimeout"]
        )
        audio = sqs.get_queue_attributes(
            QueueUrl=stack.outputs["AudioQueueUrl"], AttributeNames=["VisibilityTimeout"]
        )
        assert llm["Attributes"]["VisibilityTimeout"] == str(stage_config.LLM_QUEUE_VISIBILITY_S)
        assert audio["Attributes"]["VisibilityTimeout"] == "900"


def test_fewer_gpu_types_give_fewer_overrides() -> None:
    with mock_aws():
        stack = create_emulated_stack({"GpuInstanceTypes": "g5.xlarge", "MaxWorkers": "2"})
        (group,) = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
            AutoScalingGroupNames=[stack.outputs["GpuAsgName"]]
        )["AutoScalingGroups"]
        overrides = group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]
        assert [o["InstanceType"] for o in overrides] == ["g5.xlarge"]
        assert group["MaxSize"] == 2


def _denied(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except ClientError as exc:
        # SQS over its JSON protocol reports moto's denial by HTTP status only.
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    return False


def test_iam_grants_each_party_only_its_own_prefixes_and_queues() -> None:
    """moto enforces the identity policies (S3 and SQS check resources) once told to."""
    from moto.core import set_initial_no_auth_action_count

    with mock_aws():
        stack = create_emulated_stack()
        out = stack.outputs
        iam = boto3.client("iam", region_name=REGION)
        iam.create_user(UserName="onprem")
        iam.attach_user_policy(UserName="onprem", PolicyArn=out["OnPremPolicyArn"])
        key = iam.create_access_key(UserName="onprem")["AccessKey"]
        onprem = boto3.Session(
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name=REGION,
        )
        worker_creds = boto3.client("sts", region_name=REGION).assume_role(
            RoleArn=iam.get_role(RoleName=stack.ids["WorkerRole"])["Role"]["Arn"],
            RoleSessionName="i-0123456789",
        )["Credentials"]
        worker = boto3.Session(
            aws_access_key_id=worker_creds["AccessKeyId"],
            aws_secret_access_key=worker_creds["SecretAccessKey"],
            aws_session_token=worker_creds["SessionToken"],
            region_name=REGION,
        )
        admin_s3 = boto3.client("s3", region_name=REGION)
        bucket = out["BucketName"]
        admin_s3.put_object(Bucket=bucket, Key="final-output/a.txt", Body=b"final")
        admin_s3.put_object(Bucket=bucket, Key="audio-input/a.mp3", Body=b"audio")
        admin_s3.put_object(Bucket=bucket, Key="transcriptions/a.timed.txt", Body=b"t")

        @set_initial_no_auth_action_count(0)
        def enforced() -> None:
            s3, sqs = onprem.client("s3"), onprem.client("sqs")
            s3.put_object(Bucket=bucket, Key="audio-input/b.mp3", Body=b"audio")
            assert s3.get_object(Bucket=bucket, Key="final-output/a.txt")["Body"].read()
            assert _denied(s3.put_object, Bucket=bucket, Key="final-output/x.txt", Body=b"x")
            assert s3.head_object(Bucket=bucket, Key="audio-input/b.mp3")["ContentLength"] == 5
            assert _denied(s3.get_object, Bucket=bucket, Key="transcriptions/a.timed.txt")
            sqs.receive_message(QueueUrl=out["ResultsQueueUrl"], WaitTimeSeconds=0)
            sqs.receive_message(QueueUrl=out["AudioDlqUrl"], WaitTimeSeconds=0)
            assert _denied(sqs.receive_message, QueueUrl=out["AudioQueueUrl"])
            assert _denied(sqs.receive_message, QueueUrl=out["LlmQueueUrl"])

            s3, sqs = worker.client("s3"), worker.client("sqs")
            assert s3.get_object(Bucket=bucket, Key="audio-input/a.mp3")["Body"].read()
            s3.put_object(Bucket=bucket, Key="transcriptions/a.timed.txt", Body=b"t")
            assert _denied(s3.put_object, Bucket=bucket, Key="final-output/a.txt", Body=b"x")
            assert _denied(s3.put_object, Bucket=bucket, Key="audio-input/c.mp3", Body=b"x")
            assert _denied(s3.get_object, Bucket=bucket, Key="final-output/a.txt")
            sqs.receive_message(QueueUrl=out["AudioQueueUrl"], WaitTimeSeconds=0)
            sqs.send_message(QueueUrl=out["LlmQueueUrl"], MessageBody="{}")
            sqs.send_message(QueueUrl=out["ResultsQueueUrl"], MessageBody="{}")
            assert _denied(sqs.receive_message, QueueUrl=out["LlmQueueUrl"])
            assert _denied(sqs.send_message, QueueUrl=out["AudioQueueUrl"], MessageBody="{}")
            assert _denied(sqs.receive_message, QueueUrl=out["AudioDlqUrl"])

        enforced()
