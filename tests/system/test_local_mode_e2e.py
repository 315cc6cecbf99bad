"""The README's first command, end to end: the local mode on real speech with a tiny model.

Everything runs as in ``./run-local.sh``: moto server built from the CloudFormation template,
the Chalice handlers behind their event sources, the worker daemon as its own process started
by the emulated Auto Scaling Group, the on-prem uploader and poller at both ends.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import unquote

import docx
import pytest
import srt
import webvtt
from rich.console import Console
from support.audio_factory import corrupt_mp3, speech_mp3
from support.reader_page import page_parts

from local_mode.cli import build_parser, run_local
from pipeline_core.subtitles import CueLimits
from pipeline_core.timed_text import TIMED_LINE
from pipeline_core.transcript_document import TranscriptDocument


@pytest.mark.slow
def test_local_mode_transcribes_and_scales_to_zero(tmp_path: Path) -> None:
    audio = tmp_path / "in"
    speech_mp3(audio / "lectures" / "fox talk.mp3", "The quick brown fox jumps over the lazy dog.")
    (audio / "lectures" / "fox talk.mp3.json").write_text(
        json.dumps({"language": "english", "details": "A pangram"})
    )
    corrupt_mp3(audio / "broken.mp3")
    (audio / "broken.mp3.json").write_text(json.dumps({"language": "en"}))
    args = build_parser().parse_args(
        [str(audio), "--work-dir", str(tmp_path / "run"), "--model", "tiny.en",
         "--idle-seconds", "3", "--timeout", "300", "--formats", "txt,timed,srt,vtt,json,docx,html"]
    )  # fmt: skip
    console = Console(file=io.StringIO(), width=200)

    result = run_local(args, console)

    by_name = {status.name: status for status in result.statuses}
    assert set(by_name) == {"lectures/fox talk.mp3", "broken.mp3"}
    fox = by_name["lectures/fox talk.mp3"]
    assert fox.stage == "done"
    assert fox.result_status == "success_uncorrected"  # no corrector in the default local run
    assert fox.audio_seconds
    assert fox.transcribe_seconds
    text = (result.output_dir / "lectures" / "fox talk.txt").read_text(encoding="utf-8")
    assert "quick brown fox" in text.lower()
    timed = (result.output_dir / "lectures" / "fox talk.timed.txt").read_text(encoding="utf-8")
    assert all(TIMED_LINE.match(line) for line in timed.splitlines())
    # Every format asked for came home, and reads back with its format's parser.
    home = result.output_dir / "lectures"
    document = TranscriptDocument.from_json((home / "fox talk.json").read_bytes())
    assert document.source_key == "audio-input/lectures/fox talk.mp3"
    assert document.corrector == "none"
    assert "quick brown fox" in " ".join(s.text for s in document.segments).lower()
    assert all(s.words for s in document.segments)  # the worker's word timings, kept
    subtitles = list(srt.parse((home / "fox talk.srt").read_text(encoding="utf-8")))
    assert " ".join(s.content.replace("\n", " ") for s in subtitles) == " ".join(
        s.text for s in document.segments
    )
    assert all((s.end - s.start).total_seconds() <= CueLimits().seconds for s in subtitles)
    captions = webvtt.read(str(home / "fox talk.vtt")).captions
    assert [c.text for c in captions] == [s.content for s in subtitles]
    word = docx.Document(str(home / "fox talk.docx"))
    assert "quick brown fox" in "\n".join(p.text for p in word.paragraphs).lower()
    # The reader page beside it links the recording the uploader sent, from its own folder.
    page = page_parts(result.output_dir / "lectures" / "fox talk.html")
    assert page.audio_src is not None
    linked = result.output_dir / "lectures" / unquote(page.audio_src)
    assert linked.resolve() == (audio / "lectures" / "fox talk.mp3").resolve()
    assert len(page.starts) == len(timed.splitlines())

    broken = by_name["broken.mp3"]
    assert broken.stage == "failed"
    assert broken.error
    report = json.loads((result.output_dir / "failed" / "broken.json").read_text(encoding="utf-8"))
    assert report["status"] == "failed"

    history = [event.what for event in result.scaling_events]
    assert "ASG desired capacity 0 -> 1" in history
    assert "ASG desired capacity 1 -> 0" in history
    assert history.index("ASG desired capacity 0 -> 1") < history.index(
        "ASG desired capacity 1 -> 0"
    )
    assert result.desired_capacity == 0
    assert result.queue_depths
    assert all(depth == 0 for depth in result.queue_depths.values()), result.queue_depths
    assert result.llm_max_concurrency <= 3
    # Every component ran under its own IAM identity (enforced by the emulator), and every
    # call it made is one its policy grants.
    assert result.iam_findings == []
    assert result.exit_code == 1  # one file failed, and a cron wrapper should know
