"""Bedrock misbehaving (the fake Converse server): throttling and 5xx bursts, answers in
prose instead of edits, edits for lines never sent, answers cut off. Retries first; then the
uncorrected lines, never less. A model that cannot be called (retired) is a
misconfiguration: the DLQ and a failed Result that says what to fix, never a quiet
``success_uncorrected``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.audio_factory import speech_mp3
from support.fake_llm import MODEL_ID_INVALID
from system.reliability.conftest import Report
from system.reliability.scenario import scenario

from cloudformation.emulated import REGION
from pipeline_core import keys
from pipeline_core.config import default_bedrock_model_id
from pipeline_core.jobs import JobField

pytestmark = pytest.mark.slow

SPEECH = (
    "Good morning everyone. Today the quick brown fox jumps over the lazy dog. "
    "Then the fox runs home to sleep."
)


@dataclass(frozen=True)
class Case:
    name: str
    fault: str
    error: str = "ThrottlingException"
    fail: int = 0  # requests that fail with `error`, from now on
    misbehave: str | None = None
    status: str = "success"  # the Result the user gets
    outcome: str = ""
    model_error: tuple[str, str] | None = None  # Bedrock refuses the model id itself


CASES = [
    Case("throttle-burst", "Bedrock ThrottlingException x2", fail=2,
         outcome="botocore retried; corrected"),
    Case("5xx-burst", "Bedrock ServiceUnavailable (503) x2", "ServiceUnavailableException", 2,
         outcome="botocore retried; corrected"),
    Case("throttled-throughout", "Bedrock throttles every call", fail=10_000,
         status="success_uncorrected",
         outcome="3 receives x 3 tries; the last wrote the uncorrected lines (the user's "
                 "outcome) and the message went on to the LLM DLQ, alarming the operator"),
    Case("answers-in-prose", "answer is prose, not the forced edits tool call",
         misbehave="prose", status="success_uncorrected",
         outcome="answer refused (no list of edits), asked once more, refused; original lines "
                 "kept"),
    Case("invents-a-line", "answer adds an edit for a line it was not sent", misbehave="invent",
         outcome="that edit refused alone; the true correction applied"),
    Case("cut-off", "answer cut off at the output limit (stopReason max_tokens)",
         misbehave="truncate", status="success_uncorrected",
         outcome="cut-off answer refused; original lines kept, nothing truncated"),
    Case("retired-model", "the model id is retired (ValidationException: model identifier "
         "is invalid)", model_error=MODEL_ID_INVALID, status="failed",
         outcome="a misconfiguration, not a refused chunk: 3 receives, the LLM DLQ (alarm), "
                 "and a failed Result naming the fix"),
]  # fmt: skip


def test_bedrock_faults_end_in_retries_the_uncorrected_lines_or_a_named_fix(
    tmp_path: Path, report: Report
) -> None:
    clip = speech_mp3(tmp_path / "talk.mp3", SPEECH)
    deployed_model = default_bedrock_model_id(REGION)  # no BEDROCK_MODEL_ID: the default
    with scenario(tmp_path / "run") as run:
        model = run.model
        entries: list[dict[str, Any]] = []
        for case in CASES:
            model.script.replacements = {"fox": "FOX"}  # what a correction visibly does
            model.script.fail_times = len(model.calls) + case.fail
            model.script.error = case.error
            model.script.misbehave = case.misbehave
            if case.model_error is not None:
                model.script.model_errors[deployed_model] = case.model_error
            calls_before = len(model.calls)
            upload = run.upload(f"{case.name}.mp3", clip)
            took = run.wait_finished([upload])
            model.script.fail_times = 0
            model.script.misbehave = None
            model.script.model_errors.pop(deployed_model, None)

            [result] = [r for r in run.results if r.job_id == upload.job_id(run.bucket)]
            assert result.status == case.status, case.name
            stem = keys.stem(upload.key)
            if case.status == "failed":
                assert result.error is not None
                assert "--bedrock-model-id" in result.error, result.error
                assert not run.s3.list_objects_v2(
                    Bucket=run.bucket, Prefix=keys.final_keys(stem).text
                ).get("Contents")
                text = ""
            else:
                final = run.s3.get_object(Bucket=run.bucket, Key=keys.final_keys(stem).text)
                text = final["Body"].read().decode()
            if case.status == "success":
                assert "FOX" in text, case.name
            elif case.status == "success_uncorrected":
                assert "FOX" not in text, case.name  # the recognised lines, untouched
                assert "fox" in text.lower(), case.name
            record = run.record(upload)
            assert record is not None
            figures = {
                "bedrock_requests": len(model.calls) - calls_before,
                "lines": int(record.attributes.get(JobField.LINES_TOTAL, 0)),
                "lines_uncorrected": int(record.attributes.get(JobField.LINES_UNCORRECTED, 0)),
                "lines_refused": int(record.attributes.get(JobField.LINES_REFUSED, 0)),
                "receives": int(record.attributes.get(JobField.RECEIVE_COUNT, 1)),
                "finish_s": round(took, 1),
            }
            entries.append(
                {
                    "case": case.name,
                    "fault": case.fault,
                    "happened": f"Result {result.status}",
                    "outcome": case.outcome,
                    "figures": figures,
                }
            )
        run.wait_scaled_in()
        # By design the persistently throttled message and the retired model's also reach the
        # LLM DLQ (its alarm says Bedrock is failing); their jobs are final, so a redrive
        # changes nothing.
        dlq = {"LlmDlq": 2}
        run.wait_queues_empty(timeout=60, expected=dlq)
        figures_all = run.check(expected_depths=dlq)  # one outcome each, all lines
        assert figures_all.files == len(CASES)
    for entry in entries:
        report(**entry)
