"""``onprem poll``: fetch finished transcripts from the Results Queue.

For each result the formats asked for (``formats``: ``txt`` and ``srt`` unless told
otherwise) are downloaded from ``final-output/`` into the output folder under their own names
(``final-output/a/b.txt`` -> ``<output>/a/b.txt``), written atomically and checked against
the object's size; a ``.docx`` is built here from the corrected ``.json``. A failed result
becomes ``<output>/failed/<name>.json``; so does a result some of whose formats are missing
(the others are written, the report names what is missing). When none of them is there
(expired, deleted) the result is a download failure, as below. ``<name>`` is the
recording's output name (``pipeline_core.keys``), so that no two recordings' files or
reports meet, not even on a case-insensitive file system.
The message is deleted only after that, so a crash at any point leaves it in the queue and
the next run does the work again; writing the same bytes twice changes nothing, so a
duplicate message is harmless. A message that is malformed, names a key that would leave
the output folder, or whose files cannot be downloaded is logged and left alone: it comes
back after its visibility timeout and, after the queue's maximum receives, lands in the
Results DLQ (see ``onprem redrive``). A local write error (read-only or full disk) or a
configuration error (S3 denies the read: a grant is missing) stops the run: every other
message would fail the same way and burn its receives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from onprem import reader
from onprem.atomic import TEMP_SUFFIX, OutputWriteError, write_atomic, write_bytes_atomic
from onprem.docx_writer import transcript_docx
from onprem.settings import DEFAULT_FORMATS
from onprem.shutdown import GracefulStop, StopPolling
from pipeline_core import keys
from pipeline_core.contracts import ContractError, LineCounts, Result
from pipeline_core.errors import ONPREM_READER, ConfigurationError, is_missing_object
from pipeline_core.jsonlog import log_context
from pipeline_core.keys import OutputFormat
from pipeline_core.transcript_document import TranscriptDocument

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

log = logging.getLogger(__name__)

FAILED_FOLDER: Final = "failed"
CHUNK: Final = 1024 * 1024
STALE_TEMP_SECONDS: Final = 3600


class PollOutcome(StrEnum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"  # a duplicate: the files already hold these bytes
    FAILURE_REPORTED = "failure-reported"
    SUPERSEDED = "superseded"  # a newer upload of the file: its own Result brings the files
    PARTLY_WRITTEN = "partly-written"  # some formats missing: reported in failed/
    MALFORMED = "malformed"  # left for the DLQ
    REFUSED = "refused"  # unsafe key; left for the DLQ
    DOWNLOAD_FAILED = "download-failed"  # left; retried after the visibility timeout


LEFT_IN_QUEUE: Final = (PollOutcome.MALFORMED, PollOutcome.REFUSED, PollOutcome.DOWNLOAD_FAILED)
# Outcomes that make the run's exit code 1: a cron wrapper should hear about them.
NEEDS_ATTENTION: Final = (*LEFT_IN_QUEUE, PollOutcome.PARTLY_WRITTEN)


class DownloadError(Exception):
    """An object that did not arrive whole."""


class MissingOutputError(DownloadError):
    """An object the result implies that is not (or no longer) in the bucket."""


@dataclass(frozen=True)
class PollOptions:
    queue_url: str
    output_dir: Path
    wait_seconds: int = 20
    once: bool = False
    max_messages: int = 10
    formats: tuple[OutputFormat, ...] = DEFAULT_FORMATS
    # The uploader's state on this machine: the reader page links the recording it names.
    state_file: Path | None = None


@dataclass
class PollReport:
    outcomes: Counter[PollOutcome] = field(default_factory=Counter)
    fatal: str | None = None
    # Transcripts brought home with lines an edit was refused for (kept as recognised):
    # source file -> lines. Delivered, so not a failure; said so that a reader checks them.
    lines_refused: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0: all handled (or nothing to do); 1: something was left in the queue, is missing
        or broke."""
        return 1 if self.fatal or any(self.outcomes[o] for o in NEEDS_ATTENTION) else 0

    def summary(self) -> dict[str, Any]:
        counts: dict[str, Any] = {o.value: n for o, n in self.outcomes.items() if n}
        if self.lines_refused:
            counts["lines_refused"] = sum(self.lines_refused.values())
            counts["with_refused_edits"] = sorted(self.lines_refused)
        return {**counts, "fatal": self.fatal} if self.fatal else counts


