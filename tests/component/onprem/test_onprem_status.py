"""``onprem status`` over a moto job table."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from support.onprem_helpers import BUCKET, REGION

from onprem.cli import main
from onprem.status import SinceError, parse_since
from pipeline_core.jobs import JobField, JobState, JobTable


def add_job(
    table: JobTable, job_id: str, key: str, created: str, steps: dict[JobState, str]
) -> None:
    """A job as the pipeline leaves it: created, moved through ``steps`` at given times."""
    table.create(job_id=job_id, bucket=BUCKET, s3_key=key, version="v1", language="he", details="")
    previous = JobState.QUEUED
    for state in steps:
        fields = {JobField.ERROR: "CUDA out of memory"} if state is JobState.FAILED else None
        assert table.transition(job_id, state, expected=[previous], fields=fields)
        previous = state
    # Pin the times: the table stamps "now", the test needs known durations.
    table.update_fields(
        job_id, {JobField.CREATED_AT: created, **{s.at_field: t for s, t in steps.items()}}
    )


@pytest.fixture
def jobs(job_table_name: str) -> JobTable:
    table = JobTable(boto3.client("dynamodb", region_name=REGION), job_table_name)
    add_job(
        table,
        "old-failed",
        "audio-input/old.mp3",
        "2024-12-30T10:00:00Z",
        {JobState.FAILED: "2024-12-30T10:00:05Z"},
    )
    add_job(
        table,
        "new-failed",
        "audio-input/שיעור [2].mp3",
        "2025-01-04T10:00:00Z",
        {
            JobState.TRANSCRIBING: "2025-01-04T10:02:00Z",
            JobState.FAILED: "2025-01-04T10:03:00Z",
        },
    )
    add_job(
        table,
        "done",
        "audio-input/done.mp3",
        "2025-01-05T10:00:00Z",
        {
            JobState.TRANSCRIBING: "2025-01-05T10:01:00Z",
            JobState.TRANSCRIBED: "2025-01-05T10:11:00Z",
            JobState.CORRECTING: "2025-01-05T10:11:30Z",
            JobState.SUCCEEDED: "2025-01-05T10:12:30Z",
        },
    )
    # What the LLM Caller records when the checks refused an edit (the line kept as recognised).
    table.update_fields(
        "done",
        {JobField.LINES_REFUSED: 1,
         JobField.REFUSED_EDITS: "line 7: the edit rewrites Aramaic (טעמא)"},
    )  # fmt: skip
    return table


def test_json_filtered_by_state_and_date(
    jobs: JobTable, job_table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["status", "--job-table", job_table_name, "--json"]
    assert main([*args, "--state", "failed", "--since", "2025-01-01"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["job_id"] for row in rows] == ["new-failed"]
    assert rows[0]["error"] == "CUDA out of memory"
    assert rows[0]["s3_key"] == "audio-input/שיעור [2].mp3"
    assert rows[0]["waiting_seconds"] == 120
    assert rows[0]["total_seconds"] == 180

    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["job_id"] for row in rows] == ["done", "new-failed", "old-failed"]
    done = rows[0]
    assert (done["transcribe_seconds"], done["correct_seconds"]) == (600, 60)
    assert done["total_seconds"] == 750
    assert done["error"] is None
    assert done["lines_refused"] == 1
    assert done["refused_edits"] == "line 7: the edit rewrites Aramaic (טעמא)"
    assert [row["lines_refused"] for row in rows[1:]] == [None, None]

    assert main([*args, "--state", "succeeded", "--state", "queued"]) == 0
    assert [row["job_id"] for row in json.loads(capsys.readouterr().out)] == ["done"]


def test_table_output(
    jobs: JobTable, job_table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--job-table", job_table_name, "--state", "failed"]) == 0
    out = capsys.readouterr().out
    assert "שיעור [2].mp3" in out, "keys print as they are, not as rich markup"
    assert "CUDA out of memory" in out
    assert "done.mp3" not in out
    assert "2 job(s)" in out


def test_a_success_with_refused_edits_shows_the_count_and_why(
    jobs: JobTable, job_table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--job-table", job_table_name, "--state", "succeeded"]) == 0
    out = capsys.readouterr().out
    assert "refused" in out
    assert "the edit rewrites Aramaic" in out


def test_a_superseded_upload_shows_as_superseded_not_as_a_failure(
    jobs: JobTable, job_table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = "superseded: audio-input/old.mp3 was uploaded again (job j2) while ..."
    jobs.update_fields("old-failed", {JobField.ERROR: reason, JobField.RESULT_STATUS: "superseded"})
    args = ["status", "--job-table", job_table_name, "--state", "failed"]

    assert main([*args, "--json"]) == 0
    rows = {row["job_id"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["old-failed"]["result_status"] == "superseded"
    assert rows["new-failed"]["result_status"] is None
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("superseded") == 2  # the state column and the reason
    assert out.count("failed") == 1  # the other job only


def test_since_forms() -> None:
    now = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    assert parse_since("2025-01-01", now) == datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_since("2025-01-01T10:30", now) == datetime(2025, 1, 1, 10, 30, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2025, 1, 3, 12, 0, tzinfo=UTC)
    assert parse_since("12h", now) == datetime(2025, 1, 10, 0, 0, tzinfo=UTC)
    with pytest.raises(SinceError, match="yesterday"):
        parse_since("yesterday", now)


def test_bad_since_and_missing_table_exit_2(job_table_name: str) -> None:
    assert main(["status", "--job-table", job_table_name, "--since", "soon"]) == 2
    assert main(["status"]) == 2
