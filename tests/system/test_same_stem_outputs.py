"""Recordings that share a stem (``lecture.mp3``, ``lecture.wav``, ``Lecture.MP3``: three
different lectures) through the whole local pipeline to the on-prem folder: uploaded at the
same time, and one after the other. Each must come home as its own transcript, in every
format asked for, each file holding its own recording's words, under names that differ on a
case-insensitive folder too."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import srt as srt_parser
import webvtt
from rich.console import Console
from support.audio_factory import speech_mp3, speech_wav
from support.waiting import wait_until
from system.reliability.invariant import Upload
from system.reliability.scenario import Scenario, scenario

from cloudformation.emulated import ONPREM
from local_mode.cli import build_parser, run_local
from onprem.poll import Poller, PollOptions, PollOutcome
from pipeline_core.jobs import JobField
from pipeline_core.keys import (
    FINAL_PREFIX,
    OutputFormat,
    final_keys,
    folded_name,
    local_relative_path,
)

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


def home_path(out: Path, output_name: str, output: OutputFormat) -> Path:
    """Where the poller writes a format of the recording named ``output_name``."""
    return out / local_relative_path(final_keys(output_name).of(output), FINAL_PREFIX)


def words_in(path: Path, output: OutputFormat) -> str:
    """The words a format holds, as its own parser reads them (lower case)."""
    text = path.read_text(encoding="utf-8")
    if output is OutputFormat.SRT:
        text = " ".join(cue.content for cue in srt_parser.parse(text))
    elif output is OutputFormat.VTT:
        text = " ".join(caption.text for caption in webvtt.from_string(text).captions)
    return text.lower()


def assert_each_holds_its_own_words(
    out: Path, output_names: dict[str, str], formats: tuple[OutputFormat, ...]
) -> None:
    """``output_names``: the name each recording's Result gave its files. Every format of
    each recording is at home and holds that recording's words, and no other's."""
    names = list(output_names.values())
    assert len({folded_name(name) for name in names}) == len(SPOKEN)  # apart on Windows too
    plain = {p.name for p in out.glob("*.txt") if not p.name.endswith(".timed.txt")}
    assert plain == {f"{name}.txt" for name in names}
    for recording, name in output_names.items():
        for output in formats:
            text = words_in(home_path(out, name, output), output)
            for other, (_, word) in SPOKEN.items():
                if other == recording:
                    assert word in text, (recording, output, name, text)
                else:
                    assert word not in text, (recording, output, name, text)


def test_same_stem_recordings_uploaded_together_come_home_apart(tmp_path: Path) -> None:
    audio = tmp_path / "in"
    for name in SPOKEN:
        record(audio, name)
    formats = (OutputFormat.TXT, OutputFormat.SRT, OutputFormat.VTT, OutputFormat.HTML)
    args = build_parser().parse_args(
        [str(audio), "--work-dir", str(tmp_path / "run"), "--model", "tiny.en",
         "--language", "english", "--idle-seconds", "3", "--timeout", "300",
         "--formats", ",".join(output.value for output in formats)]
    )  # fmt: skip

    result = run_local(args, Console(file=io.StringIO(), width=200))

    assert result.exit_code == 0, [(s.name, s.stage, s.error) for s in result.statuses]
    by_name = {status.name: status for status in result.statuses}
    assert set(by_name) == set(SPOKEN)
    output_names = {}
    for name, status in by_name.items():
        assert status.output_name is not None
        output_names[name] = status.output_name
        assert sorted(status.outputs) == sorted(
            str(home_path(result.output_dir, status.output_name, output)) for output in formats
        )
    assert_each_holds_its_own_words(result.output_dir, output_names, formats)
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
        formats = (OutputFormat.TXT, OutputFormat.SRT, OutputFormat.JSON)
        options = PollOptions(
            queue_url=run.deployment.stack.results_queue_url,
            output_dir=out,
            wait_seconds=0,
            once=True,
            formats=formats,
        )
        report = Poller(onprem.client("s3"), onprem.client("sqs"), options).run()
        assert report.outcomes == {PollOutcome.WRITTEN: len(SPOKEN)}

        assert_each_holds_its_own_words(
            out,
            {
                "lecture.mp3": "lecture",
                "lecture.wav": "lecture (wav)",
                "Lecture.MP3": "Lecture (MP3)",
            },
            formats,
        )
        run.wait_scaled_in()
        run.check(results_fetched_by_poller=True)
