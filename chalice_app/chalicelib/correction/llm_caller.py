"""The LLM Caller: one timed transcript in, a corrected transcript and a ``Result`` out.

Job state moves ``transcribed -> correcting -> succeeded`` (or ``failed``). Duplicate LLM
jobs are harmless: a succeeded job is answered from the job table without a model call (its
Result sent again where an invocation died before sending it; so is the failure Result of a
job this stage failed), and while one invocation corrects a job (it holds a lease in the job
table) a duplicate leaves it alone. A transcript too long for one invocation continues in a
fresh LLM Queue message, resuming from the chunks already saved.

Errors that may pass (Bedrock throttling after botocore's retries, 5xx, timeouts) are
recorded as the job's ``last_error`` and raised, so that the message comes back (after
``RETRY_DELAY_SECONDS``) and, after the queue's third receive, lands in its DLQ. On that last
receive the user still gets an outcome: the transcript, with whatever chunks could not be
corrected left as recognised, marked ``success_uncorrected``. A misconfiguration (a retired or
unknown model, no model access, a missing permission: ``ConfigurationError``) takes the same
path through the queue and its DLQ alarm, but its last receive fails the job with a Result
that says what to fix: it is not the transcript's fault, and quietly delivering every job
uncorrected would hide it.

A transcript is only corrected when it carries its job's id (``pipeline_core.ownership``),
and the final files are only written where no other recording's are: either mismatch
fails the job with a reason, never delivering or overwriting another recording's text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.correction.corrected_document import (
    CorrectionSource,
    corrected_document,
    matching_segments,
)
from chalicelib.correction.correctors import Corrector
from chalicelib.correction.prompt import PromptContext, glossary_text, low_confidence_marked
from chalicelib.correction.transcript import (
    CorrectionParams,
    CorrectionReport,
    Deadline,
    S3Checkpoints,
    correct_transcript,
)
from pipeline_core import keys, subtitles
from pipeline_core.config import LlmCallerSettings
from pipeline_core.contracts import (
    ContractError,
    LineCounts,
    LlmJob,
    Result,
    ResultStatus,
    ResultTopic,
    send_result,
    send_to_queue,
    utc_timestamp,
)
from pipeline_core.errors import (
    LLM_CALLER_READER,
    ConfigurationError,
    head_if_present,
    is_missing_object,
)
from pipeline_core.glossary import UnknownGlossaryError, choose, glossary_named
from pipeline_core.jobs import (
    ACTIVE_STATES,
    JobField,
    JobRecord,
    JobState,
    JobTable,
    Lease,
    Moved,
)
from pipeline_core.jsonlog import log_context
from pipeline_core.ownership import (
    OutputTakenError,
    Owner,
    SupersededError,
    json_version_of,
    owner_metadata,
)
from pipeline_core.timed_text import TimedTranscript, parse, render_plain, render_timed
from pipeline_core.transcript_document import TranscriptDocument

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

MAX_GLOSSARY_CHARS = 20_000
FAILED_BY = "llm-caller"  # JobField.FAILED_BY of a job this stage failed


@dataclass(frozen=True)
class LlmCallerClients:
    s3: S3Client
    sqs: SQSClient
    dynamodb: DynamoDBClient
    sns: Any = None  # an SNS client, for the notification topic when the settings name one


def _send_result(
    clients: LlmCallerClients, settings: LlmCallerSettings, result: Result, language: str | None
) -> None:
    """The Result to the Results Queue and, where one is configured, the notification topic."""
    topic = ResultTopic.configured(clients.sns, settings.notification_topic_arn)
    send_result(clients.sqs, settings.results_queue_url, result, topic=topic, language=language)


@dataclass(frozen=True)
class Delivery:
    """One SQS message as the event source mapping hands it over."""

    body: str
    receive_count: int = 1
    receipt_handle: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Delivery:
        attributes = record.get("attributes") or {}
        return cls(
            body=record["body"],
            receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
            receipt_handle=record.get("receiptHandle"),
        )


class CorrectionOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    CONTINUED = "continued"  # time ran out; a fresh message carries on
    DUPLICATE = "duplicate"  # the job was already finished
    BUSY = "busy"  # another invocation is correcting this job right now
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a newer upload of the same file delivers the outputs


def handle_llm_message(
    delivery: Delivery,
    clients: LlmCallerClients,
    settings: LlmCallerSettings,
    corrector: Corrector | None,
    remaining_seconds: float | None = None,
) -> CorrectionOutcome:
    """Handle one LLM Queue message; ``remaining_seconds`` is the invocation's time left."""
    try:
        job = LlmJob.from_json(delivery.body)
    except ContractError as exc:
        return _malformed(delivery, exc, clients, settings)
    with log_context(s3_key=job.source_key or job.timed_key, job_id=job.job_id):
        budget = None
        if remaining_seconds is not None:
            budget = max(0.0, remaining_seconds - settings.time_reserve_seconds)
        return _Correction(
            job=job,
            delivery=delivery,
            clients=clients,
            settings=settings,
            corrector=corrector,
            deadline=Deadline(budget),
        ).run()


