"""``onprem poll`` against moto: downloads, duplicates, crashes, failures, refusals."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import docx
import pytest
import srt as srt_parser
import webvtt
from docx.oxml.ns import qn
from support.onprem_helpers import BUCKET, REGION, fast_client_config, write_final_outputs
from support.s3_answers import deny_reads_below

from onprem.cli import main
from onprem.poll import Poller, PollOptions, PollOutcome
from onprem.settings import parse_formats
from pipeline_core import keys
from pipeline_core.contracts import LineCounts, Result, send_to_queue, utc_timestamp
from pipeline_core.keys import OutputFormat
from pipeline_core.subtitles import RLM
from pipeline_core.transcript_document import TranscriptDocument

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


def publish_success(
    s3: S3Client,
    sqs: SQSClient,
    queue: str,
    name: str,
    text: str,
    *,
    left_out: tuple[OutputFormat, ...] = (),
) -> Result:
    """What the LLM Caller does: write final-output/ objects (all but ``left_out``), then
    send a Result."""
    audio = keys.audio_key(name + ".mp3")
    final = write_final_outputs(s3, audio, text, left_out=left_out)
    result = Result.success(
        audio,
        keys.s3_uri(BUCKET, final.text),
        timed_output_file=keys.s3_uri(BUCKET, final.timed),
        job_id="job-" + name.replace("/", "-"),
    )
    send_to_queue(sqs, queue, result)
    return result


def poll_once(queue: str, out: Path, *flags: str) -> int:
    """The CLI, in process."""
    return main(
        ["poll", "--once", "--queue-url", queue, "--output-dir", str(out), "--wait-seconds", "0",
         *flags]
    )  # fmt: skip


def poller(s3: S3Client, sqs: SQSClient, queue: str, out: Path, formats: str = "txt,srt") -> Poller:
    options = PollOptions(
        queue_url=queue, output_dir=out, wait_seconds=0, once=True, formats=parse_formats(formats)
    )
    return Poller(s3, sqs, options)


def queue_depth(sqs: SQSClient, queue: str) -> int:
    """Visible plus in-flight messages: everything not yet deleted."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_transcripts_land_under_their_source_names_and_messages_are_deleted(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    publish_success(s3, sqs, results_queue, "גמרא/שיעור א", "שלום עולם")
    publish_success(s3, sqs, results_queue, "plain", "hello")
    code = poll_once(results_queue, out)
    assert code == 0
    assert (out / "גמרא" / "שיעור א.txt").read_text(encoding="utf-8") == "שלום עולם"
    [cue] = srt_parser.parse((out / "גמרא" / "שיעור א.srt").read_text(encoding="utf-8"))
    assert cue.content == f"{RLM}שלום עולם{RLM}"
    assert (out / "plain.txt").read_text() == "hello"
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "plain.html",
        "plain.srt",
        "plain.txt",
        "שיעור א.html",  # the reader page, built here from the corrected JSON
        "שיעור א.srt",
        "שיעור א.txt",
    ], "the default formats (txt, srt, html) and no temporary files"
    assert queue_depth(sqs, results_queue) == 0


