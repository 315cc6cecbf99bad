from __future__ import annotations

import boto3

from pipeline_core.jobs import JobState, JobTable, at_or_after, job_id_for


def make_table(name: str) -> JobTable:
    return JobTable(boto3.client("dynamodb"), name)


def test_job_id_is_per_object_version() -> None:
    assert job_id_for("b", "k", "v1") == job_id_for("b", "k", "v1")
    assert job_id_for("b", "k", "v1") != job_id_for("b", "k", "v2")


def test_create_is_idempotent(job_table_name: str) -> None:
    table = make_table(job_table_name)
    args = {
        "job_id": "j1", "bucket": "b", "s3_key": "audio-input/a.mp3", "version": "v1",
        "language": "he", "details": "בבא קמא",
    }  # fmt: skip
    assert table.create(**args) is True  # type: ignore[arg-type]
    assert table.create(**args) is False  # type: ignore[arg-type]
    record = table.get("j1")
    assert record is not None
    assert record.state is JobState.QUEUED
    assert record.details == "בבא קמא"
    assert record.attributes["expires_at"] > 0


def test_transitions_only_from_expected_states(job_table_name: str) -> None:
    table = make_table(job_table_name)
    table.create(
        job_id="j", bucket="b", s3_key="audio-input/a.mp3", version="v", language="en", details=""
    )
    assert table.transition("j", JobState.TRANSCRIBING, expected=[JobState.QUEUED])
    assert not table.transition("j", JobState.TRANSCRIBING, expected=[JobState.QUEUED])
    assert table.transition(
        "j", JobState.TRANSCRIBED, expected=[JobState.TRANSCRIBING], fields={"audio_seconds": 1.5}
    )
    record = table.get("j")
    assert record is not None
    assert record.state is JobState.TRANSCRIBED
    assert float(record.attributes["audio_seconds"]) == 1.5
    assert "transcribed_at" in record.attributes
    assert not table.transition("missing", JobState.TRANSCRIBING, expected=[JobState.QUEUED])


def test_fail_is_final(job_table_name: str) -> None:
    table = make_table(job_table_name)
    table.create(
        job_id="j", bucket="b", s3_key="audio-input/a.mp3", version="v", language="en", details=""
    )
    assert table.fail("j", "corrupt MP3")
    assert not table.fail("j", "again")
    record = table.get("j")
    assert record is not None
    assert record.state is JobState.FAILED
    assert record.error == "corrupt MP3"
    assert [r.job_id for r in table.scan([JobState.FAILED])] == ["j"]
    assert list(table.scan([JobState.QUEUED])) == []


def test_at_or_after() -> None:
    assert at_or_after(JobState.CORRECTING, JobState.TRANSCRIBED)
    assert not at_or_after(JobState.TRANSCRIBING, JobState.TRANSCRIBED)
    assert at_or_after(JobState.FAILED, JobState.TRANSCRIBED)


def test_none_fields_are_left_out_not_an_error(job_table_name: str) -> None:
    table = make_table(job_table_name)
    table.create(
        job_id="j", bucket="b", s3_key="audio-input/a.mp3", version="v", language="en", details=""
    )
    assert table.transition(
        "j", JobState.TRANSCRIBING, expected=[JobState.QUEUED], fields={"worker": None, "n": 1}
    )
    table.update_fields("j", {"progress_percent": 50.0, "eta": None})
    record = table.get("j")
    assert record is not None
    assert "worker" not in record.attributes
    assert "eta" not in record.attributes
    assert float(record.attributes["progress_percent"]) == 50.0
