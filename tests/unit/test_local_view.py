"""The local mode's live view: each file's worker, and each running worker's job."""

from __future__ import annotations

import pytest
from rich.console import Console

from local_mode.cli import build_parser
from local_mode.view import FileStatus, live_view


def _rendered(renderable: object) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_live_view_shows_each_worker_and_what_it_transcribes() -> None:
    files = [
        FileStatus("a.mp3", "transcribing", percent=40.0, worker="i-aaa"),
        FileStatus("b.mp3", "transcribing", worker="i-bbb"),
        FileStatus("c.mp3", "done", worker="i-aaa"),
        FileStatus("d.mp3", "queued"),
    ]
    text = _rendered(live_view({"i-aaa": 101, "i-bbb": 102, "i-ccc": 103}, files))
    lines = text.splitlines()
    assert "GPU workers (3)" in text
    (aaa,) = [line for line in lines if "i-aaa" in line and "101" in line]
    assert "a.mp3 40%" in aaa
    assert "c.mp3" not in aaa  # finished: no longer its job
    (bbb,) = [line for line in lines if "i-bbb" in line and "102" in line]
    assert "b.mp3" in bbb
    (ccc,) = [line for line in lines if "i-ccc" in line]
    assert "idle" in ccc
    (file_a,) = [line for line in lines if line.strip().startswith("│ a.mp3")]
    assert "i-aaa" in file_a


def test_without_workers_to_show_only_the_files_are_shown() -> None:
    text = _rendered(live_view({}, [FileStatus("a.mp3", "queued")]))
    assert "GPU workers" not in text
    assert "a.mp3" in text


def test_max_workers_is_a_positive_count() -> None:
    parser = build_parser()
    assert parser.parse_args(["--max-workers", "3"]).max_workers == 3
    assert parser.parse_args([]).max_workers == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-workers", "0"])
