"""The Dispatcher Lambda, invoked through chalice.test.Client against moto."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from urllib.parse import quote_plus

import boto3
import pytest
import stage_config
from chalice.app import S3Event
from chalice.test import Client
from support.chalice_deploy import Deployment, deploy, s3_event
from support.s3_answers import deny_reads_below

from bench.world import count_calls
from chalicelib import aws
from chalicelib.aws import calling_as
from chalicelib.dispatch.capacity import ensure_gpu_capacity
from chalicelib.dispatch.s3_events import created_objects
from cloudformation.emulated import REGION
from pipeline_core.contracts import AudioJob
from pipeline_core.errors import MissingPermissionError
from pipeline_core.jobs import JobField, JobState, job_id_for
from pipeline_core.jsonlog import configure_logging
from pipeline_core.metadata import encode_metadata

HEBREW_DETAILS = "בבא קמא דף ב עמוד א"


@pytest.fixture
def stack(tmp_path: Path, aws: None) -> Deployment:
    return deploy(tmp_path, as_roles=True)


def upload(stack: Deployment, key: str, body: bytes = b"ID3fake-mp3-bytes", **meta: str) -> None:
    metadata = encode_metadata(
        meta.get("language", "hebrew"),
        meta.get("details", HEBREW_DETAILS),
        glossary=meta.get("glossary"),
    )
    if "raw_metadata" in meta:
        metadata = json.loads(meta["raw_metadata"])
    stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=body, Metadata=metadata)


def audio_jobs(stack: Deployment) -> list[AudioJob]:
    return [AudioJob.from_json(b) for b in stack.drain(stack.outputs["AudioQueueUrl"])]


def test_upload_becomes_one_queued_job_and_starts_the_gpu(stack: Deployment) -> None:
    client = stack.client()
    key = "audio-input/lesson-001.mp3"
    upload(stack, key)
    assert stack.desired_capacity() == 0

    client.lambda_.invoke("dispatcher", s3_event(client, stack, key))

    [job] = audio_jobs(stack)
    etag = stack.s3.head_object(Bucket=stack.bucket, Key=key)["ETag"].strip('"')
    assert job.object_key == key
    assert (job.language, job.details) == ("hebrew", HEBREW_DETAILS)
    assert job.job_id == job_id_for(stack.bucket, key, etag)
    assert (job.bucket, job.etag, job.version_id, job.schema_version) == (
        stack.bucket, etag, None, 1,
    )  # fmt: skip
    record = stack.job(job.job_id)
    assert record.state is JobState.QUEUED
    assert record.details == HEBREW_DETAILS
    assert JobField.ENQUEUED_AT in record.attributes
    assert stack.desired_capacity() == 1
    assert stack.results() == []


@pytest.mark.parametrize("copies", [2, 5])
def test_duplicate_events_make_one_job_and_one_message(stack: Deployment, copies: int) -> None:
    client = stack.client()
    key = "audio-input/dup.mp3"
    upload(stack, key)
    event = s3_event(client, stack, key)
    for _ in range(copies):
        client.lambda_.invoke("dispatcher", event)
    assert len(audio_jobs(stack)) == 1
    assert len(list(stack.table().scan())) == 1
    assert stack.desired_capacity() == 1


def test_each_version_of_a_versioned_object_is_its_own_job(tmp_path: Path, aws: None) -> None:
    stack = deploy(tmp_path, versioned=True)
    client = stack.client()
    key = "audio-input/re-recorded.mp3"
    versions = []
    for body in (b"ID3first", b"ID3second"):
        upload(stack, key, body)
        event = s3_event(client, stack, key)
        versions.append(event["Records"][0]["s3"]["object"]["versionId"])
        client.lambda_.invoke("dispatcher", event)
        client.lambda_.invoke("dispatcher", event)
    jobs = audio_jobs(stack)
    assert sorted(job.version_id or "" for job in jobs) == sorted(versions)
    assert len({job.job_id for job in jobs}) == 2


KEYS = [
    "audio-input/שיעור בבא קמא.mp3",
    "audio-input/a+b c.mp3",
    "audio-input/100% sure.mp3",
    "audio-input/תיקייה/x y+z%2B (1).MP3",
]


@pytest.mark.parametrize("key", KEYS)
def test_keys_are_decoded_from_the_event(stack: Deployment, key: str) -> None:
    client = stack.client()
    upload(stack, key)
    event = s3_event(client, stack, key)
    assert event["Records"][0]["s3"]["object"]["key"] == quote_plus(key, safe="/")
    # Chalice's S3Event decodes the first record's key; the Dispatcher decodes every record
    # itself (raw events); both must give the object's real key.
    assert S3Event(event, None).key == key
    assert [obj.key for obj in created_objects(event)] == [key]

    client.lambda_.invoke("dispatcher", event)

    [job] = audio_jobs(stack)
    assert job.object_key == key
    assert stack.results() == []


def rejected(stack: Deployment, key: str) -> str:
    """The failure reason of the one refused upload; nothing reached the Audio Queue."""
    [result] = stack.results()
    assert result.status == "failed"
    assert result.source_file == key
    assert result.job_id is not None
    record = stack.job(result.job_id)
    assert record.state is JobState.FAILED
    assert record.error == result.error
    assert audio_jobs(stack) == []
    assert stack.desired_capacity() == 0
    assert result.error is not None
    return result.error


def test_zero_byte_upload_is_failed(stack: Deployment) -> None:
    client = stack.client()
    key = "audio-input/empty.mp3"
    upload(stack, key, b"")
    client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    assert "empty" in rejected(stack, key)


def test_unsupported_extension_is_failed(stack: Deployment) -> None:
    client = stack.client()
    key = "audio-input/notes.txt"
    upload(stack, key, b"not audio")
    client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    reason = rejected(stack, key)
    assert "'.txt'" in reason
    assert ".mp3" in reason


def test_unknown_language_is_failed(stack: Deployment) -> None:
    client = stack.client()
    key = "audio-input/alien.mp3"
    upload(stack, key, language="klingon")
    client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    assert "unknown language 'klingon'" in rejected(stack, key)


def test_metadata_that_does_not_decode_is_failed(stack: Deployment) -> None:
    client = stack.client()
    key = "audio-input/garbled.mp3"
    raw = {"meta-encoding": "percent-utf8", "language": "hebrew", "details": "%FF%FE"}
    upload(stack, key, raw_metadata=json.dumps(raw))
    client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    assert "metadata cannot be read" in rejected(stack, key)


def test_missing_language_is_failed_without_a_default(stack: Deployment) -> None:
    client = stack.client()
    key = "audio-input/no-language.mp3"
    upload(stack, key, raw_metadata="{}")
    client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    assert "DEFAULT_LANGUAGE" in rejected(stack, key)


def test_missing_language_takes_the_configured_default(stack: Deployment) -> None:
    client = stack.client(stage_config.StageOptions(default_language="hebrew"))
    key = "audio-input/no-language.mp3"
    upload(stack, key, raw_metadata="{}")
    client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    [job] = audio_jobs(stack)
    assert (job.language, job.details) == ("hebrew", "")


def test_the_glossary_is_the_recordings_choice_else_the_details_else_the_default(
    stack: Deployment,
) -> None:
    client = stack.client(stage_config.StageOptions(default_glossary="talmud"))
    key = "audio-input/typo.mp3"
    upload(stack, key, glossary="talmus")
    client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    assert "'glossary' metadata: unknown glossary 'talmus'" in rejected(stack, key)

    chosen = {
        "audio-input/named.mp3": {"glossary": "none"},  # wins over details that mention one
        "audio-input/by-details.mp3": {},  # HEBREW_DETAILS names a tractate
        "audio-input/by-default.mp3": {"details": "staff meeting"},
    }
    for key, meta in chosen.items():
        upload(stack, key, b"ID3fake-mp3-bytes", **meta)
        client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    jobs = {job.object_key: job for job in audio_jobs(stack)}
    assert {key: job.glossary for key, job in jobs.items()} == {
        "audio-input/named.mp3": "none",
        "audio-input/by-details.mp3": "talmud",
        "audio-input/by-default.mp3": "talmud",
    }
    job_id = jobs["audio-input/named.mp3"].job_id
    assert job_id is not None
    assert stack.job(job_id).attributes[JobField.GLOSSARY] == "none"  # for a re-send


def test_the_speakers_request_reaches_the_job_and_its_row_and_a_bad_one_is_refused(
    stack: Deployment,
) -> None:
    client = stack.client()
    key = "audio-input/panel.mp3"
    upload(stack, key, raw_metadata=json.dumps(encode_metadata("english", "", "Auto")))
    client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    [job] = audio_jobs(stack)
    assert job.speakers == "auto"
    assert job.job_id is not None
    assert stack.job(job.job_id).attributes[JobField.SPEAKERS] == "auto"

    bad = "audio-input/crowd.mp3"
    upload(stack, bad, raw_metadata=json.dumps(encode_metadata("english", "", "a crowd")))
    client.lambda_.invoke("dispatcher", s3_event(client, stack, bad))
    [result] = [r for r in stack.results() if r.source_file == bad]
    assert result.error is not None
    assert "speakers must be" in result.error


def test_object_deleted_before_the_event_is_failed(stack: Deployment) -> None:
    client = stack.client()
    key = "audio-input/gone.mp3"
    client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    assert "deleted" in rejected(stack, key)


def test_a_denied_head_is_a_configuration_error_not_a_refused_upload(stack: Deployment) -> None:
    """Without s3:ListBucket S3 answers the HEAD of a deleted upload with 403 (stubbed into
    the function's client: moto answers 404). That is not "deleted": the invocation fails
    naming the grant (Lambda retries it, the Errors alarm fires), and nothing blames the
    upload."""
    stack.as_roles = False  # the 403 is stubbed into a client of the test's own credentials
    key = "audio-input/denied.mp3"
    upload(stack, key)
    client = stack.client()
    event = s3_event(client, stack, key)
    denied = deny_reads_below(aws.s3(), "audio-input/")
    with pytest.raises(MissingPermissionError, match="the Dispatcher's role needs s3:GetObject"):
        client.lambda_.invoke("dispatcher", event)
    assert denied == [key]
    assert list(stack.table().scan()) == []  # neither refused nor queued: the retry decides
    assert stack.results() == []
    assert audio_jobs(stack) == []


def test_unsafe_key_is_failed_in_the_job_table(stack: Deployment) -> None:
    client = stack.client()
    key = "audio-input/../escape.mp3"
    event = s3_event(client, stack, key, eTag="abc", size=10)
    client.lambda_.invoke("dispatcher", event)
    [record] = stack.table().scan()
    assert record.state is JobState.FAILED
    assert record.error is not None
    assert "unsafe object key" in record.error
    assert audio_jobs(stack) == []
    # The Result contract cannot carry an unsafe key: the job table holds the refusal.
    assert stack.results() == []


def test_a_key_that_does_not_url_decode_is_failed_in_the_job_table(stack: Deployment) -> None:
    client = stack.client()
    event = client.events.generate_s3_event(stack.bucket, "audio-input/%FF%FE.mp3")
    client.lambda_.invoke("dispatcher", event)
    [record] = stack.table().scan()
    assert record.state is JobState.FAILED
    assert record.error is not None
    assert "not URL-encoded UTF-8" in record.error
    assert audio_jobs(stack) == []


def test_a_refused_upload_is_refused_once(stack: Deployment) -> None:
    client = stack.client()
    key = "audio-input/empty.mp3"
    upload(stack, key, b"")
    event = s3_event(client, stack, key)
    for _ in range(3):
        client.lambda_.invoke("dispatcher", event)
    assert "empty" in rejected(stack, key)


# A send to a queue that does not exist: under the role (as in AWS) a refusal comes first.
def test_a_crash_between_put_and_send_is_repaired_by_the_retry(stack: Deployment) -> None:
    stack.as_roles = False
    key = "audio-input/crash.mp3"
    upload(stack, key)
    # The first attempt dies at the send (its queue is missing); its claim on the job lasts
    # ENQUEUE_LEASE_SECONDS (60 s: the Dispatcher's timeout).
    missing_queue = stack.outputs["AudioQueueUrl"] + "-missing"
    crashing = stack.client(dispatcher_env={"AUDIO_QUEUE_URL": missing_queue})
    event = s3_event(crashing, stack, key)
    with pytest.raises(Exception, match=r"NonExistentQueue|does not exist"):
        crashing.lambda_.invoke("dispatcher", event)
    [record] = stack.table().scan()
    assert record.state is JobState.QUEUED
    assert JobField.ENQUEUED_AT not in record.attributes

    # A redelivery within the lease might race a first attempt still running: it waits.
    retry = stack.client()
    retry.lambda_.invoke("dispatcher", event)
    assert audio_jobs(stack) == []

    # Lambda retries a failed S3 invocation a minute or more later, when the lease has
    # lapsed (the clock is moved on here by lapsing the lease in the table).
    stack.table().update_fields(record.job_id, {JobField.ENQUEUE_LEASE_UNTIL: 0})
    retry.lambda_.invoke("dispatcher", event)
    retry.lambda_.invoke("dispatcher", event)
    [job] = audio_jobs(stack)
    assert job.job_id == record.job_id
    assert job.output_name == "crash"  # the name reserved by the attempt that crashed
    assert JobField.ENQUEUED_AT in stack.job(record.job_id).attributes
    assert stack.desired_capacity() == 1


def test_a_crash_before_the_failure_result_is_repaired_by_the_retry(stack: Deployment) -> None:
    stack.as_roles = False  # as above
    key = "audio-input/empty.mp3"
    upload(stack, key, b"")
    missing_queue = stack.outputs["ResultsQueueUrl"] + "-missing"
    crashing = stack.client(
        dispatcher_env={"RESULTS_QUEUE_URL": missing_queue, "ENQUEUE_LEASE_SECONDS": "0"}
    )
    event = s3_event(crashing, stack, key)
    with pytest.raises(Exception, match=r"NonExistentQueue|does not exist"):
        crashing.lambda_.invoke("dispatcher", event)
    assert stack.results() == []
    retry = stack.client()
    retry.lambda_.invoke("dispatcher", event)
    retry.lambda_.invoke("dispatcher", event)
    assert "empty" in rejected(stack, key)


def test_capacity_is_never_lowered_and_respects_max_size(stack: Deployment) -> None:
    name = stack.outputs["GpuAsgName"]
    assert ensure_gpu_capacity(stack.autoscaling, name) is True
    assert ensure_gpu_capacity(stack.autoscaling, name) is False
    assert stack.desired_capacity() == 1
    stack.autoscaling.update_auto_scaling_group(
        AutoScalingGroupName=name, MinSize=0, MaxSize=0, DesiredCapacity=0
    )
    assert ensure_gpu_capacity(stack.autoscaling, name) is False
    assert stack.desired_capacity() == 0


def test_every_log_line_names_the_object(stack: Deployment) -> None:
    stream = io.StringIO()
    configure_logging("INFO", service="dispatcher", stream=stream)
    client = stack.client()
    key = "audio-input/שיעור.mp3"
    upload(stack, key)
    client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    ours = [line for line in lines if line["logger"].startswith("chalicelib")]
    assert ours
    assert all(line["s3_key"] == key and line.get("job_id") for line in ours)


def dispatched_names(stack: Deployment, client: Client, keys: list[str]) -> dict[str, str]:
    """Upload and dispatch each key in turn; the output name each Audio Queue message carries."""
    for key in keys:
        upload(stack, key, key.encode())  # different bytes: different recordings
        client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    names = {job.object_key: job.output_name for job in audio_jobs(stack)}
    assert all(name is not None for name in names.values())
    return {key: str(name) for key, name in names.items()}


def test_same_stem_recordings_get_distinct_output_names(stack: Deployment) -> None:
    client = stack.client()
    names = dispatched_names(
        stack,
        client,
        ["audio-input/lecture.mp3", "audio-input/lecture.wav", "audio-input/Lecture.MP3",
         "audio-input/LECTURE.mp3", "audio-input/other/lecture.mp3"],
    )  # fmt: skip
    assert names == {
        "audio-input/lecture.mp3": "lecture",  # the original design's name, where it is free
        "audio-input/lecture.wav": "lecture (wav)",
        "audio-input/Lecture.MP3": "Lecture (MP3)",
        "audio-input/LECTURE.mp3": "LECTURE (mp3 2)",  # "lecture (mp3)" folded is taken
        "audio-input/other/lecture.mp3": "other/lecture",  # another folder: no clash
    }
    for key, name in names.items():
        [record] = [r for r in stack.table().scan() if r.s3_key == key]
        assert record.attributes[JobField.OUTPUT_NAME] == name
    assert len(list(stack.table().scan())) == len(names)  # reservations are not jobs


def test_a_source_gets_its_own_name_back(stack: Deployment) -> None:
    client = stack.client()
    first = dispatched_names(stack, client, ["audio-input/talk.mp3", "audio-input/talk.wav"])
    assert first["audio-input/talk.wav"] == "talk (wav)"
    # A re-upload of talk.wav (new content: a new job) and a duplicate event of it.
    upload(stack, "audio-input/talk.wav", b"the second take")
    event = s3_event(client, stack, "audio-input/talk.wav")
    client.lambda_.invoke("dispatcher", event)
    client.lambda_.invoke("dispatcher", event)
    [again] = audio_jobs(stack)
    assert again.output_name == "talk (wav)"
    assert len({r.job_id for r in stack.table().scan() if r.s3_key.endswith("talk.wav")}) == 2


def test_a_refused_upload_names_its_failure_report_by_its_own_name(stack: Deployment) -> None:
    client = stack.client()
    names = dispatched_names(stack, client, ["audio-input/exam.mp3"])
    assert names == {"audio-input/exam.mp3": "exam"}
    upload(stack, "audio-input/Exam.mp3", b"")  # empty: refused, but named
    upload(stack, "audio-input/exam.txt", b"notes")  # not audio: never the plain name
    for key in ("audio-input/Exam.mp3", "audio-input/exam.txt"):
        client.lambda_.invoke("dispatcher", s3_event(client, stack, key))
    failures = {result.source_file: result for result in stack.results()}
    assert failures["audio-input/Exam.mp3"].output_name == "Exam (mp3)"
    assert failures["audio-input/exam.txt"].output_name == "exam (txt)"
    assert failures["audio-input/Exam.mp3"].status == "failed"


def test_an_upload_costs_the_dispatcher_six_calls(tmp_path: Path, aws: None) -> None:
    """One upload's calls, each explained in docs/design.md ("The Dispatcher's and the LLM
    Caller's AWS calls per file"), counted as botocore makes them."""
    stack = deploy(tmp_path)
    client = stack.client()
    first, second = "audio-input/first.mp3", "audio-input/second.mp3"
    upload(stack, first)
    upload(stack, second)
    session = boto3.Session(region_name=REGION)
    calls = count_calls(session)
    with calling_as(session):
        client.lambda_.invoke("dispatcher", s3_event(client, stack, first))
        raised = Counter(calls)
        client.lambda_.invoke("dispatcher", s3_event(client, stack, second))
    each = {
        "s3.HeadObject": 1,  # size, metadata
        "dynamodb.PutItem": 2,  # the output name's reservation, the job's row
        "sqs.SendMessage": 1,  # the AudioJob
        "dynamodb.UpdateItem": 1,  # enqueued_at, after the send
        "auto-scaling.DescribeAutoScalingGroups": 1,  # a worker coming?
    }
    assert raised == Counter({**each, "auto-scaling.SetDesiredCapacity": 1})  # 0 -> 1
    assert calls - raised == Counter(each)  # the group has its worker already
    assert len(audio_jobs(stack)) == 2
