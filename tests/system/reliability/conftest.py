"""Fixtures of the reliability suite: a speech clip, and the recorder behind the report.

Each test calls ``report(...)`` once its invariant check passed; the entries (fault, what
happened, outcome, figures, the test's duration) are merged by test id into
``build/reliability/results.json`` (or ``$RELIABILITY_RESULTS``), from which
``scripts/reliability_report.py`` writes ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from support.audio_factory import speech_mp3
from support.repo_paths import REPO_ROOT

FOX = "The quick brown fox jumps over the lazy dog."
RESULTS_ENV = "RELIABILITY_RESULTS"


def results_path() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or REPO_ROOT / "build" / "reliability" / "results.json")


class Report(Protocol):
    def __call__(
        self,
        *,
        fault: str,
        happened: str,
        outcome: str,
        figures: dict[str, Any],
        case: str = "",
    ) -> None: ...


@pytest.fixture(scope="session")
def fox_mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_mp3(tmp_path_factory.mktemp("audio") / "fox.mp3", FOX)


@pytest.fixture(scope="session")
def _report_entries() -> Iterator[dict[str, dict[str, Any]]]:
    entries: dict[str, dict[str, Any]] = {}
    yield entries
    if not entries:
        return
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    merged: dict[str, dict[str, Any]] = {}
    if path.exists():
        try:
            merged = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            merged = {}
    merged.update(entries)
    path.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@pytest.fixture
def report(request: pytest.FixtureRequest, _report_entries: dict[str, dict[str, Any]]) -> Report:
    started = time.monotonic()

    def record(
        *, fault: str, happened: str, outcome: str, figures: dict[str, Any], case: str = ""
    ) -> None:
        _report_entries[request.node.nodeid + (f"::{case}" if case else "")] = {
            "file": Path(str(request.node.path)).name,
            "fault": fault,
            "happened": happened,
            "outcome": outcome,
            "figures": figures,
            "seconds": round(time.monotonic() - started, 1),
        }

    return record
