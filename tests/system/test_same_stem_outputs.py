"""Recordings that share a stem (``lecture.mp3``, ``lecture.wav``, ``Lecture.MP3``: three
different lectures) through the whole local pipeline to the on-prem folder: uploaded at the
same time, and one after the other. Each must come home as its own transcript, holding its
own recording's words, under names that differ on a case-insensitive folder too."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from support.audio_factory import speech_mp3, speech_wav
from support.waiting import wait_until
from system.reliability.invariant import Upload
from system.reliability.scenario import Scenario, scenario

from cloudformation.emulated import ONPREM
from local_mode.cli import build_parser, run_local
from onprem.poll import Poller, PollOptions, PollOutcome
from pipeline_core.jobs import JobField
from pipeline_core.keys import folded_name

pytestmark = pytest.mark.slow

# Each recording says something the others do not; tiny.en hears these words reliably.
SPOKEN = {
    "lecture.mp3": ("The quick brown fox jumps over the lazy dog.", "fox"),
    "lecture.wav": ("Seven purple elephants sing in the rain.", "elephant"),
    "Lecture.MP3": ("My grandmother bakes fresh bread every Sunday morning.", "grandmother"),
}


def record(folder: Path, name: str) -> Path:
    text, _ = SPOKEN[name]
    path = folder / name
    return speech_wav(path, text) if name.endswith(".wav") else speech_mp3(path, text)


def transcripts_at_home(out: Path) -> dict[str, str]:
    """Every plain transcript the poller wrote (not the timed ones): file name -> text."""
    return {
        path.name: path.read_text(encoding="utf-8").lower()
        for path in out.glob("*.txt")
        if not path.name.endswith(".timed.txt")
    }


def assert_each_holds_its_own_words(texts: dict[str, str], owners: dict[str, str]) -> None:
    """``owners``: the transcript file name each recording's Result named."""
    assert sorted(texts) == sorted(owners.values())
    assert len({folded_name(name) for name in texts}) == len(SPOKEN)  # apart on Windows too
    for recording, file_name in owners.items():
        text = texts[file_name]
        for other, (_, word) in SPOKEN.items():
            if other == recording:
                assert word in text, (recording, file_name, text)
            else:
                assert word not in text, (recording, file_name, text)


def test_same_stem_recordings_uploaded_together_come_home_apart(tmp_path: Path) -> None:
    audio = tmp_path / "in"
    for name in SPOKEN:
        record(audio, name)
    args = build_parser().parse_args(
        [str(audio), "--work-dir", str(tmp_path / "run"), "--model", "tiny.en",
         "--language", "english", "--idle-seconds", "3", "--timeout", "300"]
    )  # fmt: skip

    result = run_local(args, Console(file=io.StringIO(), width=200))

    assert result.exit_code == 0, [(s.name, s.stage, s.error) for s in result.statuses]
    by_name = {status.name: status for status in result.statuses}
    assert set(by_name) == set(SPOKEN)
    owners = {}
    for name, status in by_name.items():
        [text_file] = [Path(p) for p in status.outputs if not p.endswith(".timed.txt")]
        assert text_file.parent == result.output_dir
        owners[name] = text_file.name
    assert_each_holds_its_own_words(transcripts_at_home(result.output_dir), owners)
    assert result.iam_findings == []


def wait_until_told(run: Scenario, upload: Upload) -> None:
    """Until the upload's outcome is on the Results Queue (left there for the poller)."""

    def told() -> bool:
        row = run.record(upload)
        return row is not None and JobField.RESULT_SENT_AT in row.attributes

    wait_until(told, 180, f"{upload.key}'s Result")


def test_same_stem_recordings_uploaded_one_after_the_other(tmp_path: Path) -> None:
    audio, out = tmp_path / "in", tmp_path / "home"
    with scenario(tmp_path / "run") as run:
        for name in SPOKEN:  # lecture.mp3 first: it keeps the original design's name
            wait_until_told(run, run.upload(name, record(audio, name)))

        onprem = run.deployment.identities.components[ONPREM].session()
        options = PollOptions(
            queue_url=run.deployment.stack.results_queue_url,
            output_dir=out,
            wait_seconds=0,
            once=True,
        )
        report = Poller(onprem.client("s3"), onprem.client("sqs"), options).run()
        assert report.outcomes == {PollOutcome.WRITTEN: len(SPOKEN)}

        assert_each_holds_its_own_words(
            transcripts_at_home(out),
            {
                "lecture.mp3": "lecture.txt",
                "lecture.wav": "lecture (wav).txt",
                "Lecture.MP3": "Lecture (MP3).txt",
            },
        )
        run.wait_scaled_in()
        run.check(results_fetched_by_poller=True)
