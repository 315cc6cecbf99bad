"""Bedrock misbehaving (the fake Converse server): throttling and 5xx bursts, answers that
drop, invent or are cut off. Retries first; then the uncorrected lines, never less."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.audio_factory import speech_mp3
from system.reliability.conftest import Report
from system.reliability.scenario import scenario

from pipeline_core import keys
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


CASES = [
    Case("throttle-burst", "Bedrock ThrottlingException x2", fail=2,
         outcome="botocore retried; corrected"),
    Case("5xx-burst", "Bedrock ServiceUnavailable (503) x2", "ServiceUnavailableException", 2,
         outcome="botocore retried; corrected"),
    Case("throttled-throughout", "Bedrock throttles every call", fail=10_000,
         status="success_uncorrected",
         outcome="3 receives x 3 tries; the last wrote the uncorrected lines (the user's "
                 "outcome) and the message went on to the LLM DLQ, alarming the operator"),
    Case("drops-a-line", "answer drops a line", misbehave="drop", status="success_uncorrected",
         outcome="answer refused by the line validator; original lines kept"),
    Case("invents-a-line", "answer invents a line", misbehave="invent",
         status="success_uncorrected",
         outcome="answer refused by the line validator; original lines kept"),
    Case("cut-off", "answer cut off at the output limit (stopReason max_tokens)",
         misbehave="truncate", status="success_uncorrected",
         outcome="cut-off answer refused; original lines kept, nothing truncated"),
]  # fmt: skip


def test_bedrock_faults_end_in_retries_or_the_uncorrected_lines(
    tmp_path: Path, report: Report
) -> None:
    clip = speech_mp3(tmp_path / "talk.mp3", SPEECH)
    with scenario(tmp_path / "run") as run:
        model = run.model
        entries: list[dict[str, Any]] = []
        for case in CASES:
            model.script.replacements = {"fox": "FOX"}  # what a correction visibly does
            model.script.fail_times = len(model.calls) + case.fail
            model.script.error = case.error
            model.script.misbehave = case.misbehave
            calls_before = len(model.calls)
            upload = run.upload(f"{case.name}.mp3", clip)
            took = run.wait_finished([upload])
            model.script.fail_times = 0
            model.script.misbehave = None

            [result] = [r for r in run.results if r.job_id == upload.job_id(run.bucket)]
            assert result.status == case.status, case.name
            stem = keys.stem(upload.key)
            final = run.s3.get_object(Bucket=run.bucket, Key=keys.final_keys(stem).text)
            text = final["Body"].read().decode()
            if case.status == "success":
                assert "FOX" in text, case.name
            else:
                assert "FOX" not in text, case.name  # the recognised lines, untouched
                assert "fox" in text.lower(), case.name
            record = run.record(upload)
            assert record is not None
            figures = {
                "bedrock_requests": len(model.calls) - calls_before,
                "lines": int(record.attributes.get(JobField.LINES_TOTAL, 0)),
                "lines_uncorrected": int(record.attributes.get(JobField.LINES_UNCORRECTED, 0)),
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
        # By design the persistently throttled message also reaches the LLM DLQ (its alarm
        # says Bedrock is failing); its job is final, so a redrive changes nothing.
        dlq = {"LlmDlq": 1}
        run.wait_queues_empty(timeout=60, expected=dlq)
        figures_all = run.check(expected_depths=dlq)  # one outcome each, all lines
        assert figures_all.files == len(CASES)
    for entry in entries:
        report(**entry)
