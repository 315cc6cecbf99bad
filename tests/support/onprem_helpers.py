"""Helpers shared by the on-prem client's tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.config import Config

from onprem.aws import client_config
from onprem.settings import OnpremSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
BUCKET = "pipeline-bucket"


def fast_client_config() -> Config:
    """The client's real retry configuration, as the CLI builds it."""
    return client_config(OnpremSettings(max_attempts=4))


def versions(s3: S3Client, key: str) -> list[str]:
    listing = s3.list_object_versions(Bucket=BUCKET, Prefix=key)
    return [v["VersionId"] for v in listing.get("Versions", []) if v["Key"] == key]


def all_keys(s3: S3Client) -> list[str]:
    return sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))
