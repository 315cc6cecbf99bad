"""Helpers shared by the on-prem client's tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.config import Config

from onprem.aws import client_config
from onprem.settings import OnpremSettings
from pipeline_core import keys, subtitles
from pipeline_core.keys import OutputFormat
from pipeline_core.transcript_document import SegmentRecord, TranscriptDocument

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
BUCKET = "pipeline-bucket"


def fast_client_config() -> Config:
    """The client's real retry configuration, as the CLI builds it."""
    return client_config(OnpremSettings(max_attempts=4))


def versions(s3: S3Client, key: str) -> list[str]:
    listing = s3.list_object_versions(Bucket=BUCKET, Prefix=key)
    return [v["VersionId"] for v in listing.get("Versions", []) if v["Key"] == key]


def all_keys(s3: S3Client) -> list[str]:
    return sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def write_final_outputs(
    s3: S3Client,
    audio: str,
    text: str,
    *,
    left_out: tuple[OutputFormat, ...] = (),
    output_name: str | None = None,
) -> keys.FinalKeys:
    """What the LLM Caller writes to ``final-output/`` for ``audio`` (all but ``left_out``):
    ``text`` as one corrected segment, in every format, under ``output_name`` (by default
    the plain stem)."""
    final = keys.final_keys(output_name or keys.stem(audio))
    language = "he" if any("\u0590" <= ch <= "\u05ff" for ch in text) else "en"
    document = TranscriptDocument(
        source_key=audio, job_id="job-" + keys.stem(audio).replace("/", "-"), language=language,
        model="whisper", audio_seconds=2.0, transcribe_seconds=0.2, real_time_factor=0.1,
        corrector="bedrock:model",
        segments=(SegmentRecord(start=0.0, end=2.0, text=text, corrected=True),),
    )  # fmt: skip
    bodies = {
        OutputFormat.TXT: text,
        OutputFormat.TIMED: f"[00:00] {text}",
        OutputFormat.JSON: document.to_json(),
        OutputFormat.SRT: subtitles.srt(document),
        OutputFormat.VTT: subtitles.vtt(document),
    }
    for output, body in bodies.items():
        if output not in left_out:
            s3.put_object(Bucket=BUCKET, Key=final.of(output), Body=body.encode())
    return final
