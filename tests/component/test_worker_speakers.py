"""The speaker step in the worker, on real weights (tiny.en and Resemblyzer's encoder): a
two-voice recording comes out labelled in every format, one voice is one speaker, and a
recording that does not ask is not touched (the diarizer is not even loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import webvtt
from support.worker_harness import Pipeline

from bench.diarization import CASES, build_recording
from bench.paths import default_eval_dir
from gpu_worker.daemon import EXIT_OK
from gpu_worker.speakers.diarizer import DiarizerCache, load_diarizer
from pipeline_core.keys import TranscriptKeys, transcript_keys
from pipeline_core.speakers import TIMED_TAG
from pipeline_core.transcript_document import TranscriptDocument

pytestmark = pytest.mark.slow

TWO_VOICES = next(case for case in CASES if case.name == "2 speakers (en)")


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JFK and the LJ Speech reader taking turns: real voices from ../shared/eval."""
    eval_dir = default_eval_dir()
    if eval_dir is None:
        pytest.skip("needs the evaluation clips (../shared/eval) for two real voices")
    return build_recording(TWO_VOICES, eval_dir, tmp_path_factory.mktemp("dialogue")).path


def _transcribe(pipeline: Pipeline, path: Path, name: str, **job: str | None) -> TranscriptKeys:
    key = pipeline.upload(name, path)
    job_id = pipeline.dispatch(key, **job)  # type: ignore[arg-type]
    return transcript_keys(pipeline.job(job_id).output_name or "")


def test_a_two_voice_recording_is_labelled_in_every_format(
    pipeline: Pipeline, dialogue: Path
) -> None:
    keys = _transcribe(pipeline, dialogue, "panel.wav", speakers="auto")
    assert pipeline.worker().run() == EXIT_OK

    document = TranscriptDocument.from_json(pipeline.text(keys.json))
    speakers = [segment.speaker for segment in document.segments]
    assert speakers[0] == "Speaker 1"
    assert set(speakers) == {"Speaker 1", "Speaker 2"}
    assert all(w.speaker == s.speaker for s in document.segments for w in s.words)
    assert document.diarize_seconds is not None
    timed = pipeline.text(keys.timed).splitlines()
    assert [TIMED_TAG.search(line)["speaker"] for line in timed] == speakers  # type: ignore[index]
    voices = [caption.voice for caption in webvtt.from_string(pipeline.text(keys.vtt)).captions]
    assert set(voices) == {"Speaker 1", "Speaker 2"}
    assert pipeline.text(keys.srt).split("\n")[2].startswith("Speaker 1: ")


def test_one_voice_is_one_speaker(pipeline: Pipeline, fox_mp3: Path) -> None:
    keys = _transcribe(pipeline, fox_mp3, "fox.mp3", speakers="auto")
    assert pipeline.worker().run() == EXIT_OK
    document = TranscriptDocument.from_json(pipeline.text(keys.json))
    assert {segment.speaker for segment in document.segments} == {"Speaker 1"}


def test_a_recording_that_does_not_ask_gets_the_same_outputs_with_the_step_present_or_absent(
    pipeline: Pipeline, dialogue: Path
) -> None:
    present = DiarizerCache("resemblyzer", "cpu")
    absent = DiarizerCache("no.such.module:diarizer", "cpu")  # loading it would fail the job
    outputs = []
    for name, diarizers in (("present.wav", present), ("absent.wav", absent)):
        keys = _transcribe(pipeline, dialogue, name)
        worker = pipeline.worker()
        worker.diarizers = diarizers
        assert worker.run() == EXIT_OK
        document = json.loads(pipeline.text(keys.json))
        outputs.append(
            (
                document["segments"],
                pipeline.text(keys.timed),
                pipeline.text(keys.srt),
                pipeline.text(keys.vtt),
            )
        )
        assert "diarize_seconds" not in document
    assert outputs[0] == outputs[1]
    assert "speaker" not in json.dumps(outputs[0][0])
    assert not present.loaded
    assert not absent.loaded
    with pytest.raises(ModuleNotFoundError):
        load_diarizer(absent.name, "cpu")


def test_the_deployment_default_asks_for_recordings_that_say_nothing(
    pipeline: Pipeline, dialogue: Path
) -> None:
    asked = _transcribe(pipeline, dialogue, "default.wav")
    declined = _transcribe(pipeline, dialogue, "declined.wav", speakers="off")
    assert pipeline.worker(default_speakers="2").run() == EXIT_OK
    labelled = TranscriptDocument.from_json(pipeline.text(asked.json))
    assert {s.speaker for s in labelled.segments} == {"Speaker 1", "Speaker 2"}
    unlabelled = TranscriptDocument.from_json(pipeline.text(declined.json))
    assert {s.speaker for s in unlabelled.segments} == {None}
