"""Helpers for scripts/deploy.sh and scripts/teardown.sh.

``python -m cloudformation.deploy_tools onprem-toml --outputs-json FILE --region REGION``
prints the on-prem client's settings (``~/.config/transcribe-onprem.toml``) from the stack's
outputs; ``empty-bucket --bucket NAME`` deletes every object version of the (versioned)
pipeline bucket before it is removed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

# On-prem setting (onprem/settings.py's TOML keys) -> stack output.
ONPREM_SETTINGS: Final = {
    "bucket": "BucketName",
    "results_queue_url": "ResultsQueueUrl",
    "job_table": "JobTableName",
    "audio_queue_url": "AudioQueueUrl",
    "llm_queue_url": "LlmQueueUrl",
    "audio_dlq_url": "AudioDlqUrl",
    "llm_dlq_url": "LlmDlqUrl",
    "results_dlq_url": "ResultsDlqUrl",
    "dispatcher_dlq_url": "DispatcherDlqUrl",
}


def read_outputs(path: Path) -> dict[str, str]:
    """Stack outputs from ``describe-stacks --query 'Stacks[0].Outputs'`` or a plain mapping."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        return {str(item["OutputKey"]): str(item["OutputValue"]) for item in data}
    if isinstance(data, dict):
        return {str(key): str(value) for key, value in data.items()}
    raise ValueError(f"{path}: expected a list of stack outputs or a JSON object")


def onprem_toml(outputs: Mapping[str, str], region: str) -> str:
    """The on-prem client's settings as TOML (strings quoted as TOML basic strings)."""
    missing = [output for output in ONPREM_SETTINGS.values() if output not in outputs]
    if missing:
        raise ValueError(f"stack outputs lack {', '.join(missing)}")
    lines = [
        "# On-prem settings for the transcription pipeline (printed by scripts/deploy.sh).",
        "# Save as ~/.config/transcribe-onprem.toml, and attach the stack's OnPremPolicyArn",
        f"# ({outputs.get('OnPremPolicyArn', '<OnPremPolicyArn>')}) to the on-prem IAM user.",
        f"region = {json.dumps(region)}",
    ]
    lines += [f"{key} = {json.dumps(outputs[output])}" for key, output in ONPREM_SETTINGS.items()]
    return "\n".join(lines) + "\n"


def placeholder_outputs() -> dict[str, str]:
    """What a dry run shows in place of outputs that do not exist yet."""
    return {output: f"<{output}>" for output in (*ONPREM_SETTINGS.values(), "OnPremPolicyArn")}


def empty_bucket(s3: S3Client, bucket: str) -> int:
    """Delete every object version and delete marker in ``bucket``; returns how many."""
    deleted = 0
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        entries = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        objects: list[ObjectIdentifierTypeDef] = [
            {"Key": entry["Key"], "VersionId": entry["VersionId"]}
            for entry in entries
            if "Key" in entry and "VersionId" in entry
        ]
        # list_object_versions pages hold at most 1000 entries, delete_objects' limit.
        if objects:
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise RuntimeError(
                    f"could not delete {len(errors)} object(s) from {bucket}, e.g. "
                    f"{first.get('Key')}: {first.get('Message')}"
                )
            deleted += len(objects)
    return deleted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudformation.deploy_tools")
    commands = parser.add_subparsers(dest="command", required=True)
    toml = commands.add_parser("onprem-toml", help="print the on-prem settings as TOML")
    toml.add_argument("--outputs-json", type=Path, help="stack outputs (describe-stacks JSON)")
    toml.add_argument("--placeholders", action="store_true", help="dry run: no outputs yet")
    toml.add_argument("--region", required=True)
    empty = commands.add_parser("empty-bucket", help="delete every version in a bucket")
    empty.add_argument("--bucket", required=True)
    empty.add_argument("--region", required=True)
    args = parser.parse_args(argv)

    if args.command == "onprem-toml":
        if args.placeholders:
            outputs = placeholder_outputs()
        elif args.outputs_json is not None:
            outputs = read_outputs(args.outputs_json)
        else:
            parser.error("onprem-toml needs --outputs-json FILE or --placeholders")
        sys.stdout.write(onprem_toml(outputs, args.region))
        return 0

    import boto3

    count = empty_bucket(boto3.client("s3", region_name=args.region), args.bucket)
    print(f"deleted {count} object version(s) and delete marker(s) from {args.bucket}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