def check_output_dir(output_dir: Path) -> None:
    """Fail before taking any message when the output folder cannot be written."""
    write_bytes_atomic(output_dir / f".write-test{TEMP_SUFFIX}", b"")
    with contextlib.suppress(OSError):
        (output_dir / f".write-test{TEMP_SUFFIX}").unlink()


def sweep_temp_files(output_dir: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Remove temporary files a killed run left behind (never a finished output)."""
    removed = 0
    cutoff = time.time() - older_than
    for folder, _, names in os.walk(output_dir):
        for name in names:
            path = Path(folder) / name
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
    return removed


@dataclass(frozen=True)
class HomeBuild:
    """What a format built here needs besides the document: its file, the recording's home."""

    target: Path
    bucket: str
    state_file: Path | None


# The formats built here from the corrected JSON (``OutputFormat.built_at_home``).
HOME_BUILDERS: Final[dict[OutputFormat, Callable[[TranscriptDocument, HomeBuild], bytes]]] = {
    OutputFormat.DOCX: lambda document, _build: transcript_docx(document),
    OutputFormat.HTML: lambda document, build: reader.page_from_transcript(
        document, build.target, build.bucket, build.state_file
    ),
}


def failure_report_path(output_dir: Path, output_name: str) -> Path:
    """Where the failure of the recording named ``output_name`` is reported."""
    return output_dir / FAILED_FOLDER / keys.failure_report_relative_path(output_name)


def _reports_failure_of(report: Path, source_file: str) -> bool:
    """True when ``report`` is a failure report of ``source_file`` (not another recording's)."""
    try:
        written = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(written, dict) and written.get("source_file") == source_file


def _output_name(result: Result, text_key: str) -> str:
    """The name of a finished recording's files: its text key's, which is the Result's
    ``output_name`` (a Result sent before names were reserved has only the key); a Result
    whose two disagree is refused (another recording's files are not brought home as its)."""
    name = keys.stem_from_final_text_key(text_key)
    if result.output_name is not None and result.output_name != name:
        raise keys.InvalidKeyError(
            f"the result's output file {text_key} is not its output name's ({result.output_name!r})"
        )
    return name


class Poller:
    def __init__(
        self,
        s3: S3Client,
        sqs: SQSClient,
        options: PollOptions,
        stop: GracefulStop | None = None,
    ) -> None:
        self.s3 = s3
        self.sqs = sqs
        self.refused_lines: dict[str, int] = {}  # of the results handled since the last count
        self.options = options
        self.stop = stop or GracefulStop()

    def run(self) -> PollReport:
        report = PollReport()
        try:
            check_output_dir(self.options.output_dir)
        except OutputWriteError as exc:
            report.fatal = (
                f"the output folder {self.options.output_dir} is not writable: {exc.reason}"
            )
            log.error(report.fatal, extra={"output_dir": str(self.options.output_dir)})
            return report
        sweep_temp_files(self.options.output_dir)
        while not self.stop.requested:
            messages = self._receive()
            if not messages:
                if self.options.once:
                    break
                continue
            for index, message in enumerate(messages):
                if self.stop.requested:
                    self._release(messages[index:])
                    break
                try:
                    outcome = self.handle(message)
                except (OutputWriteError, ConfigurationError) as exc:
                    # Every other message would fail the same way and burn its receives.
                    report.fatal = f"stopped: {exc}; the message stays in the queue"
                    log.error(report.fatal, extra={"output_dir": str(self.options.output_dir)})
                    self._release(messages[index:])
                    return report
                report.outcomes[outcome] += 1
                report.lines_refused.update(self.refused_lines)
                self.refused_lines.clear()
        log.info("poll run finished", extra=report.summary())
        return report

    def _receive(self) -> list[MessageTypeDef]:
        try:
            with self.stop.idle():
                response = self.sqs.receive_message(
                    QueueUrl=self.options.queue_url,
                    MaxNumberOfMessages=self.options.max_messages,
                    WaitTimeSeconds=self.options.wait_seconds,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
        except StopPolling:
            return []
        except (ClientError, BotoCoreError) as exc:
            # botocore already retried; a service run waits and tries again.
            log.error("cannot receive from the results queue: %s", exc)
            if self.options.once:
                raise
            self.stop.event.wait(5)
            return []
        return list(response.get("Messages", []))

    def _release(self, messages: list[MessageTypeDef]) -> None:
        """Hand messages back at once instead of at the end of their visibility timeout."""
        for message in messages:
            with contextlib.suppress(ClientError, BotoCoreError):
                self.sqs.change_message_visibility(
                    QueueUrl=self.options.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )

    def handle(self, message: MessageTypeDef) -> PollOutcome:
        message_id = message.get("MessageId")
        receives = message.get("Attributes", {}).get("ApproximateReceiveCount")
        try:
            result = Result.from_json(message.get("Body", ""))
        except ContractError as exc:
            log.error(
                "malformed result message, left for the DLQ: %s",
                exc,
                extra={"message_id": message_id, "receive_count": receives},
            )
            return PollOutcome.MALFORMED
        with log_context(s3_key=result.source_file, job_id=result.job_id, message_id=message_id):
            try:
                if result.status == "failed":
                    outcome = self._report_failure(result)
                elif result.status == "superseded":
                    log.info("replaced by a newer upload of the same file: %s", result.error)
                    outcome = PollOutcome.SUPERSEDED
                else:
                    outcome = self._fetch_outputs(result)
            except keys.InvalidKeyError as exc:
                log.error("refused result, left for the DLQ: %s", exc)
                return PollOutcome.REFUSED
            except (OutputWriteError, ConfigurationError) as exc:
                log.error("could not fetch the result, left in the queue: %s", exc)
                raise
            except (ClientError, BotoCoreError, DownloadError) as exc:
                log.error(
                    "could not download the result, left in the queue: %s",
                    exc,
                    extra={"receive_count": receives},
                )
                return PollOutcome.DOWNLOAD_FAILED
            self._delete(message)
            return outcome

    def _delete(self, message: MessageTypeDef) -> None:
        try:
            self.sqs.delete_message(
                QueueUrl=self.options.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
        except (ClientError, BotoCoreError) as exc:
            # The files are on disk; the message comes back and is a harmless duplicate.
            log.warning("files written but the message was not deleted: %s", exc)

    def _report_failure(self, result: Result) -> PollOutcome:
        target = failure_report_path(self.options.output_dir, result.resolved_output_name)
        report = json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n"
        changed = write_bytes_atomic(target, report.encode("utf-8"))
        log.warning(
            "transcription failed: %s: %s (report %s)",
            result.source_file,
            result.error,
            target,
            extra={"error": result.error, "report": str(target), "changed": changed},
        )
        return PollOutcome.FAILURE_REPORTED

    def _report_missing(
        self, result: Result, output_name: str, missing: list[OutputFormat]
    ) -> None:
        target = failure_report_path(self.options.output_dir, output_name)
        names = ", ".join(output.value for output in missing)
        report = {
            **result.to_dict(),
            "error": f"not in the bucket: {names} (the other formats asked for were written)",
            "missing_formats": [output.value for output in missing],
        }
        text = json.dumps(report, ensure_ascii=False, indent=2) + "\n"
        write_bytes_atomic(target, text.encode("utf-8"))
        log.error(
            "%s: formats missing: %s (report %s)",
            result.source_file,
            names,
            target,
            extra={"missing_formats": report["missing_formats"], "report": str(target)},
        )

    def _fetch_outputs(self, result: Result) -> PollOutcome:
        if result.output_file is None:  # the contract requires it of a success
            raise DownloadError("the result names no output file")
        bucket, text_key = keys.parse_s3_uri(result.output_file)
        output_name = _output_name(result, text_key)
        final = keys.final_keys(output_name)
        targets: dict[OutputFormat, Path] = {}
        for output in self.options.formats:
            relative = keys.local_relative_path(final.of(output), keys.FINAL_PREFIX)
            targets[output] = self.options.output_dir / relative
        changed: list[bool] = []
        missing: list[OutputFormat] = []
        # Downloads first: a format built here reads the JSON just downloaded, if asked for.
        for output, target in sorted(targets.items(), key=lambda item: item[0].built_at_home):
            try:
                if output.built_at_home:
                    json_here = OutputFormat.JSON in targets and OutputFormat.JSON not in missing
                    body = (
                        targets[OutputFormat.JSON].read_bytes()
                        if json_here
                        else self._read(bucket, final.json)
                    )
                    build = HomeBuild(target, bucket, self.options.state_file)
                    changed.append(self._build(output, body, f"s3://{bucket}/{final.json}", build))
                else:
                    changed.append(self._download(bucket, final.of(output), target))
            except MissingOutputError:
                missing.append(output)
        if len(missing) == len(targets):
            raise MissingOutputError(f"none of {', '.join(o.value for o in missing)} is there")
        report = failure_report_path(self.options.output_dir, output_name)
        if missing:
            self._report_missing(result, output_name, missing)
        elif report.is_file() and _reports_failure_of(report, result.source_file):
            # An earlier attempt failed and a redrive succeeded: the transcript is the outcome.
            with contextlib.suppress(OSError):
                report.unlink()
                log.info("removed the earlier failure report %s", report)
        if missing:
            outcome = PollOutcome.PARTLY_WRITTEN
        else:
            outcome = PollOutcome.WRITTEN if any(changed) else PollOutcome.UNCHANGED
        written = [str(t) for o, t in targets.items() if o not in missing]
        counts = {name: getattr(result, name) for name in LineCounts._fields}
        log.info(
            "%s: %s %s",
            result.source_file,
            outcome.value,
            ", ".join(written),
            extra={"status": result.status, "files": written,
                   **{name: n for name, n in counts.items() if n is not None}},
        )  # fmt: skip
        if result.lines_refused:
            self.refused_lines[result.source_file] = result.lines_refused
            log.warning(
                "%s: %d line(s) kept as recognised: the correction proposed edits that the "
                "checks refused (translations, deletions, rewrites); `onprem status` says why",
                result.source_file,
                result.lines_refused,
                extra={"lines_refused": result.lines_refused},
            )
        return outcome

    def _build(self, output: OutputFormat, json_body: bytes, source: str, build: HomeBuild) -> bool:
        """A format made here from the corrected JSON."""
        try:
            document = TranscriptDocument.from_json(json_body)
        except ValueError as exc:
            raise DownloadError(f"{source} is not a transcript: {exc}") from None
        return write_bytes_atomic(build.target, HOME_BUILDERS[output](document, build))

    def _read(self, bucket: str, key: str) -> bytes:
        try:
            response = self.s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if is_missing_object(exc, ONPREM_READER, bucket, key):
                raise MissingOutputError(f"s3://{bucket}/{key} does not exist") from None
            raise
        with contextlib.closing(response["Body"]) as body:
            data = body.read()
        if len(data) != response["ContentLength"]:
            raise DownloadError(f"s3://{bucket}/{key}: got {len(data)} bytes")
        return data

    def _download(self, bucket: str, key: str, target: Path) -> bool:
        try:
            response = self.s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if is_missing_object(exc, ONPREM_READER, bucket, key):  # expired or deleted
                raise MissingOutputError(f"s3://{bucket}/{key} does not exist") from None
            raise
        expected = response["ContentLength"]
        body = response["Body"]

        def fill(handle: IO[bytes]) -> None:
            written = 0
            for chunk in body.iter_chunks(CHUNK):
                try:
                    handle.write(chunk)
                except OSError as exc:
                    raise OutputWriteError(target, exc) from exc
                written += len(chunk)
            if written != expected:
                raise DownloadError(f"s3://{bucket}/{key}: got {written} of {expected} bytes")

        try:
            changed = write_atomic(target, fill)
        finally:
            body.close()
        if target.stat().st_size != expected:
            raise DownloadError(f"{target} has {target.stat().st_size} bytes, not {expected}")
        return changed
