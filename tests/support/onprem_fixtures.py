"""Fixtures for the on-prem client's tests: a bucket, queues and clean settings in moto."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from support.onprem_helpers import BUCKET, REGION, fast_client_config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``onprem.cli.main`` configures the root logger; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user config file, no state outside the test, no age delay, no stray variables."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("ONPREM_MIN_AGE_SECONDS", "0")
    for name in list(os.environ):
        if name.startswith("ONPREM_") and name != "ONPREM_MIN_AGE_SECONDS":
            monkeypatch.delenv(name)
    for name in ("PIPELINE_BUCKET", "RESULTS_QUEUE_URL", "JOB_TABLE", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3(aws: None) -> S3Client:
    client: S3Client = boto3.client("s3", region_name=REGION, config=fast_client_config())
    client.create_bucket(Bucket=BUCKET)
    # Versioning makes a second upload of the same key visible as a second version.
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return client


@pytest.fixture
def sqs(aws: None) -> SQSClient:
    client: SQSClient = boto3.client("sqs", region_name=REGION, config=fast_client_config())
    return client


@pytest.fixture
def results_queue(sqs: SQSClient) -> str:
    dlq = sqs.create_queue(QueueName="results-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return sqs.create_queue(
        QueueName="results",
        Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": "3"}}',
        },
    )["QueueUrl"]
