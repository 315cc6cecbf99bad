"""The shipped examples stay in step with the code: the config loads, the commands parse."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from onprem.cli import build_parser
from onprem.settings import load_settings

EXAMPLES = Path(__file__).resolve().parents[3] / "onprem" / "examples"


def test_the_example_config_loads_with_every_setting_it_shows() -> None:
    settings = load_settings(EXAMPLES / "transcribe-onprem.toml", environ={})
    needed = ("bucket", "results_queue_url", "job_table", "audio_dlq_url", "results_dlq_url")
    assert all(getattr(settings, name) for name in needed)
    assert settings.input_dir == Path("/srv/lectures/incoming")
    assert settings.language == "hebrew"


def example_commands() -> list[list[str]]:
    commands = []
    for path in EXAMPLES.iterdir():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("#"):
                continue
            for match in re.finditer(r"(?:^|[\s=/])onprem ([^>|&\n]+)", line):
                commands.append(shlex.split(match.group(1)))
    return commands


def test_every_command_in_the_crontab_and_units_parses() -> None:
    commands = example_commands()
    assert {args[0] for args in commands} == {"upload", "poll", "status"}
    parser = build_parser()
    for args in commands:
        parser.parse_args(args)


def test_the_iam_policy_is_json() -> None:
    policy = json.loads((EXAMPLES / "iam-policy.json").read_text())
    actions: set[str] = set()
    for statement in policy["Statement"]:
        action = statement["Action"]
        actions.update([action] if isinstance(action, str) else action)
    assert {"s3:PutObject", "s3:AbortMultipartUpload", "sqs:DeleteMessage"} <= actions