def _malformed(
    delivery: Delivery, exc: ContractError, clients: LlmCallerClients, settings: LlmCallerSettings
) -> CorrectionOutcome:
    """A message that breaks the contract: fail its job if it names one, else raise so
    that it ends in the DLQ (it cannot be tied to an upload)."""
    try:
        data = json.loads(delivery.body)
        job_id = data.get("job_id") if isinstance(data, dict) else None
    except ValueError:
        job_id = None
    table = JobTable(clients.dynamodb, settings.job_table)
    record = table.get(job_id) if isinstance(job_id, str) and job_id else None
    if record is None or record.state.is_final:
        log.error("malformed LLM job, no job to fail", extra={"error": str(exc)})
        raise exc
    with log_context(s3_key=record.s3_key, job_id=record.job_id):
        reason = f"the LLM job message is malformed: {exc}"
        log.error(reason)
        if table.fail(record.job_id, reason, by=FAILED_BY):
            result = Result.failure(
                record.s3_key, reason, job_id=record.job_id, output_name=record.output_name
            )
            _send_result(clients, settings, result, record.language)
            table.update_fields(record.job_id, {JobField.RESULT_SENT_AT: utc_timestamp()})
    return CorrectionOutcome.FAILED


class _Correction:
    def __init__(
        self,
        *,
        job: LlmJob,
        delivery: Delivery,
        clients: LlmCallerClients,
        settings: LlmCallerSettings,
        corrector: Corrector | None,
        deadline: Deadline,
    ) -> None:
        self.job = job
        self.delivery = delivery
        self.clients = clients
        self.settings = settings
        self.corrector = corrector
        self.deadline = deadline
        self.table = JobTable(clients.dynamodb, settings.job_table)
        self.lease = Lease(
            JobField.CORRECTION_LEASE_UNTIL, str(uuid.uuid4()), settings.lease_seconds
        )
        self.tracked = False
        self.released = False  # the lease given back (or lapsed with the move to succeeded)
        self.passes = 1
        self.source_file = job.source_key
        work_id = job.job_id or hashlib.sha256(job.timed_key.encode()).hexdigest()[:32]
        self.json_version_id: str | None = None  # set from the timed transcript's metadata
        self.recognised: TranscriptDocument | None = None  # the worker's JSON, when readable
        self.checkpoints = S3Checkpoints(clients.s3, settings.bucket, keys.llm_work_prefix(work_id))

    # -- entry ---------------------------------------------------------------------------

    def run(self) -> CorrectionOutcome:
        # The claim comes first, without a GetItem: its answer is the row, as claimed or as
        # it stood when the claim was refused (finished, or held by another invocation).
        claimed = self._claim()
        record = claimed.record if claimed is not None else None
        if record is None:
            log.warning("LLM job without a job-table record: corrected, but not tracked")
        else:
            self.source_file = self.source_file or record.s3_key
            if record.state is JobState.SUCCEEDED:
                return self._already_succeeded(record)
            if record.state is JobState.FAILED:
                return self._already_failed(record)
            assert claimed is not None
            if not claimed.moved:
                log.info("another invocation is correcting this job; duplicate left alone")
                return CorrectionOutcome.BUSY
            self.tracked = True
            self.passes = int(record.attributes.get(JobField.CORRECTION_PASSES, 1))
        if not self.source_file:
            self.source_file = keys.AUDIO_PREFIX + self.job.stem
            log.warning("source file unknown; named after the transcript")
        try:
            return self._correct()
        except Exception as exc:
            self._after_error(exc)
            raise
        finally:
            self._release()

    def _claim(self) -> Moved | None:
        """The lease on the job's row, moving it to ``correcting``; None: no job id."""
        if not self.job.job_id:
            return None
        return self.table.claim_and_read(
            self.job.job_id,
            self.lease,
            states=ACTIVE_STATES,
            to=JobState.CORRECTING,
            count=JobField.CORRECTION_PASSES,
        )

    def _release(self) -> None:
        if self.tracked and self.job.job_id and not self.released:
            self.table.release(self.job.job_id, self.lease)
            self.released = True

    # -- the work ------------------------------------------------------------------------

    def _correct(self, *, final: bool = False) -> CorrectionOutcome:
        read = self._read_transcript()
        if read is None:
            return self._fail(f"the transcript {self.job.timed_key} does not exist")
        text, owner, self.json_version_id = read
        if self.job.job_id and owner.job_id != self.job.job_id:
            return self._fail(
                f"the transcript {self.job.timed_key} belongs to {owner.describe()}, not to "
                f"{self.source_file} (job {self.job.job_id}); another recording's text is "
                "not delivered"
            )
        transcript = parse(text)
        self.recognised = self._recognised_document()
        if self.corrector is None:
            report = CorrectionReport(lines_total=len(transcript.correctable))
            report.lines_uncorrected = report.lines_total
            return self._finish(transcript, report, "none")
        try:
            glossary = self._glossary()
        except UnknownGlossaryError as exc:
            return self._fail(f"the LLM job's glossary: {exc}")
        deadline = Deadline(0) if final else self.deadline
        report = correct_transcript(
            transcript,
            corrector=self.corrector,
            context=PromptContext(
                self.job.language_code,
                self.job.details,
                glossary,
                self.settings.correction_format,
                self._low_confidence(transcript),
            ),
            checkpoints=self.checkpoints,
            deadline=deadline,
            params=CorrectionParams(
                self.settings.chunk_max_chars,
                self.settings.model_calls_in_flight,
                self.settings.min_line_similarity,
                self.settings.context_lines,
            ),
        )
        if not report.complete and not final:
            # An untracked job has no pass count to bound its continuations: it finishes now.
            can_continue = self.tracked and self.settings.llm_queue_url is not None
            if can_continue and self.passes < self.settings.max_passes:
                return self._continue_later(report)
            log.warning(
                "correction stopped unfinished; the rest stays as recognised",
                extra={"passes": self.passes, "chunks_pending": report.chunks_pending},
            )
        return self._finish(transcript, report, self.corrector.identity)

    def _read_transcript(self) -> tuple[str, Owner, str | None] | None:
        """The timed transcript's text, the recording it names and the version of the JSON
        written with it; None when missing."""
        request: dict[str, Any] = {"Bucket": self.settings.bucket, "Key": self.job.timed_key}
        if self.job.timed_version_id:  # the worker's own write, whatever replaced it since
            request["VersionId"] = self.job.timed_version_id
        try:
            body = self.clients.s3.get_object(**request)
        except ClientError as exc:
            if is_missing_object(exc, LLM_CALLER_READER, self.settings.bucket, self.job.timed_key):
                return None
            raise
        text = body["Body"].read().decode("utf-8", errors="replace")
        metadata = body.get("Metadata", {})
        return text, Owner.of(metadata), json_version_of(metadata)

    def _glossary(self) -> str:
        """The glossary text for the prompt: the recording's domain glossary (the one its
        job names; a job from before glossaries were chosen: the one its details mention),
        then the deployment's own terms (``GLOSSARY_KEY``), at most ``MAX_GLOSSARY_CHARS``."""
        name = choose(self.job.glossary, self.job.details, None)
        log.info("glossary chosen", extra={"glossary": name})
        domain = glossary_named(name)
        text = glossary_text(domain, self.job.language_code, self._deployment_glossary())
        if len(text) > MAX_GLOSSARY_CHARS:
            log.warning("glossary cut to %d characters", MAX_GLOSSARY_CHARS)
        return text[:MAX_GLOSSARY_CHARS]

    def _low_confidence(self, transcript: TimedTranscript) -> dict[int, str]:
        """The lines with words the recogniser was unsure of, marked for the model."""
        lines = transcript.correctable
        segments = matching_segments(lines, self.recognised, self.job.job_id)
        threshold = self.settings.low_confidence_probability
        if segments is None or threshold <= 0:
            return {}
        marked = low_confidence_marked(lines, segments, threshold)
        log.info("low-confidence words marked", extra={"lines_marked": len(marked)})
        return marked

    def _deployment_glossary(self) -> str:
        key = self.settings.glossary_key
        if not key:
            return ""
        try:
            body = self.clients.s3.get_object(Bucket=self.settings.bucket, Key=key)["Body"]
        except ClientError as exc:
            if is_missing_object(exc, LLM_CALLER_READER, self.settings.bucket, key):
                log.warning("glossary object missing; correcting without it", extra={"key": key})
                return ""
            raise
        return body.read().decode("utf-8", errors="replace")

    def _continue_later(self, report: CorrectionReport) -> CorrectionOutcome:
        assert self.settings.llm_queue_url is not None
        done = report.chunks_total - report.chunks_pending
        if self.tracked and self.job.job_id:
            self.table.update_fields(
                self.job.job_id,
                {JobField.CHUNKS_TOTAL: report.chunks_total, JobField.CHUNKS_DONE: done},
            )
        self._release()  # before the send: the continuation must find the job free
        send_to_queue(self.clients.sqs, self.settings.llm_queue_url, self.job)
        log.info(
            "time is short; correction continues in a new message",
            extra={"chunks_done": done, "chunks_total": report.chunks_total},
        )
        return CorrectionOutcome.CONTINUED

    def _finish(
        self, transcript: TimedTranscript, report: CorrectionReport, model: str
    ) -> CorrectionOutcome:
        final = keys.final_keys(self.job.stem)
        try:
            self._write_outputs(final, transcript, report, model)
        except OutputTakenError as exc:
            return self._fail(str(exc))
        except SupersededError as exc:
            return self._fail(str(exc), superseded=True)
        corrected = self.corrector is not None and report.fully_corrected
        status: ResultStatus = "success" if corrected else "success_uncorrected"
        bucket = self.settings.bucket
        result = Result.success(
            self.source_file or "",
            keys.s3_uri(bucket, final.text),
            status=status,
            timed_output_file=keys.s3_uri(bucket, final.timed),
            job_id=self.job.job_id,
            output_name=self.job.stem,
            line_counts=LineCounts(
                lines_corrected=report.lines_changed,
                lines_refused=report.lines_refused,
                lines_left=report.lines_total - report.lines_changed,
            ),
        )
        figures: dict[str, Any] = {
            JobField.RESULT_STATUS: status,
            JobField.OUTPUT_FILE: result.output_file,
            JobField.TIMED_OUTPUT_FILE: result.timed_output_file,
            JobField.CORRECTOR: model,
            JobField.LINES_TOTAL: report.lines_total,
            JobField.LINES_CORRECTED: report.lines_total - report.lines_uncorrected,
            JobField.LINES_UNCORRECTED: report.lines_uncorrected,
            JobField.LINES_CHANGED: report.lines_changed,
            JobField.LINES_REFUSED: report.lines_refused,
            JobField.CHUNKS_TOTAL: report.chunks_total,
            JobField.CHUNKS_UNCORRECTED: report.chunks_uncorrected + report.chunks_pending,
            JobField.MODEL_CALLS: report.model_calls,
            JobField.INPUT_TOKENS: report.input_tokens,
            JobField.OUTPUT_TOKENS: report.output_tokens,
            JobField.CACHE_READ_TOKENS: report.cache_read_tokens,
            JobField.CACHE_WRITE_TOKENS: report.cache_write_tokens,
        }
        if report.reasons:
            figures[JobField.UNCORRECTED_REASONS] = "; ".join(report.reasons)[:2000]
        if report.refusals:
            figures[JobField.REFUSED_EDITS] = "; ".join(report.refusals)[:2000]
        log.info("transcript corrected", extra=figures)
        if self.tracked and self.job.job_id:
            # The lease is given back in the same update: a succeeded job is claimed by no one,
            # so a separate release would be a call that changes nothing.
            moved = self.table.transition(
                self.job.job_id,
                JobState.SUCCEEDED,
                expected=[JobState.CORRECTING],
                fields={**figures, self.lease.field: 0},
            )
            self.released = moved
            if not moved:
                # Already succeeded (an earlier attempt of this message whose result send
                # failed, or a duplicate that took over a lapsed lease): its record decides.
                record = self.table.get(self.job.job_id)
                if record is not None and record.state is JobState.SUCCEEDED:
                    return self._already_succeeded(record)
                log.warning("the job left 'correcting' meanwhile; no result sent")
                return CorrectionOutcome.DUPLICATE
        self._send_result(result)
        if self.tracked and self.job.job_id:
            self.table.update_fields(self.job.job_id, {JobField.RESULT_SENT_AT: utc_timestamp()})
        try:
            self.checkpoints.delete_all()
        except ClientError:
            log.warning("checkpoints not deleted; the bucket's lifecycle rule will", exc_info=True)
        return CorrectionOutcome.SUCCEEDED

    def _send_result(self, result: Result) -> None:
        _send_result(self.clients, self.settings, result, self.job.language)

    def _write_outputs(
        self,
        final: keys.FinalKeys,
        transcript: TimedTranscript,
        report: CorrectionReport,
        model: str,
    ) -> None:
        """Every format of the corrected text: the text, timed text, JSON and subtitles.

        Raises, having written nothing, ``SupersededError`` when a newer upload of the same
        source has written its transcript under this job's name since this job's (the
        worker lets only the newest upload write over another's: the transcript's name
        holds the newest), and ``OutputTakenError`` when any of the final keys holds another
        recording's final output.
        """
        newer = self._newer_transcript_owner()
        if newer is not None:
            raise SupersededError(self.source_file or "", self.job.timed_key, newer)
        for key in self._final_keys_present(final):
            self._check_final_output_free(key)
        source = CorrectionSource(
            job_id=self.job.job_id,
            source_key=self.source_file or "",
            language=self.job.language_code,
            corrector=model,
        )
        document = corrected_document(transcript, report.texts, self.recognised, source)
        bodies = {
            keys.OutputFormat.TXT: render_plain(transcript, report.texts),
            keys.OutputFormat.TIMED: render_timed(transcript, report.texts),
            keys.OutputFormat.JSON: document.to_json(),
            keys.OutputFormat.SRT: subtitles.srt(document),
            keys.OutputFormat.VTT: subtitles.vtt(document),
        }
        for output in keys.FINAL_OUTPUT_FORMATS:
            self._put(final.of(output), bodies[output], output.content_type)

    def _check_final_output_free(self, key: str) -> None:
        """Raise ``OutputTakenError`` when ``key`` holds another recording's final output;
        an untracked job (no job id) only replaces an output of its own source (an older
        upload's: ``_newer_transcript_owner`` found no newer one)."""
        head = head_if_present(self.clients.s3, LLM_CALLER_READER, self.settings.bucket, key)
        if head is None:
            return
        owner = Owner.of(head.get("Metadata", {}))
        source = self.source_file or ""
        if not owner.may_be_replaced_by(self.job.job_id or "", source):
            raise OutputTakenError(key, owner, source)

    def _newer_transcript_owner(self) -> Owner | None:
        """The job of another upload of this source whose transcript is at the timed key now
        (its latest version, not the one this job corrects); None when it is this job's, or
        for an untracked job (no job id to tell uploads apart)."""
        if not self.job.job_id:
            return None
        head = head_if_present(
            self.clients.s3, LLM_CALLER_READER, self.settings.bucket, self.job.timed_key
        )
        if head is None:
            return None
        owner = Owner.of(head.get("Metadata", {}))
        same_source = owner.source_key == self.source_file
        return owner if same_source and owner.job_id not in (None, self.job.job_id) else None

    def _final_keys_present(self, final: keys.FinalKeys) -> list[str]:
        """Those of the final formats' keys that hold an object, from one listing of their
        common prefix (``final-output/<name>.``) rather than a HEAD of each: only these can
        hold another recording's output. A first delivery finds none."""
        wanted = {final.of(output) for output in keys.FINAL_OUTPUT_FORMATS}
        prefix = posixpath.commonprefix(sorted(wanted))
        present: list[str] = []
        pages = self.clients.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.bucket, Prefix=prefix
        )
        for page in pages:
            present += [item["Key"] for item in page.get("Contents", []) if item["Key"] in wanted]
        return sorted(present)

    def _put(self, key: str, text: str, content_type: str) -> None:
        """Every final output is written here: stamped with its recording."""
        self.clients.s3.put_object(
            Bucket=self.settings.bucket,
            Key=key,
            Body=text.encode("utf-8"),
            ContentType=content_type,
            Metadata=owner_metadata(self.job.job_id, self.source_file),
        )

    def _recognised_document(self) -> TranscriptDocument | None:
        """The worker's JSON of this job's transcript (words and timings), if readable: the
        version its timed transcript names (``corrected_document`` uses it only when it
        names this job)."""
        key = keys.transcript_keys_of_timed(self.job.timed_key).json
        request: dict[str, Any] = {"Bucket": self.settings.bucket, "Key": key}
        if self.json_version_id:
            request["VersionId"] = self.json_version_id
        try:
            body = self.clients.s3.get_object(**request)
        except ClientError as exc:
            if is_missing_object(exc, LLM_CALLER_READER, self.settings.bucket, key):
                log.warning(
                    "no recognised JSON; subtitles without word timings", extra={"key": key}
                )
                return None
            raise
        try:
            return TranscriptDocument.from_json(body["Body"].read())
        except ValueError as exc:
            log.warning(
                "the recognised JSON is malformed; not used",
                extra={"key": key, "error": str(exc)[:500]},
            )
            return None

    def _fail(self, reason: str, *, superseded: bool = False) -> CorrectionOutcome:
        if superseded:
            log.warning("superseded by a newer upload of the same file: %s", reason)
        else:
            log.error("correction failed: %s", reason)
        job_id = self.job.job_id
        if (
            self.tracked
            and job_id
            and not self.table.fail(job_id, reason, superseded=superseded, by=FAILED_BY)
        ):
            return CorrectionOutcome.DUPLICATE
        result = Result.failure(
            self.source_file or "",
            reason,
            job_id=job_id,
            output_name=self.job.stem,
            superseded=superseded,
        )
        self._send_result(result)
        if self.tracked and self.job.job_id:
            self.table.update_fields(self.job.job_id, {JobField.RESULT_SENT_AT: utc_timestamp()})
        return CorrectionOutcome.SUPERSEDED if superseded else CorrectionOutcome.FAILED

    def _after_error(self, exc: Exception) -> None:
        """Record why, then either give the user their outcome (last receive) or ask SQS
        to bring the message back after the retry delay."""
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        if isinstance(exc, ConfigurationError):
            log.error("the LLM Caller is misconfigured: %s", exc.problem, extra={"fix": exc.fix})
        else:
            log.error("correction attempt failed", extra={"error": reason})
        if self.tracked and self.job.job_id:
            self.table.update_fields(
                self.job.job_id,
                {JobField.LAST_ERROR: reason, JobField.LAST_ERROR_AT: utc_timestamp(),
                 JobField.RECEIVE_COUNT: self.delivery.receive_count},
            )  # fmt: skip
        if self.delivery.receive_count >= self.settings.max_receives:
            if isinstance(exc, ConfigurationError):
                transcript = keys.s3_uri(self.settings.bucket, self.job.timed_key)
                self._fail(f"{exc} (the uncorrected transcript is {transcript})")
            else:
                self._last_chance(reason)
        # The lease goes back before the message can: a receive that came first would find
        # the job held, leave it as a duplicate and end its last message.
        try:
            self._release()
        except ClientError:
            log.warning("lease not given back; it lapses by itself", exc_info=True)
        # Back after the retry delay, not the queue's 90-minute visibility timeout; after the
        # last receive that is when the message moves to the DLQ (and its alarm fires).
        if self.delivery.receipt_handle and self.settings.llm_queue_url:
            try:
                self.clients.sqs.change_message_visibility(
                    QueueUrl=self.settings.llm_queue_url,
                    ReceiptHandle=self.delivery.receipt_handle,
                    VisibilityTimeout=self.settings.retry_delay_seconds,
                )
            except ClientError:
                log.warning("could not shorten the message's visibility", exc_info=True)

    def _last_chance(self, reason: str) -> None:
        """The queue will not deliver this message again: finish with what is corrected."""
        log.error("last receive failed; the rest stays uncorrected", extra={"error": reason})
        try:
            self._correct(final=True)
        except Exception:
            log.exception("could not write the uncorrected transcript either")
            self._fail(f"correction failed after {self.delivery.receive_count} attempts: {reason}")

    def _already_failed(self, record: JobRecord) -> CorrectionOutcome:
        """A job failed already: by this stage, whose Result may not have gone out (the
        invocation died between the mark and the send), it is sent now, once (a lease on the
        row, so that two duplicates do not both send it); by another stage, nothing to do."""
        attributes = record.attributes
        resend = (
            attributes.get(JobField.FAILED_BY) == FAILED_BY
            and JobField.RESULT_SENT_AT not in attributes
            and self.table.claim(
                record.job_id,
                self.lease,
                states=[JobState.FAILED],
                unless_present=JobField.RESULT_SENT_AT,
            )
        )
        if not resend:
            log.info("LLM job for a failed job ignored", extra={"error": record.error})
            return CorrectionOutcome.DUPLICATE
        try:
            result = Result.failure(
                self.source_file or record.s3_key,
                record.error or "correction failed",
                job_id=record.job_id,
                output_name=record.output_name,
                superseded=attributes.get(JobField.RESULT_STATUS) == "superseded",
            )
            self._send_result(result)
            self.table.update_fields(record.job_id, {JobField.RESULT_SENT_AT: utc_timestamp()})
        finally:
            self.table.release(record.job_id, self.lease)
        log.warning("failure result re-sent: an earlier invocation died before sending it")
        return CorrectionOutcome.DUPLICATE

    def _already_succeeded(self, record: JobRecord) -> CorrectionOutcome:
        attributes = record.attributes
        if JobField.RESULT_SENT_AT not in attributes and attributes.get(JobField.OUTPUT_FILE):
            counted = (JobField.LINES_TOTAL, JobField.LINES_CHANGED, JobField.LINES_REFUSED)
            total, changed, refused = (int(attributes.get(field, 0)) for field in counted)
            result = Result.success(
                self.source_file or record.s3_key,
                attributes[JobField.OUTPUT_FILE],
                status=attributes.get(JobField.RESULT_STATUS, "success"),
                timed_output_file=attributes.get(JobField.TIMED_OUTPUT_FILE),
                job_id=record.job_id,
                output_name=record.output_name,
                line_counts=LineCounts(changed, refused, total - changed),
            )
            self._send_result(result)
            self.table.update_fields(record.job_id, {JobField.RESULT_SENT_AT: utc_timestamp()})
            log.warning("result re-sent: an earlier invocation died before sending it")
        else:
            log.info("LLM job for a succeeded job: nothing to do")
        return CorrectionOutcome.DUPLICATE
