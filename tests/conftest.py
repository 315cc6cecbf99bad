"""Fixtures shared by the whole suite: fake AWS credentials and moto-backed clients.

The suite is sorted by level, and each test is marked with its folder's level:

- ``tests/unit/``: pure functions and parsing (no emulator, no process, no model);
- ``tests/component/``: one component for real: moto, handlers in-process, a real model,
  a real tool on an artefact (cfn-lint, packer, chalice package);
- ``tests/system/``: processes and the whole pipeline: local mode, the worker daemon as a
  process, the on-prem CLI, the fault suite (``system/reliability/``), the benchmark smoke run.

What tests share lives in ``tests/support/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer
from support import emulator_speed
from support.repo_paths import REPO_ROOT

from cloudformation.call_ledger import LEDGER_ALL_RUNS_ENV

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REGION = "us-east-1"
LEVELS = ("unit", "component", "system")

pytest_plugins = ["support.worker_fixtures"]

emulator_speed.install()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its level, taken from the folder it is in."""
    root = Path(__file__).resolve().parent
    for item in items:
        level = item.path.resolve().relative_to(root).parts[0]
        if level not in LEVELS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(LEVELS)}}}/")
        item.add_marker(getattr(pytest.mark, level))


_OUTSIDE_LEDGER = os.environ.get(LEDGER_ALL_RUNS_ENV)


@pytest.fixture(autouse=True)
def _aws_test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test ever talks to a real AWS account."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    # Every local-mode run of the suite adds its AWS calls to the ledger behind docs/iam.md.
    monkeypatch.setenv(LEDGER_ALL_RUNS_ENV, str(iam_ledger_path()))


def iam_ledger_path() -> Path:
    """Where the suite's local-mode runs add their calls (``$IAM_LEDGER`` if set outside)."""
    return Path(_OUTSIDE_LEDGER or REPO_ROOT / "build" / "iam" / "calls.json")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port, one per test module."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def job_table_name(aws: None) -> str:
    """A job table with the deployed table's key schema, in moto."""
    name = "jobs"
    client: DynamoDBClient = boto3.client("dynamodb", region_name=REGION)
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name
