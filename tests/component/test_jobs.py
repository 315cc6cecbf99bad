from __future__ import annotations

import time

import boto3
import pytest

from pipeline_core.jobs import (
    ACTIVE_STATES,
    JobField,
    JobState,
    JobTable,
    Lease,
    Moved,
    at_or_after,
    job_id_for,
)


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


def test_a_move_answers_with_the_row_in_the_same_call(job_table_name: str) -> None:
    table = make_table(job_table_name)
    _queued(table)
    for attempt in (1, 2):  # moved: the row after the move, the counter added to
        moved = table.move(
            "j",
            JobState.TRANSCRIBING,
            expected=[JobState.QUEUED, JobState.TRANSCRIBING],
            fields={JobField.WORKER_ID: f"w{attempt}"},
            count=JobField.ATTEMPTS,
        )
        assert moved.moved
        assert moved.record is not None
        assert moved.record.state is JobState.TRANSCRIBING
        assert moved.record.attributes[JobField.ATTEMPTS] == attempt
        assert moved.record.attributes[JobField.WORKER_ID] == f"w{attempt}"
    table.fail("j", "broken")
    refused = table.move("j", JobState.TRANSCRIBING, expected=[JobState.QUEUED])
    assert not refused.moved  # refused: the row as it stands, unchanged
    assert refused.record is not None
    assert refused.record.state is JobState.FAILED
    assert refused.record.error == "broken"
    assert refused.record.attributes[JobField.ATTEMPTS] == 2
    missing = table.move("missing", JobState.TRANSCRIBING, expected=[JobState.QUEUED])
    assert missing == Moved(False, None)
    assert table.get("missing") is None


def _queued(table: JobTable, job_id: str = "j", lease: Lease | None = None) -> None:
    table.create(
        job_id=job_id, bucket="b", s3_key="audio-input/a.mp3", version="v", language="en",
        details="", lease=lease,
    )  # fmt: skip


def _lease(owner: str, seconds: int = 60) -> Lease:
    return Lease(JobField.CORRECTION_LEASE_UNTIL, owner, seconds)


def test_a_lease_is_held_by_one_owner_at_a_time(job_table_name: str) -> None:
    table = make_table(job_table_name)
    _queued(table)
    assert table.claim("j", _lease("a"), states=[JobState.QUEUED])
    assert not table.claim("j", _lease("b"), states=[JobState.QUEUED])
    assert not table.claim("j", _lease("a"), states=[JobState.QUEUED])  # not re-entrant
    record = table.get("j")
    assert record is not None
    assert record.attributes["correction_lease_until_owner"] == "a"
    assert record.attributes["correction_lease_until"] > time.time() * 1000 + 50_000
    assert record.state is JobState.QUEUED  # no state change asked for


def test_a_lapsed_lease_can_be_taken_over(job_table_name: str) -> None:
    table = make_table(job_table_name)
    _queued(table)
    assert table.claim("j", _lease("a", seconds=0), states=[JobState.QUEUED])
    time.sleep(0.01)
    assert table.claim("j", _lease("b"), states=[JobState.QUEUED])
    record = table.get("j")
    assert record is not None
    assert record.attributes["correction_lease_until_owner"] == "b"


def test_release_gives_back_only_ones_own_lease(job_table_name: str) -> None:
    table = make_table(job_table_name)
    _queued(table)
    assert table.claim("j", _lease("a"), states=[JobState.QUEUED])
    table.release("j", _lease("b"))  # not b's: nothing happens, no error
    assert not table.claim("j", _lease("b"), states=[JobState.QUEUED])
    table.release("j", _lease("a"))
    assert table.claim("j", _lease("b"), states=[JobState.QUEUED])
    table.release("missing", _lease("a"))  # no job: nothing to give back, no error


def test_a_claim_wants_the_job_in_one_of_the_states(job_table_name: str) -> None:
    table = make_table(job_table_name)
    _queued(table)
    assert not table.claim("missing", _lease("a"), states=[JobState.QUEUED])
    assert not table.claim("j", _lease("a"), states=[JobState.TRANSCRIBED])
    assert table.claim("j", _lease("a"), states=ACTIVE_STATES)
    with pytest.raises(ValueError, match="expected state"):
        table.claim("j", _lease("b"), states=[])


def test_a_claim_can_move_the_state_and_count_the_claims(job_table_name: str) -> None:
    table = make_table(job_table_name)
    _queued(table)
    table.transition("j", JobState.TRANSCRIBING, expected=[JobState.QUEUED])
    table.transition("j", JobState.TRANSCRIBED, expected=[JobState.TRANSCRIBING])
    for passes in (1, 2):
        assert table.claim(
            "j",
            _lease(f"pass {passes}"),
            states=ACTIVE_STATES,
            to=JobState.CORRECTING,
            count=JobField.CORRECTION_PASSES,
        )
        table.release("j", _lease(f"pass {passes}"))
        record = table.get("j")
        assert record is not None
        assert record.state is JobState.CORRECTING
        assert record.attributes[JobField.CORRECTION_PASSES] == passes
        assert JobState.CORRECTING.at_field in record.attributes
    table.transition("j", JobState.SUCCEEDED, expected=[JobState.CORRECTING])
    assert not table.claim("j", _lease("late"), states=ACTIVE_STATES, to=JobState.CORRECTING)


def test_a_claim_unless_the_step_is_done(job_table_name: str) -> None:
    table = make_table(job_table_name)
    enqueue = Lease(JobField.ENQUEUE_LEASE_UNTIL, "first delivery", 60)
    _queued(table, lease=enqueue)  # the creating delivery holds the lease from the start
    resend = Lease(JobField.ENQUEUE_LEASE_UNTIL, "second delivery", 60)
    assert not table.claim("j", resend, states=[JobState.QUEUED], unless_present="sent")
    table.release("j", enqueue)
    table.update_fields("j", {"sent": "yes"})
    assert not table.claim("j", resend, states=[JobState.QUEUED], unless_present="sent")
    assert table.claim("j", resend, states=[JobState.QUEUED], unless_present="other")
