"""Create the pipeline stack from ``pipeline.yaml`` through any CloudFormation endpoint.

The emulated worlds (tests, local mode, benchmark) create it through ``emulated.py`` and read
the same outputs that ``scripts/deploy.sh`` hands to ``chalice_app/stage_config.py``: one
template, whatever runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient

TEMPLATE_PATH: Final = Path(__file__).resolve().parent / "pipeline.yaml"
DEFAULT_STACK_NAME: Final = "transcription-pipeline"

# Every output that scripts/deploy.sh, the Chalice stage config and the local mode read.
OUTPUT_NAMES: Final = (
    "BucketName",
    "BucketArn",
    "AudioQueueUrl",
    "AudioQueueArn",
    "LlmQueueUrl",
    "LlmQueueArn",
    "LlmQueueName",
    "LlmCallerConcurrency",
    "ResultsQueueUrl",
    "ResultsQueueArn",
    "AudioDlqUrl",
    "LlmDlqUrl",
    "ResultsDlqUrl",
    "DispatcherDlqUrl",
    "DispatcherDlqArn",
    "JobTableName",
    "JobTableArn",
    "GpuAsgName",
    "GpuAsgArn",
    "AlarmTopicArn",
    "NotificationTopicArn",
    "OnPremPolicyArn",
)


class StackError(RuntimeError):
    """The stack did not reach CREATE_COMPLETE, or lacks an output."""


def template_body(path: Path = TEMPLATE_PATH) -> str:
    return path.read_text(encoding="utf-8")


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (``!Ref X`` -> ``{"Ref": "X"}``, ...)."""


def _short_form(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _short_form)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template as data, intrinsic functions in their long form."""
    loaded: dict[str, Any] = yaml.load(template_body(path), Loader=_CfnLoader)
    return loaded


def create_stack(
    cloudformation: CloudFormationClient,
    parameters: Mapping[str, str],
    stack_name: str = DEFAULT_STACK_NAME,
    template: str | None = None,
) -> dict[str, str]:
    """Create the stack, wait for it, and return its outputs (name -> value)."""
    cloudformation.create_stack(
        StackName=stack_name,
        TemplateBody=template if template is not None else template_body(),
        Parameters=[
            {"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()
        ],
        Capabilities=["CAPABILITY_IAM"],
    )
    cloudformation.get_waiter("stack_create_complete").wait(
        StackName=stack_name, WaiterConfig={"Delay": 1, "MaxAttempts": 300}
    )
    return stack_outputs(cloudformation, stack_name)


def stack_outputs(cloudformation: CloudFormationClient, stack_name: str) -> dict[str, str]:
    """The stack's outputs; raises StackError when one the pipeline needs is missing."""
    (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    status = stack["StackStatus"]
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise StackError(f"stack {stack_name} is {status}: {stack.get('StackStatusReason', '')}")
    outputs = {out["OutputKey"]: out["OutputValue"] for out in stack.get("Outputs", [])}
    missing = [name for name in OUTPUT_NAMES if name not in outputs]
    if missing:
        raise StackError(f"stack {stack_name} lacks outputs: {', '.join(missing)}")
    return outputs


def physical_ids(cloudformation: CloudFormationClient, stack_name: str) -> dict[str, str]:
    """Logical id -> what the stack created (a queue's URL, a bucket's name, ...)."""
    paginator = cloudformation.get_paginator("list_stack_resources")
    return {
        resource["LogicalResourceId"]: resource["PhysicalResourceId"]
        for page in paginator.paginate(StackName=stack_name)
        for resource in page["StackResourceSummaries"]
        if resource.get("PhysicalResourceId")
    }
