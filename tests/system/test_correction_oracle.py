"""The scripted oracle end to end: real speech from ../shared/eval, the multilingual Whisper
model's transcripts, the edits that reach the reference, proposed by the Converse-protocol
server and applied by the LLM Caller's own correction code: the reference must be reached."""

from __future__ import annotations

import pytest

from bench.accuracy import normalise, transcribe_clip
from bench.clips import eval_clips
from bench.correction_figures import cases_of, oracle, scripted_model
from bench.engines import FASTER_WHISPER, EngineSpec, load
from bench.paths import default_eval_dir

pytestmark = pytest.mark.slow  # loads Whisper base and decodes real speech

CLIPS = ("saspeech_Meat_0039", "saspeech_Hashlama117_0009", "jfk")


def test_the_oracle_reaches_the_reference_through_the_llm_callers_code() -> None:
    eval_dir = default_eval_dir()
    if eval_dir is None:
        pytest.skip("no evaluation set (../shared/eval)")
    clips = [clip for clip in eval_clips(eval_dir) if clip.clip_id in CLIPS]
    assert len(clips) == len(CLIPS)
    engine, _ = load(EngineSpec(FASTER_WHISPER, "base", "int8"), "cpu")
    cases = cases_of([transcribe_clip(engine, clip) for clip in clips])
    assert sum(len(c.edits) for c in cases) > 0, "base makes mistakes on these clips"
    with scripted_model() as model:
        figures = oracle(model, cases)
        calls = model.server.converse_calls()
    assert len(calls) == len(cases)  # one chunk each, answered through Converse tool use
    assert all(call.body["toolConfig"]["toolChoice"] for call in calls)
    assert figures["not_reached"] == []
    for language in figures["languages"]:
        assert language["edits_accepted"] == language["edits_proposed"], language
        assert language["wer_after"] == 0, language
    for item in cases:
        assert normalise(" ".join(item.targets.values())) == normalise(item.clip.reference)
