"""The daemon end to end in one process: moto for AWS, real MP3s, the real tiny.en model."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pytest
from faster_whisper import WhisperModel
from moto.core import set_initial_no_auth_action_count
from support.audio_factory import corrupt_mp3, empty_mp3, speech_mp3, text_as_mp3
from support.rounding import assert_derived
from support.s3_answers import conflict_once
from support.waiting import wait_until
from support.worker_fixtures import JsonLog
from support.worker_harness import MAX_RECEIVES, FakeImds, Pipeline

from cloudformation.call_ledger import denied, ungranted
from gpu_worker.daemon import EXIT_OK
from gpu_worker.lifecycle.stopping import StopController
from pipeline_core.contracts import AudioJob
from pipeline_core.glossary import glossary_named
from pipeline_core.jobs import JobField, JobState, job_id_for
from pipeline_core.keys import transcript_keys, transcript_keys_of_timed
from pipeline_core.ownership import Owner, json_version_of, owner_metadata
from pipeline_core.timed_text import TIMED_LINE, parse_timestamp

pytestmark = pytest.mark.slow


def parse_timed(text: str) -> list[tuple[float, float, str]]:
    rows = []
    for line in text.splitlines():
        match = TIMED_LINE.match(line)
        assert match, f"not a timed line: {line!r}"
        rows.append((parse_timestamp(match["start"]), parse_timestamp(match["end"]), match["text"]))
    return rows


def run_in_thread(worker_run: object) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker_run()), daemon=True)  # type: ignore[operator]
    thread.start()
    return thread, codes


def test_happy_path(pipeline: Pipeline, fox_mp3: Path, json_log: JsonLog) -> None:
    key = pipeline.upload("lectures/fox.mp3", fox_mp3)
    job_id = pipeline.dispatch(key, language="english", details="שיעור א׳, Bava Kamma 2a")

    assert pipeline.worker().run() == EXIT_OK

    keys = transcript_keys(pipeline.job(job_id).output_name or "")
    assert keys.timed == "transcriptions/lectures/fox.timed.txt"
    document = json.loads(pipeline.text(keys.json))
    rows = parse_timed(pipeline.text(keys.timed))
    assert "quick brown fox" in " ".join(text for _, _, text in rows).lower()
    duration = document["audio_seconds"]
    assert 2.0 < duration < 6.0
    starts = [start for start, _, _ in rows]
    assert starts == sorted(starts)
    assert all(0.0 <= start <= end <= duration + 0.001 for start, end, _ in rows)
    assert document["language"] == "en"
    assert document["model"].startswith("faster-whisper:")
    assert document["job_id"] == job_id
    assert document["audio_seconds"] == pytest.approx(duration, abs=0.01)
    assert_derived(
        (document["real_time_factor"], 4),
        lambda took, audio: took / audio,
        (document["transcribe_seconds"], 3),
        (document["audio_seconds"], 3),
    )
    assert any(
        w["text"].strip().lower().startswith("fox")
        for s in document["segments"]
        for w in s["words"]
    )
    assert pipeline.text(keys.srt).startswith("1\n00:00:00,")
    assert pipeline.text(keys.vtt).startswith("WEBVTT\n\n00:00:00.")

    [llm_job] = pipeline.llm_jobs()
    assert llm_job.timed_key == keys.timed
    assert llm_job.details == "שיעור א׳, Bava Kamma 2a"
    assert llm_job.language == "english"
    assert llm_job.job_id == job_id
    assert llm_job.source_key == key

    job = pipeline.job(job_id)
    assert job.state is JobState.TRANSCRIBED
    assert float(job.attributes[JobField.AUDIO_SECONDS]) == pytest.approx(duration, abs=0.01)
    assert float(job.attributes[JobField.TRANSCRIBE_SECONDS]) > 0
    assert float(job.attributes[JobField.REAL_TIME_FACTOR]) > 0
    assert job.attributes[JobField.ATTEMPTS] == 1
    assert job.attributes[JobField.TIMED_KEY] == keys.timed
    assert job.attributes[JobField.PROGRESS_PERCENT] == 100
    assert JobField.LLM_JOB_SENT_AT in job.attributes
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (0, 0)  # the message was deleted
    assert pipeline.results() == []

    job_lines = [line for line in json_log.lines() if line.get("job_id") == job_id]
    assert any("transcribing:" in line["message"] for line in job_lines)  # progress
    assert {line["s3_key"] for line in job_lines} == {key}
    claimed_at = next(
        i for i, line in enumerate(json_log.lines()) if line["message"] == "claimed the job"
    )
    after_claim = json_log.lines()[claimed_at:]
    handed = next(i for i, line in enumerate(after_claim) if "handed to the LLM" in line["message"])
    assert all(line.get("job_id") == job_id for line in after_claim[: handed + 1])


def test_the_jobs_glossary_reaches_whisper_as_hotwords_unless_turned_off(
    pipeline: Pipeline, fox_mp3: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str | None] = []
    transcribe = WhisperModel.transcribe

    def recording(model: WhisperModel, audio: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("hotwords"))
        return transcribe(model, audio, *args, **kwargs)

    monkeypatch.setattr(WhisperModel, "transcribe", recording)
    primed = pipeline.dispatch(
        pipeline.upload("primed.mp3", fox_mp3), language="english", glossary="talmud"
    )
    assert pipeline.worker(glossary_hotwords=True).run() == EXIT_OK
    talmud = glossary_named("talmud")
    assert talmud is not None
    assert asked == [talmud.hotwords("en")]  # the real tiny.en engine was given the terms
    assert "Abaye" in talmud.hotwords("en")
    [llm_job] = pipeline.llm_jobs()
    assert (llm_job.job_id, llm_job.glossary) == (primed, "talmud")  # on to the LLM Caller

    pipeline.dispatch(pipeline.upload("bare.mp3", fox_mp3), language="english", glossary="talmud")
    assert pipeline.worker(glossary_hotwords=False).run() == EXIT_OK
    assert asked[1:] == [None]


def test_the_worker_transcribes_with_only_its_instance_role(
    pipeline: Pipeline, fox_mp3: Path
) -> None:
    key = pipeline.upload("fox.mp3", fox_mp3)
    pipeline.dispatch(key)
    aws, ledger, policies = pipeline.instance_role()

    @set_initial_no_auth_action_count(0)
    def run_as_the_instance() -> int:
        return pipeline.worker(aws=aws, progress_log_seconds=30).run()

    assert run_as_the_instance() == EXIT_OK

    calls = ledger.records()
    assert denied(calls) == []
    assert ungranted(calls, policies) == []
    # One file's calls, each explained in docs/design.md ("The worker's AWS calls per file").
    actions = Counter(c.action for c in calls)
    assert actions["dynamodb:UpdateItem"] == 3  # claim, transcribed, handed off
    assert actions["dynamodb:GetItem"] == 0  # the claim's and the mark's answers carry the row
    # The download only: a first delivery writes its files where their keys are empty
    # (If-None-Match) instead of HEADing the transcript's name first.
    assert actions["s3:GetObject"] == 1
    assert actions["s3:PutObject"] == 4
    assert actions["sqs:SendMessage"] == actions["sqs:DeleteMessage"] == 1
    [llm_job] = pipeline.llm_jobs()
    assert llm_job.source_key == key


@pytest.mark.parametrize("versioning", ["Enabled", "Suspended"])
def test_duplicate_bare_messages_make_one_llm_job(
    pipeline: Pipeline,
    fox_mp3: Path,
    versioning: Literal["Enabled", "Suspended"],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The original design's message format (no job id, no job row) sent twice: one job, one
    LLM job, keyed on the object's version (on its ETag where the bucket keeps no versions).
    The duplicate's download, started beside its claim, is dropped with its folder."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    pipeline.s3.put_bucket_versioning(
        Bucket=pipeline.stack.bucket, VersioningConfiguration={"Status": versioning}
    )
    key = pipeline.upload("fox.mp3", fox_mp3)
    bare = json.dumps({"s3_key": "fox.mp3", "language": "english", "details": "twice"})
    pipeline.send_audio(bare)
    pipeline.send_audio(bare)

    assert pipeline.worker().run() == EXIT_OK

    [llm_job] = pipeline.llm_jobs()
    head = pipeline.s3.head_object(Bucket=pipeline.stack.bucket, Key=key)
    version = head["VersionId"] if versioning == "Enabled" else head["ETag"].strip('"')
    assert llm_job.job_id == job_id_for(pipeline.stack.bucket, key, version)
    job = pipeline.job(llm_job.job_id)
    assert job.state is JobState.TRANSCRIBED
    assert job.attributes[JobField.ATTEMPTS] == 1
    assert job.details == "twice"
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (0, 0)
    # The duplicate was deleted, not failed.
    assert pipeline.drain(pipeline.stack.audio_dlq_url) == []
    assert list(scratch.iterdir()) == []  # both deliveries' downloads are gone


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (corrupt_mp3, "could not be decoded as audio"),
        (empty_mp3, "empty (0 bytes)"),
        (text_as_mp3, "could not be decoded as audio"),
        (None, "does not exist"),
    ],
    ids=["corrupt", "zero-byte", "text-as-mp3", "missing-key"],
)
def test_bad_input_fails_the_job_once(
    pipeline: Pipeline, tmp_path: Path, make: object, reason: str
) -> None:
    if make is None:
        key = "audio-input/gone.mp3"
        job_id = "job-of-a-deleted-upload"
        pipeline.jobs().create(
            job_id=job_id, bucket=pipeline.stack.bucket, s3_key=key, version="v", language="en",
            details="",
        )  # fmt: skip
        pipeline.send_audio(AudioJob(s3_key=key, language="en", job_id=job_id).to_json())
    else:
        key = pipeline.upload("bad.mp3", make(tmp_path / "bad.mp3"))  # type: ignore[operator]
        job_id = pipeline.dispatch(key)

    assert pipeline.worker().run() == EXIT_OK

    [result] = pipeline.results()
    assert result.status == "failed"
    assert result.source_file == key
    assert result.job_id == job_id
    assert result.error is not None
    assert reason in result.error
    assert key in result.error
    job = pipeline.job(job_id)
    assert job.state is JobState.FAILED
    assert job.error == result.error
    assert pipeline.llm_jobs() == []
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (0, 0)  # deleted: no retry loop
    assert pipeline.drain(pipeline.stack.audio_dlq_url) == []


def test_a_language_the_model_cannot_do_fails_the_job_once(
    pipeline: Pipeline, fox_mp3: Path
) -> None:
    """tiny.en serves every language here; a Hebrew job must fail, not come out English."""
    key = pipeline.upload("shiur.mp3", fox_mp3)
    job_id = pipeline.dispatch(key, language="hebrew")

    assert pipeline.worker().run() == EXIT_OK

    [result] = pipeline.results()
    assert result.status == "failed"
    assert result.job_id == job_id
    assert result.error is not None
    assert "English-only" in result.error
    assert "'he'" in result.error
    assert key in result.error
    job = pipeline.job(job_id)
    assert job.state is JobState.FAILED
    assert job.error == result.error
    assert pipeline.llm_jobs() == []
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (0, 0)
    assert pipeline.drain(pipeline.stack.audio_dlq_url) == []


def test_malformed_message_goes_to_the_dlq_and_good_work_goes_on(
    pipeline: Pipeline, fox_mp3: Path, json_log: JsonLog
) -> None:
    garbage = "{this is not json"
    pipeline.send_audio(garbage)
    key = pipeline.upload("fox.mp3", fox_mp3)
    job_id = pipeline.dispatch(key)

    # The malformed message is hidden 1 s after each receive, so the good one is served
    # between its receives; the queue's redrive policy moves it after the third.
    worker = pipeline.worker(retry_delay_seconds=1, poll_wait_seconds=1)
    assert worker.run() == EXIT_OK

    assert pipeline.drain(pipeline.stack.audio_dlq_url) == [garbage]
    assert [job.job_id for job in pipeline.llm_jobs()] == [job_id]
    assert pipeline.job(job_id).state is JobState.TRANSCRIBED
    assert pipeline.results() == []  # nobody could be told
    lines = json_log.lines()
    malformed = [line for line in lines if line["message"].startswith("malformed")]
    assert [line["receive_count"] for line in malformed] == list(range(1, MAX_RECEIVES + 1))
    assert all(line["body"] == garbage for line in malformed)
    served = next(i for i, line in enumerate(lines) if line["message"] == "claimed the job")
    assert lines.index(malformed[0]) < served < lines.index(malformed[-1])


def test_malformed_message_naming_its_audio_is_failed_explicitly(pipeline: Pipeline) -> None:
    pipeline.send_audio('{"s3_key": "talk.mp3", "language": "klingon", "job_id": "j-k"}')

    assert pipeline.worker().run() == EXIT_OK

    [result] = pipeline.results()
    assert result.status == "failed"
    assert result.source_file == "audio-input/talk.mp3"
    assert result.job_id == "j-k"
    assert result.error is not None
    assert "language" in result.error
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (0, 0)
    assert pipeline.drain(pipeline.stack.audio_dlq_url) == []


def test_transient_failure_keeps_the_message_and_the_next_delivery_resumes(
    pipeline: Pipeline, fox_mp3: Path, json_log: JsonLog
) -> None:
    key = pipeline.upload("fox.mp3", fox_mp3)
    job_id = pipeline.dispatch(key)
    missing_queue = pipeline.stack.llm_queue_url + "-that-does-not-exist"
    broken = pipeline.worker(llm_queue_url=missing_queue, retry_delay_seconds=30)

    message = broken.queue.receive_one()
    assert message is not None
    broken.handle(message)  # the LLM Queue is unreachable: logged, not raised

    assert pipeline.depth(pipeline.stack.audio_queue_url) == (0, 1)  # kept, hidden for a retry
    assert pipeline.job(job_id).state is JobState.TRANSCRIBED
    assert JobField.LLM_JOB_SENT_AT not in pipeline.job(job_id).attributes
    timed = transcript_keys(pipeline.job(job_id).output_name or "").timed
    written_at = pipeline.s3.head_object(Bucket=pipeline.stack.bucket, Key=timed)["LastModified"]
    assert json_log.has("the message will be delivered again")

    broken.queue.set_visibility(message, 0)  # as if the retry delay had passed
    assert pipeline.worker().run() == EXIT_OK

    [llm_job] = pipeline.llm_jobs()
    assert llm_job.job_id == job_id
    assert JobField.LLM_JOB_SENT_AT in pipeline.job(job_id).attributes
    assert pipeline.job(job_id).attributes[JobField.ATTEMPTS] == 1  # not transcribed again
    rewritten_at = pipeline.s3.head_object(Bucket=pipeline.stack.bucket, Key=timed)["LastModified"]
    assert rewritten_at == written_at
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (0, 0)


# pause step -> what a SIGTERM there leaves: the log line, the job's state and attempts.
SIGTERM_RELEASES = {
    # On the engine: released, the claim kept (the attempt counts).
    "mid_transcription": ("released the in-flight message", JobState.TRANSCRIBING, 1),
    # Prefetched, waiting for the engine: released at once, the claim given back.
    "prefetched": ("released the prefetched message", JobState.QUEUED, 0),
}


@pytest.mark.parametrize("step", list(SIGTERM_RELEASES))
def test_heartbeat_keeps_a_long_job_hidden_and_sigterm_releases_it(
    pipeline: Pipeline, fox_mp3: Path, json_log: JsonLog, step: str
) -> None:
    released, state, attempts = SIGTERM_RELEASES[step]
    key = pipeline.upload("fox.mp3", fox_mp3)
    job_id = pipeline.dispatch(key)
    stop = StopController()
    worker = pipeline.worker(
        stop, visibility_timeout_seconds=2, heartbeat_seconds=0.5, pause_after_step=step
    )
    thread, codes = run_in_thread(worker.run)
    wait_until(lambda: json_log.has(f"paused after step {step}"), 30, f"the pause after {step}")

    time.sleep(3.5)  # well past the 2 s visibility timeout the message was received with
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (0, 1)
    # WaitTimeSeconds=0: the template's Audio Queue long-polls for 20 s.
    received = pipeline.sqs.receive_message(
        QueueUrl=pipeline.stack.audio_queue_url, WaitTimeSeconds=0
    )
    assert received.get("Messages") is None

    stop.request("SIGTERM", deadline=time.time())  # what the signal handler does
    thread.join(timeout=10)
    assert codes == [EXIT_OK]
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (1, 0)  # released at once
    job = pipeline.job(job_id)
    assert job.state is state
    assert job.attributes[JobField.ATTEMPTS] == attempts
    assert json_log.has(released)
    assert not [
        t for t in threading.enumerate() if t.name in ("heartbeat", "stop-enforcer", "prefetcher")
    ]


def test_spot_notice_releases_the_message_and_another_worker_finishes(
    pipeline: Pipeline, fox_mp3: Path, fake_imds: FakeImds, json_log: JsonLog
) -> None:
    key = pipeline.upload("fox.mp3", fox_mp3)
    job_id = pipeline.dispatch(key)
    doomed = pipeline.worker(imds_endpoint=fake_imds.url, pause_after_step="mid_transcription")
    thread, codes = run_in_thread(doomed.run)
    paused = "paused after step mid_transcription"
    wait_until(lambda: json_log.has(paused), 30, "the pause mid-transcription")
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (0, 1)

    fake_imds.announce_spot_interruption(in_seconds=10)  # less than the finishing margin
    wait_until(
        lambda: pipeline.depth(pipeline.stack.audio_queue_url) == (1, 0),
        10,
        "the message to be released on the Spot notice",
    )
    thread.join(timeout=10)
    assert codes == [EXIT_OK]
    assert pipeline.llm_jobs() == []

    assert pipeline.worker().run() == EXIT_OK  # a replacement instance

    [llm_job] = pipeline.llm_jobs()
    assert llm_job.job_id == job_id
    job = pipeline.job(job_id)
    assert job.state is JobState.TRANSCRIBED
    assert job.attributes[JobField.ATTEMPTS] == 2
    assert "quick brown fox" in pipeline.text(llm_job.timed_key).lower()


def test_same_stem_recordings_get_their_own_transcripts(
    pipeline: Pipeline, fox_mp3: Path, tmp_path: Path
) -> None:
    other = speech_mp3(tmp_path / "other.mp3", "Seven purple elephants sing in the rain.")
    fox_key = pipeline.upload("lecture.mp3", fox_mp3)
    other_key = pipeline.upload("Lecture.MP3", other)
    fox_job, other_job = pipeline.dispatch(fox_key), pipeline.dispatch(other_key)

    assert pipeline.worker().run() == EXIT_OK

    by_job = {job.job_id: job for job in pipeline.llm_jobs()}
    assert by_job[fox_job].timed_key == "transcriptions/lecture.timed.txt"
    assert by_job[other_job].timed_key == "transcriptions/Lecture (MP3).timed.txt"
    assert "fox" in pipeline.text(by_job[fox_job].timed_key).lower()
    assert "elephant" in pipeline.text(by_job[other_job].timed_key).lower()
    for job_id, key in ((fox_job, fox_key), (other_job, other_key)):
        head = pipeline.s3.head_object(Bucket=pipeline.stack.bucket, Key=by_job[job_id].timed_key)
        assert Owner.of(head["Metadata"]) == Owner(job_id=job_id, source_key=key)
        assert by_job[job_id].timed_version_id == head["VersionId"]  # what the LLM Caller reads
        written = transcript_keys_of_timed(by_job[job_id].timed_key)
        for other_format in (written.json, written.srt, written.vtt):
            other_head = pipeline.s3.head_object(Bucket=pipeline.stack.bucket, Key=other_format)
            assert Owner.of(other_head["Metadata"]) == Owner(job_id=job_id, source_key=key)
        # The timed file names the JSON written with it: the LLM Caller's word timings.
        json_head = pipeline.s3.head_object(Bucket=pipeline.stack.bucket, Key=written.json)
        assert json_version_of(head["Metadata"]) == json_head["VersionId"]


def test_another_recordings_transcript_is_never_overwritten(
    pipeline: Pipeline, fox_mp3: Path
) -> None:
    # A transcript of lecture.mp3 from before names were reserved, and a message for
    # lecture.wav without an output name (sent by hand): both name "lecture".
    theirs = transcript_keys("lecture").timed
    bucket = pipeline.stack.bucket
    pipeline.s3.put_object(
        Bucket=bucket,
        Key=theirs,
        Body=b"[00:00:00.000 --> 00:00:01.000] their words\n",
        Metadata=owner_metadata("their-job", "audio-input/lecture.mp3"),
    )
    key = pipeline.upload("lecture.wav", fox_mp3)
    job_id = pipeline.dispatch(key)
    pipeline.drain(pipeline.stack.audio_queue_url)
    pipeline.send_audio(AudioJob(s3_key=key, language="english", job_id=job_id).to_json())

    assert pipeline.worker().run() == EXIT_OK

    [result] = pipeline.results()
    assert result.status == "failed"
    assert result.error is not None
    assert f"{theirs} already holds the output of audio-input/lecture.mp3" in result.error
    assert pipeline.job(job_id).state is JobState.FAILED
    assert pipeline.text(theirs) == "[00:00:00.000 --> 00:00:01.000] their words\n"
    assert pipeline.llm_jobs() == []


@pytest.mark.parametrize(
    "when", ["before-the-check", "while-the-newer-writes", "between-check-and-write"]
)
def test_an_older_upload_never_writes_over_a_newer_uploads_transcript(
    pipeline: Pipeline, fox_mp3: Path, tmp_path: Path, when: str
) -> None:
    """talk.mp3 uploaded twice; the newer upload's worker wrote its transcript first (or its
    side files and not yet its timed file, or its timed file at the same moment as the
    older's): the older job writes over none of the newer one's files and ends superseded."""
    bucket = pipeline.stack.bucket
    key = pipeline.upload("talk.mp3", fox_mp3)
    older = pipeline.s3.head_object(Bucket=bucket, Key=key)["VersionId"]
    pipeline.upload("talk.mp3", speech_mp3(tmp_path / "dog.mp3", "A lazy dog sleeps."))
    newer = pipeline.s3.head_object(Bucket=bucket, Key=key)["VersionId"]
    older_job = pipeline.dispatch(key, version_id=older)
    newer_job = job_id_for(bucket, key, newer)
    written_keys = transcript_keys(pipeline.job(older_job).output_name or "")
    timed = written_keys.timed
    newer_text = b"[00:00:00.000 --> 00:00:01.500] A lazy dog sleeps.\n"

    aws, ledger, policies = pipeline.instance_role()

    def newer_writes(s3: Any) -> None:  # what the newer upload's worker writes, last of its files
        s3.put_object(
            Bucket=bucket, Key=timed, Body=newer_text, Metadata=owner_metadata(newer_job, key)
        )

    newer_side_files = {
        name: f"the newer upload's {name}".encode()
        for name in (written_keys.json, written_keys.srt, written_keys.vtt)
    }
    if when != "between-check-and-write":  # the newer's side files, then its timed file
        for name, body in newer_side_files.items():
            pipeline.s3.put_object(
                Bucket=bucket, Key=name, Body=body, Metadata=owner_metadata(newer_job, key)
            )
        if when == "before-the-check":
            newer_writes(pipeline.s3)
    else:  # the newer worker (the same role) writes after the older's check, before its write
        raced: list[str] = []

        def just_before_the_timed_write(params: dict[str, Any], **_: Any) -> None:
            if params.get("Key") == timed and not raced:
                raced.append(timed)
                newer_writes(aws.s3)

        aws.s3.meta.events.register(
            "before-parameter-build.s3.PutObject", just_before_the_timed_write
        )

    @set_initial_no_auth_action_count(0)
    def run_as_the_instance() -> int:
        return pipeline.worker(aws=aws).run()

    assert run_as_the_instance() == EXIT_OK

    [result] = pipeline.results()
    assert result.status == "superseded"
    assert result.job_id == older_job
    assert result.output_file is None
    assert result.error is not None
    assert result.error.startswith(f"superseded: {key} was uploaded again (job {newer_job})")
    job = pipeline.job(older_job)
    assert job.state is JobState.FAILED
    assert job.attributes[JobField.RESULT_STATUS] == "superseded"
    assert pipeline.llm_jobs() == []
    if when == "while-the-newer-writes":  # the newer's to write, still
        assert pipeline.s3.list_objects_v2(Bucket=bucket, Prefix=timed)["KeyCount"] == 0
    else:
        assert pipeline.s3.get_object(Bucket=bucket, Key=timed)["Body"].read() == newer_text
    calls = ledger.records()
    assert denied(calls) == []
    assert ungranted(calls, policies) == []
    # The race was met by S3's conditional write: the older job's timed PUT was made (after
    # the newer one's, in the ledger too) and refused; without the race it never tried.
    timed_puts = [c for c in calls if c.action == "s3:PutObject" and c.resource.endswith(timed)]
    assert len(timed_puts) == (2 if when == "between-check-and-write" else 0)
    if when != "between-check-and-write":
        # Its first try wrote only where a key was empty: each was the newer's, and stays so.
        for name, body in newer_side_files.items():
            assert pipeline.s3.get_object(Bucket=bucket, Key=name)["Body"].read() == body


def test_a_new_upload_of_a_file_replaces_the_earlier_uploads_transcript(
    pipeline: Pipeline, fox_mp3: Path, tmp_path: Path
) -> None:
    """talk.mp3 uploaded again after its first upload was transcribed: the new job's first
    try writes only where a key is empty, finds every key taken, checks whose the timed file
    is (the earlier upload's) and writes all four files over it, under the instance role."""
    bucket = pipeline.stack.bucket
    key = pipeline.upload("talk.mp3", fox_mp3)
    earlier_job = pipeline.dispatch(key)
    assert pipeline.worker().run() == EXIT_OK
    pipeline.upload("talk.mp3", speech_mp3(tmp_path / "dog.mp3", "A lazy dog sleeps."))
    newer_job = pipeline.dispatch(key)
    assert newer_job != earlier_job
    keys = transcript_keys(pipeline.job(newer_job).output_name or "")
    assert keys == transcript_keys(pipeline.job(earlier_job).output_name or "")
    aws, ledger, policies = pipeline.instance_role()

    @set_initial_no_auth_action_count(0)
    def run_as_the_instance() -> int:
        return pipeline.worker(aws=aws).run()

    assert run_as_the_instance() == EXIT_OK

    assert [job.job_id for job in pipeline.llm_jobs()] == [earlier_job, newer_job]
    assert "dog" in pipeline.text(keys.timed).lower()
    for name in (keys.json, keys.srt, keys.vtt, keys.timed):
        head = pipeline.s3.head_object(Bucket=bucket, Key=name)
        assert Owner.of(head["Metadata"]).job_id == newer_job, name
    assert json.loads(pipeline.text(keys.json))["job_id"] == newer_job
    calls = ledger.records()
    assert denied(calls) == []
    assert ungranted(calls, policies) == []
    puts = Counter(c.resource.rsplit("/", 1)[-1] for c in calls if c.action == "s3:PutObject")
    # The side files twice (refused, then written), the timed file once, after the check.
    assert puts == {
        **{name.rsplit("/", 1)[-1]: 2 for name in (keys.json, keys.srt, keys.vtt)},
        keys.timed.rsplit("/", 1)[-1]: 1,
    }


@pytest.mark.parametrize("file", ["json", "timed"])
def test_a_conditional_write_met_by_s3s_409_is_checked_and_written_again(
    pipeline: Pipeline, fox_mp3: Path, json_log: JsonLog, file: Literal["json", "timed"]
) -> None:
    """S3 answers 409 ConditionalRequestConflict to a conditional write that meets another
    write of the key at the same moment (moto never does): the worker reads it as the name
    taken, checks whose the files are (nobody's yet) and writes them again, once."""
    key = pipeline.upload("fox.mp3", fox_mp3)
    job_id = pipeline.dispatch(key)
    keys = transcript_keys(pipeline.job(job_id).output_name or "")
    conflicted_key = keys.json if file == "json" else keys.timed
    aws = pipeline.clients()
    conflicted = conflict_once(aws.s3, conflicted_key)

    assert pipeline.worker(aws=aws).run() == EXIT_OK

    assert conflicted == [conflicted_key]
    taken = [
        line for line in json_log.lines() if line["message"].startswith("the transcript's name")
    ]
    assert [line["key_taken"] for line in taken] == [conflicted_key]
    [llm_job] = pipeline.llm_jobs()
    assert llm_job.job_id == job_id
    assert pipeline.job(job_id).state is JobState.TRANSCRIBED
    bucket = pipeline.stack.bucket
    for name in (keys.json, keys.srt, keys.vtt, keys.timed):
        assert Owner.of(pipeline.s3.head_object(Bucket=bucket, Key=name)["Metadata"]).job_id == (
            job_id
        )
    # The timed file was written once; its JSON is the one written with it.
    versions = pipeline.s3.list_object_versions(Bucket=bucket, Prefix=keys.timed)["Versions"]
    assert len(versions) == 1
    timed_head = pipeline.s3.head_object(Bucket=bucket, Key=keys.timed)
    json_head = pipeline.s3.head_object(Bucket=bucket, Key=keys.json)
    assert json_version_of(timed_head["Metadata"]) == json_head["VersionId"]


def test_the_download_starts_while_the_claim_is_made(pipeline: Pipeline, fox_mp3: Path) -> None:
    """A first delivery's GET does not wait for the claim's answer: the claim is held until
    the GET has started (or 10 s, when it would not start before the claim returns)."""
    key = pipeline.upload("fox.mp3", fox_mp3)
    job_id = pipeline.dispatch(key)
    aws = pipeline.clients()
    download_started = threading.Event()
    claims_held: list[bool] = []

    def on_get(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == key:
            download_started.set()

    def on_update(params: dict[str, Any], **_: Any) -> None:
        if not claims_held:  # the first UpdateItem is the claim
            claims_held.append(download_started.wait(10))

    aws.s3.meta.events.register("before-parameter-build.s3.GetObject", on_get)
    aws.dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", on_update)

    assert pipeline.worker(aws=aws).run() == EXIT_OK

    assert claims_held == [True]
    assert pipeline.job(job_id).state is JobState.TRANSCRIBED
    [llm_job] = pipeline.llm_jobs()
    assert llm_job.job_id == job_id


def test_a_hand_off_whose_record_fails_still_ends_once(
    pipeline: Pipeline, fox_mp3: Path, json_log: JsonLog
) -> None:
    """The record that the LLM job went out and the message's delete run side by side: a
    record that fails is logged, and leaves one LLM job and the message deleted (in turn,
    the record's failure made the delivery fail, and after three the job)."""
    key = pipeline.upload("fox.mp3", fox_mp3)
    job_id = pipeline.dispatch(key)
    aws = pipeline.clients()

    def refuse_the_record(params: dict[str, Any], **_: Any) -> None:
        if JobField.LLM_JOB_SENT_AT in json.dumps(params.get("ExpressionAttributeNames", {})):
            raise ConnectionError("DynamoDB did not answer")

    aws.dynamodb.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem", refuse_the_record
    )

    assert pipeline.worker(aws=aws).run() == EXIT_OK

    assert json_log.has("could not record that the LLM job was sent")
    [llm_job] = pipeline.llm_jobs()
    assert llm_job.job_id == job_id
    job = pipeline.job(job_id)
    assert job.state is JobState.TRANSCRIBED
    assert JobField.LLM_JOB_SENT_AT not in job.attributes
    assert pipeline.depth(pipeline.stack.audio_queue_url) == (0, 0)  # deleted all the same
    assert pipeline.results() == []
