"""docs/operations.md has an entry for every alarm of the template, and only for those.

An entry is a ``###`` heading under ``## Alarms`` that starts with the alarm's logical id in
backticks, and says what the alarm means and what to do, with at least one command."""

from __future__ import annotations

import re
from typing import Final

from support.repo_paths import REPO_ROOT

from cloudformation.stack import load_template

OPERATIONS: Final = REPO_ROOT / "docs" / "operations.md"
ENTRY_HEADING: Final = re.compile(r"^### `(?P<alarm>[A-Za-z0-9]+)`", re.MULTILINE)


def _alarms_section() -> str:
    text = OPERATIONS.read_text(encoding="utf-8")
    match = re.search(r"^## Alarms\n(?P<body>.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, "docs/operations.md has no '## Alarms' section"
    return match["body"]


def _entries() -> dict[str, str]:
    """Alarm logical id -> the text of its entry."""
    section = _alarms_section()
    headings = list(ENTRY_HEADING.finditer(section))
    entries: dict[str, str] = {}
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        end = following.start() if following else len(section)
        assert heading["alarm"] not in entries, f"{heading['alarm']} has two entries"
        entries[heading["alarm"]] = section[heading.end() : end]
    return entries


def test_every_alarm_of_the_template_has_an_entry_and_every_entry_an_alarm() -> None:
    alarms = {
        name
        for name, resource in load_template()["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }
    documented = set(_entries())
    assert sorted(alarms - documented) == [], "alarms of the template without an entry"
    assert sorted(documented - alarms) == [], "entries for alarms the template does not have"


def test_every_entry_says_what_it_means_and_what_to_do_with_a_command() -> None:
    for alarm, entry in _entries().items():
        assert "**Means:**" in entry, alarm
        assert "**Do:**" in entry, alarm
        assert re.search(r"\b(aws|onprem) [a-z]", entry), f"{alarm}: no command"


def test_the_readme_links_the_operations_guide() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/operations.md)" in readme
