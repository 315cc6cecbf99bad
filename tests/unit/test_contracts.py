from __future__ import annotations

import json

import boto3
import pytest

from pipeline_core.contracts import (
    SCHEMA_VERSION,
    AudioJob,
    ContractError,
    LineCounts,
    LlmJob,
    Result,
    notification_attributes,
    send_to_queue,
    utc_timestamp,
)

DESIGN_AUDIO = '{"s3_key": "recording-001.mp3", "language": "hebrew", "details": "Bava Kamma 2a"}'
DESIGN_LLM = (
    '{"timed_key": "transcriptions/recording-001.timed.txt", "details": "Bava Kamma 2a", '
    '"language": "hebrew"}'
)
DESIGN_RESULT = (
    '{"source_file": "audio-input/recording-001.mp3", '
    '"output_file": "s3://my-bucket/final-output/recording-001.txt", "status": "success", '
    '"timestamp": "2025-01-04T10:06:00Z"}'
)


@pytest.mark.parametrize(
    ("model", "example"), [(AudioJob, DESIGN_AUDIO), (LlmJob, DESIGN_LLM), (Result, DESIGN_RESULT)]
)
def test_the_original_designs_examples_round_trip_exactly(
    model: type[AudioJob | LlmJob | Result], example: str
) -> None:
    assert model.from_json(example).to_json() == example


def test_audio_job_key_resolves_with_and_without_prefix() -> None:
    bare = AudioJob.from_json(DESIGN_AUDIO)
    prefixed = AudioJob(s3_key="audio-input/recording-001.mp3", language="he")
    assert bare.object_key == prefixed.object_key == "audio-input/recording-001.mp3"
    assert bare.language_code == prefixed.language_code == "he"


def test_hebrew_details_survive_unescaped() -> None:
    job = AudioJob(s3_key="שיעור 1.mp3", language="Hebrew", details="בבא קמא ב.")
    text = job.to_json()
    assert "בבא קמא ב." in text
    assert AudioJob.from_json(text.encode()) == job


def test_optional_fields_and_unknown_fields() -> None:
    body = json.dumps(
        {"s3_key": "a.mp3", "language": "en", "job_id": "j1", "etag": "e", "future_field": 1}
    )
    job = AudioJob.from_json(body)
    assert job.job_id == "j1"
    assert "future_field" not in job.to_dict()


def test_the_glossary_is_optional_and_only_a_name() -> None:
    assert AudioJob.from_json(DESIGN_AUDIO).glossary is None  # older messages still parse
    job = AudioJob(s3_key="a.mp3", language="he", glossary="talmud")
    assert AudioJob.from_json(job.to_json()).glossary == "talmud"
    llm = LlmJob.from_json(DESIGN_LLM[:-1] + ', "glossary": "none"}')
    assert llm.glossary == "none"
    with pytest.raises(ContractError) as caught:
        AudioJob.from_json('{"s3_key": "a.mp3", "language": "en", "glossary": "../x"}')
    assert caught.value.field == "glossary"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "<body>"),
        ("[1, 2]", "<body>"),
        ('{"language": "hebrew"}', "s3_key"),
        ('{"s3_key": "a.mp3"}', "language"),
        ('{"s3_key": "a.mp3", "language": "klingon"}', "language"),
        ('{"s3_key": "../etc/passwd", "language": "en"}', "s3_key"),
        ('{"s3_key": "", "language": "en"}', "s3_key"),
        ('{"s3_key": "a.mp3", "language": "en", "details": 5}', "details"),
        ('{"s3_key": "a\\u0000.mp3", "language": "en"}', "s3_key"),
    ],
)
def test_malformed_audio_jobs_name_the_field(body: str, field: str) -> None:
    with pytest.raises(ContractError) as caught:
        AudioJob.from_json(body)
    assert caught.value.field == field
    assert caught.value.message_type == "audio job"
    assert field in str(caught.value)


def test_unknown_language_error_lists_accepted_values() -> None:
    with pytest.raises(ContractError, match="hebrew \\(he\\)"):
        AudioJob.from_json('{"s3_key": "a.mp3", "language": "klingon"}')


def test_oversized_body_is_refused_before_parsing() -> None:
    with pytest.raises(ContractError, match="larger than"):
        AudioJob.from_json("x" * (256 * 1024 + 1))


@pytest.mark.parametrize(
    ("timed_key", "ok"),
    [
        ("transcriptions/a.timed.txt", True),
        ("transcriptions/sub dir/שיעור.timed.txt", True),
        ("final-output/a.timed.txt", False),
        ("transcriptions/a.txt", False),
        ("transcriptions/../a.timed.txt", False),
    ],
)
def test_llm_job_timed_key(timed_key: str, ok: bool) -> None:
    body = json.dumps({"timed_key": timed_key, "language": "he"})
    if ok:
        assert LlmJob.from_json(body).timed_key == timed_key
    else:
        with pytest.raises(ContractError) as caught:
            LlmJob.from_json(body)
        assert caught.value.field == "timed_key"


