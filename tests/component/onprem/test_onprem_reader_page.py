"""The reader page the poller writes beside each transcript, against moto, through the CLI.

The uploader really uploads (its state names the local file), the LLM Caller's part is played
by writing ``final-output/`` and sending the Result, and the poller brings it home.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from support.onprem_helpers import BUCKET
from support.reader_page import page_parts

from onprem.cli import main
from onprem.poll import Poller, PollOptions, PollOutcome
from onprem.settings import load_settings, parse_formats
from pipeline_core import keys, subtitles
from pipeline_core.contracts import Result, send_to_queue
from pipeline_core.transcript_document import SegmentRecord, TranscriptDocument

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

SEGMENTS = (
    SegmentRecord(start=0.0, end=2.5, text="שלום לכולם."),
    SegmentRecord(start=2.5, end=5.0, text="היום נלמד <b>בבא קמא</b> דף ב.", corrected=True),
    SegmentRecord(start=65.0, end=67.25, text="סוף."),
)


def publish(s3: S3Client, sqs: SQSClient, queue: str, audio_key: str) -> Result:
    """What the LLM Caller does: write final-output/ objects, then send a Result."""
    final = keys.final_keys(keys.stem(audio_key))
    document = TranscriptDocument(
        source_key=audio_key, job_id="job-1", language="he", model="whisper",
        audio_seconds=67.25, transcribe_seconds=1.0, real_time_factor=0.01,
        corrector="bedrock:model", segments=SEGMENTS,
    )  # fmt: skip
    s3.put_object(Bucket=BUCKET, Key=final.json, Body=document.to_json().encode())
    s3.put_object(Bucket=BUCKET, Key=final.text, Body=b"plain text")
    s3.put_object(Bucket=BUCKET, Key=final.srt, Body=subtitles.srt(document).encode())
    result = Result.success(audio_key, keys.s3_uri(BUCKET, final.text), job_id="job-1")
    send_to_queue(sqs, queue, result)
    return result


def poll_once(queue: str, out: Path) -> int:
    return main(
        ["poll", "--once", "--queue-url", queue, "--output-dir", str(out), "--wait-seconds", "0"]
    )


def poller(
    sqs: SQSClient, s3: S3Client, queue: str, out: Path, *, formats: str = "txt,srt,html"
) -> Poller:
    """The poller as ``onprem poll`` sets it up: the uploader's state from the same settings."""
    options = PollOptions(
        queue_url=queue,
        output_dir=out,
        wait_seconds=0,
        once=True,
        formats=parse_formats(formats),
        state_file=load_settings().state_path,
    )
    return Poller(s3, sqs, options)


def upload_recording(tmp_path: Path) -> tuple[Path, str]:
    recording = tmp_path / "recordings" / "גמרא" / "שיעור #1 (a+b).mp3"
    recording.parent.mkdir(parents=True)
    recording.write_bytes(b"ID3 a lecture")
    assert (
        main(["upload", str(recording.parent.parent), "--bucket", BUCKET, "--language", "he"]) == 0
    )
    return recording, "audio-input/גמרא/שיעור #1 (a+b).mp3"


def test_the_page_beside_the_transcript_links_the_recording_the_uploader_sent(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    recording, key = upload_recording(tmp_path)
    publish(s3, sqs, results_queue, key)
    out = tmp_path / "home" / "transcripts"
    assert poll_once(results_queue, out) == 0

    page = out / "גמרא" / "שיעור #1 (a+b).html"
    parts = page_parts(page)
    assert parts.audio_src is not None
    assert not parts.audio_src.startswith(("/", "file:")), "relative: the folders can move"
    linked = page.parent / unquote(parts.audio_src)
    assert linked.resolve() == recording.resolve()
    assert parts.starts == ["0.000", "2.500", "65.000"]
    assert parts.texts == ["שלום לכולם.", "היום נלמד <b>בבא קמא</b> דף ב.", "סוף."]
    assert parts.direction == "rtl", "a Hebrew transcript"


def test_a_duplicate_result_leaves_the_page_as_it_is(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    _, key = upload_recording(tmp_path)
    result = publish(s3, sqs, results_queue, key)
    out = tmp_path / "out"
    assert poller(sqs, s3, results_queue, out).run().outcomes == {PollOutcome.WRITTEN: 1}
    page = out / "גמרא" / "שיעור #1 (a+b).html"
    written = page.stat().st_mtime_ns

    send_to_queue(sqs, results_queue, result)
    assert poller(sqs, s3, results_queue, out).run().outcomes == {PollOutcome.UNCHANGED: 1}
    assert page.stat().st_mtime_ns == written


def test_without_a_local_recording_the_page_has_the_transcript_and_no_player(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    recording, key = upload_recording(tmp_path)
    recording.unlink()  # e.g. uploaded with --delete-after-upload
    publish(s3, sqs, results_queue, key)
    publish(s3, sqs, results_queue, "audio-input/never uploaded here.mp3")
    out = tmp_path / "out"
    assert poller(sqs, s3, results_queue, out).run().outcomes == {PollOutcome.WRITTEN: 2}
    for page in (out / "גמרא" / "שיעור #1 (a+b).html", out / "never uploaded here.html"):
        parts = page_parts(page)
        assert parts.audio_src is None
        assert len(parts.texts) == 3


def test_no_page_when_the_reader_is_not_asked_for(
    s3: S3Client, sqs: SQSClient, results_queue: str, tmp_path: Path
) -> None:
    _, key = upload_recording(tmp_path)
    publish(s3, sqs, results_queue, key)
    out = tmp_path / "out"
    report = poller(sqs, s3, results_queue, out, formats="txt,srt").run()
    assert report.outcomes == {PollOutcome.WRITTEN: 1}
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "שיעור #1 (a+b).srt",
        "שיעור #1 (a+b).txt",
    ]
