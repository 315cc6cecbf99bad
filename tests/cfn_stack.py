"""The pipeline stack created in moto from cloudformation/pipeline.yaml, for the tests."""

from __future__ import annotations

from dataclasses import dataclass

import boto3

from cloudformation.stack import (
    DEFAULT_STACK_NAME,
    apply_emulator_gaps,
    create_stack,
    emulator_parameters,
    load_template,
    physical_ids,
)

REGION = "us-east-1"


@dataclass(frozen=True)
class Stack:
    outputs: dict[str, str]
    ids: dict[str, str]  # logical id -> physical id
    parameters: dict[str, str]


def create_emulated_stack(extra: dict[str, str] | None = None) -> Stack:
    """Create the stack in the active moto mock (parameters: moto's account, then ``extra``)."""
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    parameters = {
        **emulator_parameters(cloudformation, boto3.client("ec2", region_name=REGION)),
        **(extra or {}),
    }
    outputs = create_stack(cloudformation, parameters)
    ids = physical_ids(cloudformation, DEFAULT_STACK_NAME)
    apply_emulator_gaps(
        boto3.client("s3", region_name=REGION),
        boto3.client("dynamodb", region_name=REGION),
        load_template(),
        ids,
    )
    return Stack(outputs=outputs, ids=ids, parameters=parameters)
