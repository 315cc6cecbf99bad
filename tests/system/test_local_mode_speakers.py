"""Speaker labels through the whole local pipeline (``./run-local.sh``): a folder holding a
two-voice recording whose sidecar asks ``"speakers": "auto"`` and a one-voice recording that
does not ask; both come home, the first labelled in txt, srt, vtt and json, the second as
it always was."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import pytest
import srt
import webvtt
from rich.console import Console
from support.audio_factory import speech_mp3

from bench.diarization import CASES, build_recording
from bench.paths import default_eval_dir
from local_mode.cli import build_parser, run_local
from pipeline_core.transcript_document import TranscriptDocument

pytestmark = pytest.mark.slow

LABELS = {"Speaker 1", "Speaker 2"}


def test_a_folder_asking_for_speakers_brings_home_labelled_transcripts(tmp_path: Path) -> None:
    eval_dir = default_eval_dir()
    if eval_dir is None:
        pytest.skip("needs the evaluation clips (../shared/eval) for two real voices")
    audio = tmp_path / "in"
    audio.mkdir()
    two_voices = next(case for case in CASES if case.name == "2 speakers (en)")
    recording = build_recording(two_voices, eval_dir, tmp_path)
    recording.path.rename(audio / "panel.wav")
    (audio / "panel.wav.json").write_text(json.dumps({"language": "english", "speakers": "auto"}))
    speech_mp3(audio / "fox.mp3", "The quick brown fox jumps over the lazy dog.")
    args = build_parser().parse_args(
        [str(audio), "--work-dir", str(tmp_path / "run"), "--model", "tiny.en",
         "--language", "english", "--idle-seconds", "3", "--timeout", "400",
         "--formats", "txt,srt,vtt,json"]
    )  # fmt: skip

    result = run_local(args, Console(file=io.StringIO(), width=200))

    assert result.exit_code == 0, [(s.name, s.stage, s.error) for s in result.statuses]
    home = result.output_dir
    document = TranscriptDocument.from_json((home / "panel.json").read_bytes())
    speakers = [segment.speaker for segment in document.segments]
    assert speakers[0] == "Speaker 1"
    assert set(speakers) == LABELS
    assert all(word.speaker == s.speaker for s in document.segments for word in s.words)

    paragraphs = (home / "panel.txt").read_text(encoding="utf-8").split("\n\n")
    changes = 1 + sum(a != b for a, b in itertools.pairwise(speakers))
    assert len(paragraphs) == changes
    assert all(p.startswith(("Speaker 1: ", "Speaker 2: ")) for p in paragraphs)

    cues = list(srt.parse((home / "panel.srt").read_text(encoding="utf-8")))
    assert {cue.content.split(": ", 1)[0] for cue in cues} == LABELS
    captions = webvtt.read(str(home / "panel.vtt")).captions
    assert {caption.voice for caption in captions} == LABELS
    assert [c.text for c in captions] == [cue.content.split(": ", 1)[1] for cue in cues]

    fox = TranscriptDocument.from_json((home / "fox.json").read_bytes())
    assert {segment.speaker for segment in fox.segments} == {None}
    assert "Speaker" not in (home / "fox.txt").read_text(encoding="utf-8")
    assert result.iam_findings == []