def test_result_rules() -> None:
    failed = Result.failure("x.mp3", "the file is not audio")
    assert failed.source_file == "audio-input/x.mp3"
    assert failed.timestamp.endswith("Z")
    assert Result.from_json(failed.to_json()) == failed
    superseded = Result.failure("x.mp3", "superseded: uploaded again", superseded=True)
    assert (superseded.status, superseded.output_file) == ("superseded", None)
    assert Result.from_json(superseded.to_json()) == superseded
    bad = [
        ({"status": "failed"}, "error"),
        ({"status": "superseded"}, "error"),
        ({"status": "success"}, "output_file"),
        ({"status": "done", "output_file": "s3://b/k"}, "status"),
        ({"status": "success", "output_file": "/tmp/k"}, "output_file"),
        (
            {"status": "success", "output_file": "s3://b/k", "timestamp": "2025-01-04 10:06"},
            "timestamp",
        ),
        (
            {"status": "success", "output_file": "s3://b/k", "timestamp": "2025-13-04T10:06:00Z"},
            "timestamp",
        ),
    ]
    for fields, field in bad:
        data = {"source_file": "audio-input/a.mp3", "timestamp": "2025-01-04T10:06:00Z", **fields}
        with pytest.raises(ContractError) as caught:
            Result.from_dict(data)
        assert caught.value.field == field, fields


def test_utc_timestamp_format() -> None:
    stamp = utc_timestamp()
    assert len(stamp) == 20
    assert stamp.endswith("Z")


def test_result_success_builder() -> None:
    done = Result.success(
        "lectures/a.mp3",
        "s3://b/final-output/lectures/a.txt",
        timed_output_file="s3://b/final-output/lectures/a.timed.txt",
        job_id="j1",
    )
    assert done.source_file == "audio-input/lectures/a.mp3"
    assert (done.status, done.job_id, done.error) == ("success", "j1", None)
    assert done.timed_output_file == "s3://b/final-output/lectures/a.timed.txt"
    assert done.schema_version == SCHEMA_VERSION
    assert done.timestamp.endswith("Z")
    assert Result.from_json(done.to_json()) == done
    uncorrected = Result.success("a.mp3", "s3://b/k", status="success_uncorrected")
    assert uncorrected.status == "success_uncorrected"
    assert "timed_output_file" not in uncorrected.to_dict()
    for status, output, field in [
        ("failed", "s3://b/k", "status"),
        ("superseded", "s3://b/k", "status"),
        ("success", "/tmp/k", "output_file"),
    ]:
        with pytest.raises(ContractError) as caught:
            Result.success("a.mp3", output, status=status)  # type: ignore[arg-type]
        assert caught.value.field == field


def test_result_line_counts_are_optional_and_never_negative() -> None:
    counted = Result.success("a.mp3", "s3://b/k", line_counts=LineCounts(3, 1, 7))
    assert (counted.lines_corrected, counted.lines_refused, counted.lines_left) == (3, 1, 7)
    assert Result.from_json(counted.to_json()) == counted
    older = Result.from_json(DESIGN_RESULT)  # a message from before the counts
    assert (older.lines_corrected, older.lines_refused, older.lines_left) == (None, None, None)
    assert "lines_corrected" not in Result.success("a.mp3", "s3://b/k").to_dict()
    data = {**json.loads(DESIGN_RESULT), "lines_refused": -1}
    with pytest.raises(ContractError) as caught:
        Result.from_dict(data)
    assert caught.value.field == "lines_refused"


def test_send_to_queue_sends_the_message_as_its_json(aws: None) -> None:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="results")["QueueUrl"]
    result = Result.failure("a.mp3", "שגיאה: the file is not audio", job_id="j1")
    message_id = send_to_queue(sqs, url, result)
    [message] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert message["MessageId"] == message_id
    assert message["Body"] == result.to_json()
    assert Result.from_json(message["Body"]) == result


@pytest.mark.parametrize(
    ("language", "expected"),
    [("Hebrew", "he"), ("iw", "he"), ("en", "en"), ("klingon", None), ("", None), (None, None)],
)
def test_notification_attributes_carry_the_language_code_or_leave_it_out(
    language: str | None, expected: str | None
) -> None:
    result = Result.failure("audio-input/a/b.mp3", "silent")
    attributes = notification_attributes(result, language)
    assert attributes.pop("status") == {"DataType": "String", "StringValue": "failed"}
    assert attributes.pop("source_file") == {
        "DataType": "String",
        "StringValue": "audio-input/a/b.mp3",
    }
    # SNS refuses an empty attribute value: an unknown language is left out, not blank.
    assert attributes == (
        {} if expected is None else {"language": {"DataType": "String", "StringValue": expected}}
    )
