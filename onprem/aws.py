"""boto3 clients for the on-prem client, from the standard credential chain.

Nothing here reads or stores credentials: ``profile`` only names one of the user's AWS
profiles, and ``AWS_ENDPOINT_URL`` (boto3's own variable) points the clients elsewhere, e.g.
at a local emulator. Network errors and throttling are retried with backoff by botocore's
"standard" retry mode, so one dropped connection does not fail a file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from onprem.settings import OnpremSettings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


def client_config(settings: OnpremSettings) -> Config:
    return Config(
        retries={"mode": "standard", "max_attempts": settings.max_attempts},
        connect_timeout=10,
        # Above SQS's longest long poll (20 s), so a quiet queue is not a timeout.
        read_timeout=60,
        max_pool_connections=max(10, settings.max_concurrency * 2),
    )


class Clients:
    """Made on first use, so that ``upload`` needs no region and no SQS endpoint."""

    def __init__(self, settings: OnpremSettings) -> None:
        self._session = boto3.Session(profile_name=settings.profile, region_name=settings.region)
        self._config = client_config(settings)

    def s3(self) -> S3Client:
        return self._session.client("s3", config=self._config)

    def sqs(self) -> SQSClient:
        return self._session.client("sqs", config=self._config)

    def dynamodb(self) -> DynamoDBClient:
        return self._session.client("dynamodb", config=self._config)
