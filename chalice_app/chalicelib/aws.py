"""boto3 clients, made once per Lambda container and reused by every invocation."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

# AWS APIs other than Bedrock: botocore's standard retries absorb brief throttling.
_DEFAULT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 5})


# The function's credentials where several functions share one process (the local mode runs
# each under its own role); None: the environment's, as in a Lambda container.
_function_session: ContextVar[boto3.Session | None] = ContextVar("function_session", default=None)


@contextmanager
def calling_as(session: boto3.Session) -> Iterator[None]:
    """Make this context's clients from ``session`` (its credentials, its event hooks)."""
    token = _function_session.set(session)
    try:
        yield
    finally:
        _function_session.reset(token)


def _client(service: str) -> Any:
    return _session_client(_function_session.get(), service)


@functools.cache
def _session_client(session: boto3.Session | None, service: str) -> Any:
    if session is None:
        return boto3.client(service, config=_DEFAULT_CONFIG)  # type: ignore[call-overload]
    return session.client(service, config=_DEFAULT_CONFIG)  # type: ignore[call-overload]


def s3() -> S3Client:
    client: S3Client = _client("s3")
    return client


def sqs() -> SQSClient:
    client: SQSClient = _client("sqs")
    return client


def dynamodb() -> DynamoDBClient:
    client: DynamoDBClient = _client("dynamodb")
    return client


def sns() -> Any:  # an SNS client (its stubs, mypy_boto3_sns, are not among the dev stubs)
    return _client("sns")


def autoscaling() -> AutoScalingClient:
    client: AutoScalingClient = _client("autoscaling")
    return client


def bedrock_runtime(
    endpoint_url: str | None, retry_mode: str, max_attempts: int, read_timeout: int
) -> BedrockRuntimeClient:
    return _bedrock_runtime(
        _function_session.get(), endpoint_url, retry_mode, max_attempts, read_timeout
    )


@functools.cache
def _bedrock_runtime(
    session: boto3.Session | None,
    endpoint_url: str | None,
    retry_mode: str,
    max_attempts: int,
    read_timeout: int,
) -> BedrockRuntimeClient:
    """Bedrock with bounded retries and backoff done by botocore (throttling, 5xx, timeouts)."""
    config = Config(
        retries={"mode": cast(Any, retry_mode), "total_max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=read_timeout,
        # Several chunks of one transcript are corrected at once, each on its own connection.
        max_pool_connections=16,
    )
    client: BedrockRuntimeClient = (session or boto3).client(
        "bedrock-runtime", endpoint_url=endpoint_url, config=config
    )
    return client


def clear() -> None:
    """Forget the clients (tests start each case with fresh ones inside moto)."""
    _session_client.cache_clear()
    _bedrock_runtime.cache_clear()