def test_refused_edits_are_counted_in_the_run_and_said_per_transcript(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    audio = keys.audio_key("lesson.mp3")
    final = write_final_outputs(s3, audio, "מאי טעמא")
    result = Result.success(
        audio, keys.s3_uri(BUCKET, final.text), job_id="job-lesson",
        line_counts=LineCounts(lines_corrected=3, lines_refused=2, lines_left=5),
    )  # fmt: skip
    send_to_queue(sqs, results_queue, result)
    publish_success(s3, sqs, results_queue, "clean", "hello")  # no counts: an older sender
    report = poller(s3, sqs, results_queue, tmp_path / "out").run()
    assert report.outcomes[PollOutcome.WRITTEN] == 2
    assert report.exit_code == 0  # delivered: not a failure
    assert report.lines_refused == {audio: 2}
    assert report.summary()["lines_refused"] == 2
    assert report.summary()["with_refused_edits"] == [audio]
    [warning] = [r for r in caplog.records if getattr(r, "lines_refused", None) == 2
                 and r.levelname == "WARNING"]  # fmt: skip
    assert audio in warning.getMessage()


def test_every_format_asked_for_comes_home_and_reads_back_with_its_parser(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    publish_success(s3, sqs, results_queue, "גמרא/שיעור א", "שלום עולם, מה שלומכם?")
    assert poll_once(results_queue, out, "--formats", "txt,timed,srt,vtt,json,docx") == 0

    home = out / "גמרא"
    assert sorted(p.name for p in home.iterdir()) == [
        f"שיעור א.{suffix}" for suffix in ("docx", "json", "srt", "timed.txt", "txt", "vtt")
    ]
    document = TranscriptDocument.from_json((home / "שיעור א.json").read_bytes())
    assert [s.text for s in document.segments] == ["שלום עולם, מה שלומכם?"]
    [caption] = webvtt.read(str(home / "שיעור א.vtt")).captions
    assert caption.text == f"{RLM}שלום עולם, מה שלומכם?{RLM}"
    word = docx.Document(str(home / "שיעור א.docx"))
    paragraphs = [p for p in word.paragraphs if "שלום" in p.text]
    assert [p.text.split("  ", 1)[1] for p in paragraphs] == ["שלום עולם, מה שלומכם?"]
    properties = paragraphs[0]._p.pPr
    assert properties is not None
    bidi = properties.find(qn("w:bidi"))
    assert bidi is not None
    assert bidi.get(qn("w:val")) in (None, "1", "true")
    assert all(run.font.rtl for run in paragraphs[0].runs)


def test_an_english_docx_is_left_to_right(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    publish_success(s3, sqs, results_queue, "lecture", "hello there")
    assert poller(s3, sqs, results_queue, out, "docx").run().exit_code == 0
    assert [p.name for p in out.iterdir()] == ["lecture.docx"]
    word = docx.Document(str(out / "lecture.docx"))
    [paragraph] = [p for p in word.paragraphs if "hello there" in p.text]
    assert paragraph._p.pPr is None or paragraph._p.pPr.find(qn("w:bidi")) is None
    assert not any(run.font.rtl for run in paragraph.runs)


def test_a_missing_format_is_reported_and_the_others_are_written(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    publish_success(
        s3,
        sqs,
        results_queue,
        "sub/lecture",
        "text",
        left_out=(OutputFormat.SRT, OutputFormat.JSON),
    )
    report = poller(s3, sqs, results_queue, out, "txt,srt,vtt,docx").run()

    assert report.outcomes == {PollOutcome.PARTLY_WRITTEN: 1}
    assert report.exit_code == 1
    assert sorted(p.name for p in (out / "sub").iterdir()) == ["lecture.txt", "lecture.vtt"]
    failure = json.loads((out / "failed" / "sub" / "lecture.json").read_text(encoding="utf-8"))
    assert failure["missing_formats"] == ["srt", "docx"]
    assert "srt, docx" in failure["error"]
    assert failure["status"] == "success"
    assert queue_depth(sqs, results_queue) == 0, "what exists is home; nothing to retry"


def test_a_duplicate_result_does_no_harm(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = publish_success(s3, sqs, results_queue, "dup", "same text")
    send_to_queue(sqs, results_queue, result)
    report = poller(s3, sqs, results_queue, out).run()
    assert report.outcomes[PollOutcome.WRITTEN] == 1
    assert report.outcomes[PollOutcome.UNCHANGED] == 1
    assert report.exit_code == 0
    assert (out / "dup.txt").read_text() == "same text"
    assert queue_depth(sqs, results_queue) == 0


def test_a_crash_between_write_and_delete_loses_nothing(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    publish_success(s3, sqs, results_queue, "lecture", "the text")

    class Crash(BaseException):
        pass

    def crash(**_: Any) -> None:
        assert (out / "lecture.txt").read_text() == "the text", "files are written before"
        raise Crash

    crashing_sqs: SQSClient = boto3.client("sqs", region_name=REGION, config=fast_client_config())
    crashing_sqs.meta.events.register("before-call.sqs.DeleteMessage", crash)
    with pytest.raises(Crash):
        poller(s3, crashing_sqs, results_queue, out).run()
    assert queue_depth(sqs, results_queue) == 1, "the message must still be there"

    time.sleep(1.1)  # the queue's visibility timeout
    report = poller(s3, sqs, results_queue, out).run()
    assert report.outcomes == {PollOutcome.UNCHANGED: 1}
    assert (out / "lecture.txt").read_text() == "the text"
    assert queue_depth(sqs, results_queue) == 0


def test_a_failed_result_is_reported_and_a_later_success_replaces_the_report(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    failure = Result.failure("audio-input/sub/broken.mp3", "the audio could not be decoded", "j1")
    send_to_queue(sqs, results_queue, failure)
    report = poller(s3, sqs, results_queue, out).run()
    assert report.outcomes == {PollOutcome.FAILURE_REPORTED: 1}
    written = json.loads((out / "failed" / "sub" / "broken.json").read_text(encoding="utf-8"))
    assert written["error"] == "the audio could not be decoded"
    assert written["source_file"] == "audio-input/sub/broken.mp3"
    assert queue_depth(sqs, results_queue) == 0

    publish_success(s3, sqs, results_queue, "sub/broken", "redriven and fine")
    poller(s3, sqs, results_queue, out).run()
    assert (out / "sub" / "broken.txt").read_text() == "redriven and fine"
    assert not (out / "failed" / "sub" / "broken.json").exists()


def test_a_superseded_result_is_no_failure_and_the_newer_uploads_files_stay(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    """talk.mp3 uploaded twice: the newer upload's Result brought the files; the older one's
    (superseded) arrives after it and neither reports a failure nor touches them."""
    out = tmp_path / "out"
    publish_success(s3, sqs, results_queue, "talk", "the newer take")
    reason = "superseded: audio-input/talk.mp3 was uploaded again (job j2) while this ..."
    older = Result.failure("audio-input/talk.mp3", reason, "j1", "talk", superseded=True)
    send_to_queue(sqs, results_queue, older)

    report = poller(s3, sqs, results_queue, out).run()

    assert report.outcomes == {PollOutcome.WRITTEN: 1, PollOutcome.SUPERSEDED: 1}
    assert report.exit_code == 0
    assert (out / "talk.txt").read_text() == "the newer take"
    assert not (out / "failed").exists()
    assert queue_depth(sqs, results_queue) == 0


def test_same_stem_recordings_keep_their_own_reports_and_transcripts(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    """lecture.mp3 failed, Lecture.MP3 and lecture.wav failed too, then lecture.wav succeeded:
    each report is named after its recording's output name, and the success removes its
    own report only, whatever the case (the names would meet on Windows or macOS)."""
    out = tmp_path / "out"
    for source, name in (
        ("audio-input/lecture.mp3", "lecture"),
        ("audio-input/lecture.wav", "lecture (wav)"),
        ("audio-input/Lecture.MP3", "Lecture (MP3)"),
    ):
        reason = f"{source} could not be decoded"
        send_to_queue(sqs, results_queue, Result.failure(source, reason, "j", output_name=name))
    poller(s3, sqs, results_queue, out).run()
    reports = {p.name: json.loads(p.read_text()) for p in (out / "failed").iterdir()}
    assert {name: report["source_file"] for name, report in reports.items()} == {
        "lecture.json": "audio-input/lecture.mp3",
        "lecture (wav).json": "audio-input/lecture.wav",
        "Lecture (MP3).json": "audio-input/Lecture.MP3",
    }

    final = write_final_outputs(
        s3, "audio-input/lecture.wav", "the wav's words", output_name="lecture (wav)"
    )
    success = Result.success(
        "audio-input/lecture.wav",
        keys.s3_uri(BUCKET, final.text),
        job_id="j2",
        output_name="lecture (wav)",
    )
    send_to_queue(sqs, results_queue, success)
    # An old report at the name of another recording is not this success's to remove.
    (out / "failed" / "lecture (wav).json").write_text(json.dumps(reports["lecture.json"]))
    poller(s3, sqs, results_queue, out).run()
    assert (out / "lecture (wav).txt").read_text() == "the wav's words"
    [cue] = srt_parser.parse((out / "lecture (wav).srt").read_text())  # every format asked for
    assert cue.content == "the wav's words"
    assert sorted(p.name for p in (out / "failed").iterdir()) == [
        "Lecture (MP3).json", "lecture (wav).json", "lecture.json",
    ]  # fmt: skip

    (out / "failed" / "lecture (wav).json").write_text(json.dumps(reports["lecture (wav).json"]))
    send_to_queue(sqs, results_queue, success)
    poller(s3, sqs, results_queue, out).run()
    assert sorted(p.name for p in (out / "failed").iterdir()) == [
        "Lecture (MP3).json", "lecture.json",
    ]  # fmt: skip


def test_a_result_whose_output_file_is_not_its_output_names_is_refused(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    final = write_final_outputs(s3, "audio-input/lecture.mp3", "the mp3's words")
    mixed_up = Result.success(
        "audio-input/lecture.wav",
        keys.s3_uri(BUCKET, final.text),
        job_id="j",
        output_name="lecture (wav)",
    )
    send_to_queue(sqs, results_queue, mixed_up)
    out = tmp_path / "out"

    report = poller(s3, sqs, results_queue, out).run()

    assert report.outcomes == {PollOutcome.REFUSED: 1}
    assert not out.exists() or list(out.iterdir()) == []
    assert queue_depth(sqs, results_queue) == 1, "left for the DLQ"


@pytest.mark.parametrize(
    "output_file",
    [
        f"s3://{BUCKET}/final-output/../../escaped.txt",
        f"s3://{BUCKET}/final-output/a/../../../escaped.txt",
        f"s3://{BUCKET}/final-output//etc/escaped.txt",
        f"s3://{BUCKET}/audio-input/not-an-output.txt",
        f"s3://{BUCKET}/final-output/bell\x07.txt",
        f"s3://{BUCKET}/final-output/back\\slash.txt",
    ],
)
def test_keys_that_would_leave_the_output_folder_are_refused(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path, output_file: str
) -> None:
    out = tmp_path / "deep" / "out"
    body = json.dumps(
        {
            "source_file": "audio-input/x.mp3",
            "output_file": output_file,
            "status": "success",
            "timestamp": utc_timestamp(),
        }
    )
    _, key = keys.parse_s3_uri(output_file)
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"payload")
    sqs.send_message(QueueUrl=results_queue, MessageBody=body)
    report = poller(s3, sqs, results_queue, out).run()
    assert report.outcomes == {PollOutcome.REFUSED: 1}
    assert report.exit_code == 1
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [], f"nothing may be written: {written}"
    assert queue_depth(sqs, results_queue) == 1, "left for the DLQ"


def test_malformed_and_undownloadable_results_stay_in_the_queue_and_others_go_on(
    s3: S3Client,
    sqs: SQSClient,
    results_queue: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    sqs.send_message(QueueUrl=results_queue, MessageBody='{"status": "success"}')
    sqs.send_message(QueueUrl=results_queue, MessageBody="not json at all")
    missing = Result.success("audio-input/gone.mp3", f"s3://{BUCKET}/final-output/gone.txt")
    send_to_queue(sqs, results_queue, missing)
    publish_success(s3, sqs, results_queue, "good", "fine")
    code = poll_once(results_queue, out)
    assert code == 1
    assert (out / "good.txt").read_text() == "fine"
    assert queue_depth(sqs, results_queue) == 3
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    malformed = [line for line in logged if line["message"].startswith("malformed result")]
    assert len(malformed) == 2
    assert all(line["receive_count"] == "1" for line in malformed)
    download = [line for line in logged if line["message"].startswith("could not download")]
    assert [line["s3_key"] for line in download] == ["audio-input/gone.mp3"]


@pytest.mark.slow  # waits out retries or runs an external tool; not in the fast loop
def test_malformed_results_reach_the_dlq_after_the_maximum_receives(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    sqs.send_message(QueueUrl=results_queue, MessageBody="garbage")
    for _ in range(3):
        poller(s3, sqs, results_queue, tmp_path / "out").run()
        time.sleep(1.05)
    poller(s3, sqs, results_queue, tmp_path / "out").run()
    dlq = sqs.get_queue_url(QueueName="results-dlq")["QueueUrl"]
    assert queue_depth(sqs, results_queue) == 0
    assert queue_depth(sqs, dlq) == 1


def test_missing_settings_exit_2(aws: None, tmp_path: Path) -> None:
    assert main(["poll", "--once", "--output-dir", str(tmp_path)]) == 2
    assert main(["poll", "--once", "--queue-url", "https://example.invalid/q"]) == 2


def test_a_denied_transcript_read_stops_the_run_and_keeps_every_message(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    """S3 answers a read the policy does not allow (or, without s3:ListBucket, of an expired
    transcript) with 403 (stubbed: moto answers 404): a configuration error, so the run stops
    instead of burning every message's receives on the same denial."""
    publish_success(s3, sqs, results_queue, "first", "one")
    publish_success(s3, sqs, results_queue, "second", "two")
    client: S3Client = boto3.client("s3", region_name=REGION, config=fast_client_config())
    denied = deny_reads_below(client, keys.FINAL_PREFIX)
    report = poller(client, sqs, results_queue, tmp_path / "out").run()
    assert len(denied) == 1
    assert report.fatal is not None
    assert "AccessDenied on GetObject" in report.fatal
    assert "the on-prem client's policy needs" in report.fatal
    assert report.exit_code == 1
    assert queue_depth(sqs, results_queue) == 2
    assert not (tmp_path / "out" / "first.txt").exists()


def test_an_expired_transcript_is_a_download_failure_left_in_the_queue(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    result = publish_success(
        s3, sqs, results_queue, "expired", "gone", left_out=(OutputFormat.SRT,)
    )
    s3.delete_object(Bucket=BUCKET, Key=keys.parse_s3_uri(result.output_file or "")[1])
    report = poller(s3, sqs, results_queue, tmp_path / "out").run()
    assert report.fatal is None
    assert report.outcomes[PollOutcome.DOWNLOAD_FAILED] == 1
    assert queue_depth(sqs, results_queue) == 1
