"""The GPU worker daemon: Audio Queue -> Whisper -> transcripts in S3 -> LLM Queue.

``Worker.run`` is the loop and ``Worker.process`` the steps of one job; every step is a
small function in the package named for what it does (``delivery``, ``job``, ``storage``,
``transcription``; ``lifecycle`` stops the worker). At-least-once delivery is made harmless
by the job table (``job.claim``), the transcript's commit mark (``storage.outputs``) and the
order of the final writes (``job.handoff``); a crash or SIGKILL at any point loses nothing.

Exit codes: 0 stopped as asked (idle, SIGTERM, Spot notice), 1 unexpected failure (systemd
restarts the daemon), 2 bad configuration (systemd does not). A fatal exit leaves its cause
for ``lifecycle.give_back``, which gives the instance back once the unit has failed for good.
"""

from __future__ import annotations

import functools
import logging
import socket
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.config import Config

from gpu_worker.delivery.lease import MessageLease, heartbeat
from gpu_worker.delivery.messages import Malformed, read_audio_job
from gpu_worker.delivery.queues import AudioQueue, Received
from gpu_worker.faults import PausePoints
from gpu_worker.job.claim import Action, Claim, claim_job, object_version, resolve_job_id
from gpu_worker.job.handoff import mark_transcribed, record_handed_off, report_failure, send_llm_job
from gpu_worker.lifecycle.give_back import clear_fatal_exit, record_fatal_exit
from gpu_worker.lifecycle.imds import ImdsClient
from gpu_worker.lifecycle.interruption import install_signal_handlers, watching_interruptions
from gpu_worker.lifecycle.scale_to_zero import IdleClock, Leave, leave_group
from gpu_worker.lifecycle.stopping import InFlight, JobAbandonedError, StopController
from gpu_worker.speakers.diarizer import DiarizerCache
from gpu_worker.storage.download import download_audio
from gpu_worker.storage.outputs import WrittenTranscript, find_written_transcript, write_transcripts
from gpu_worker.transcription.engine_cache import EngineCache
from gpu_worker.transcription.engines import DecodeOptions, load_engine
from gpu_worker.transcription.formats import RunFigures
from gpu_worker.transcription.transcribe_step import SpeakerRequest, transcribe_audio
from pipeline_core.config import ConfigError, WorkerSettings
from pipeline_core.contracts import ResultTopic, utc_timestamp
from pipeline_core.errors import ConfigurationError, PermanentError
from pipeline_core.glossary import UnknownGlossaryError, hotwords_for
from pipeline_core.jobs import JobField, JobTable
from pipeline_core.jsonlog import configure_logging, log_context
from pipeline_core.keys import transcript_keys
from pipeline_core.speakers import requested_count

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from pipeline_core.contracts import AudioJob

logger = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
MAX_LOGGED_BODY: Final = 4000
RECEIVE_ERROR_BACKOFF_SECONDS: Final = 5.0
CLAIM_LOG: Final = {
    Action.TRANSCRIBE: "claimed the job",
    Action.HAND_OFF: "the job was transcribed already; handing it off again",
    Action.SKIP: "the job is done already; deleting this delivery",
}


@dataclass(frozen=True)
class AwsClients:
    sqs: SQSClient
    s3: S3Client
    dynamodb: DynamoDBClient
    autoscaling: AutoScalingClient
    sns: Any = None  # an SNS client, for the notification topic when the settings name one

    @classmethod
    def from_environment(cls) -> AwsClients:
        """Region, credentials and ``AWS_ENDPOINT_URL`` (tests) come from the environment."""
        config = Config(retries={"mode": "standard", "max_attempts": 5}, read_timeout=70)
        return cls(
            sqs=boto3.client("sqs", config=config),
            s3=boto3.client("s3", config=config),
            dynamodb=boto3.client("dynamodb", config=config),
            autoscaling=boto3.client("autoscaling", config=config),
            sns=boto3.client("sns", config=config),
        )


class ModelLoadError(RuntimeError):
    """The default model does not load: no job can be done on this instance."""


class ForeignBucketError(PermanentError):
    """An audio job that names a bucket other than the deployment's."""


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        aws: AwsClients,
        engines: EngineCache,
        stop: StopController,
        *,
        imds: ImdsClient | None = None,
        worker_id: str | None = None,
        diarizers: DiarizerCache | None = None,
    ) -> None:
        self.settings = settings
        self.diarizers = diarizers or DiarizerCache(settings.diarizer, settings.device)
        self.aws = aws
        self.engines = engines
        self.stop = stop
        self.imds = imds
        self.worker_id = worker_id or settings.instance_id or socket.gethostname()
        self.queue = AudioQueue(
            aws.sqs,
            settings.audio_queue_url,
            settings.poll_wait_seconds,
            settings.visibility_timeout_seconds,
        )
        self.table = JobTable(aws.dynamodb, settings.job_table)
        self.results_topic = ResultTopic.configured(aws.sns, settings.notification_topic_arn)
        self.idle = IdleClock(settings.idle_shutdown_seconds)
        self.pauses = PausePoints(settings.pause_after_step)

    # ---- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Serve the Audio Queue, one message at a time, until stopped or idle long enough."""
        with ExitStack() as background:
            background.enter_context(self.stop.enforcing())
            background.enter_context(
                watching_interruptions(self.imds, self.stop, self.settings.spot_poll_seconds)
            )
            logger.info(
                "worker started",
                extra={
                    "worker_id": self.worker_id,
                    "engine": self.settings.engine,
                    "models": dict(self.settings.models),
                    "audio_queue_url": self.settings.audio_queue_url,
                    "asg_name": self.settings.asg_name,
                },
            )
            while self.stop.requested is None:  # until SIGTERM, a Spot notice, a rebalance
                message = self.poll()  # 1. long-poll for one message
                if message is not None:
                    self.handle(message)  # 1.-6.
                    self.idle.reset()  # idle time counts from the end of the last job
                elif self.idle_long_enough():  # scale to zero
                    code = self.leave_when_idle()
                    if code is not None:
                        return code
            return self.leave_on_stop()

    def poll(self) -> Received | None:
        try:
            return self.queue.receive_one()
        except Exception:  # SQS unreachable for a while: keep trying, never crash
            logger.exception("could not poll the Audio Queue")
            self.stop.wait(RECEIVE_ERROR_BACKOFF_SECONDS)
            return None

    def idle_long_enough(self) -> bool:
        try:
            return self.idle.expired(self.queue.depth())
        except Exception:
            logger.exception("could not read the Audio Queue's depth")
            return False

    def handle(self, message: Received) -> None:
        """One delivery: validate, then process under a heartbeat; never raises."""
        with log_context(message_id=message.message_id, receive_count=message.receive_count):
            lease = MessageLease(self.queue, message, self.settings.visibility_timeout_seconds)
            if self.stop.requested is not None:  # arrived while stopping: give it back
                self.retry_later(lease, delay_seconds=0)
                return
            job = read_audio_job(message.body)  # 1. validate
            if isinstance(job, Malformed):
                self.reject(lease, job)
                return
            misconfigured = False
            with (
                log_context(s3_key=job.object_key, job_id=job.job_id),
                heartbeat(lease, self.settings.heartbeat_seconds),
                self.stop.job(lease, self.settings.progress_log_seconds) as in_flight,
            ):
                try:
                    self.process(job, lease, in_flight)
                except JobAbandonedError:
                    logger.warning("abandoned the job; another worker will take it")
                except ConfigurationError as exc:
                    misconfigured = True
                    self.keep_for_after_the_fix(lease, job, exc)
                except Exception as exc:  # not the file's fault: let the message come back
                    if message.receive_count >= self.settings.max_receives:
                        self.give_up(lease, job, exc)
                    else:
                        logger.exception("the job failed; the message will be delivered again")
                        self.retry_later(lease, backoff=True)
            if misconfigured:  # the next job would fail the same way: take none for a while
                self.stop.wait(self.settings.misconfiguration_pause_seconds)

    def process(self, job: AudioJob, lease: MessageLease, in_flight: InFlight) -> None:
        """The steps of one job; each ``pauses.after`` is a point a test may kill us at."""
        bucket = job.bucket or self.settings.bucket
        self.pauses.after("received", in_flight.check)
        job_id = None
        try:
            if bucket != self.settings.bucket:  # its role may not read it: a 403, not this job
                raise ForeignBucketError(
                    f"the message names bucket {bucket!r}; this deployment serves "
                    f"{self.settings.bucket!r}"
                )
            job_id = resolve_job_id(self.aws.s3, bucket, job)
            with log_context(job_id=job_id):
                claim = claim_job(self.table, job_id, job, bucket, self.worker_id)  # 2.
                logger.info(CLAIM_LOG[claim.action], extra={"action": claim.action.value})
                if claim.action is Action.SKIP:  # a duplicate or a redelivery of done work
                    lease.delete()
                    return
                self.pauses.after("claimed", in_flight.check)
                if claim.action is Action.TRANSCRIBE:
                    written = self.transcribe(job, bucket, claim, in_flight)  # 3.-5.
                    in_flight.check()
                    if not mark_transcribed(self.table, job_id, written):
                        logger.info("another delivery of this job finished it first")
                        lease.delete()
                        return
                    self.pauses.after("marked_transcribed", in_flight.check)
                    timed_key, timed_version = written.keys.timed, written.timed_version_id
                else:  # what the delivery that transcribed it recorded
                    record = self.table.get(job_id)
                    recorded = record.attributes if record is not None else {}
                    timed_key = str(
                        recorded.get(JobField.TIMED_KEY)
                        or transcript_keys(job.resolved_output_name).timed
                    )
                    timed_version = recorded.get(JobField.TIMED_VERSION_ID)
                send_llm_job(
                    self.aws.sqs,
                    self.settings.llm_queue_url,
                    job,
                    job_id,
                    timed_key=timed_key,
                    timed_version_id=timed_version,
                )
                self.pauses.after("llm_job_sent", in_flight.check)  # 6.
                record_handed_off(self.table, job_id)
                self.pauses.after("handed_off", in_flight.check)
                lease.delete()
                logger.info("job handed to the LLM Caller", extra={"timed_key": timed_key})
        except PermanentError as exc:
            # Retrying will not help: fail the job with the reason.
            with log_context(job_id=job_id):
                self.fail_job(lease, job, job_id, f"{job.object_key}: {exc}")

    def transcribe(
        self, job: AudioJob, bucket: str, claim: Claim, in_flight: InFlight
    ) -> WrittenTranscript:
        """Steps 3-5, unless an earlier delivery already wrote this job's transcript."""
        keys = transcript_keys(job.resolved_output_name)
        written = find_written_transcript(
            self.aws.s3, self.settings.bucket, keys, claim.job_id, job.object_key
        )
        if written is not None:
            logger.info("the transcript was written by an earlier delivery; not redoing it")
            return written
        with tempfile.TemporaryDirectory(prefix="gpu-worker-") as folder:
            path = download_audio(  # 3.
                self.aws.s3, bucket, job.object_key, object_version(job), Path(folder)
            )
            self.pauses.after("downloaded", in_flight.check)

            def check() -> None:
                in_flight.check()
                self.pauses.after("mid_transcription", in_flight.check)

            def report(percent: float) -> None:
                try:
                    self.table.update_fields(
                        claim.job_id, {JobField.PROGRESS_PERCENT: round(percent, 1)}
                    )
                except Exception:  # progress is for people watching; the job goes on
                    logger.warning("could not record the progress", exc_info=True)

            engine = self.engines.for_language(job.language_code)  # 4.
            count = requested_count(job.speakers, self.settings.default_speakers)
            result = transcribe_audio(
                engine,
                path,
                job.language_code,
                in_flight.progress,
                check,
                on_report=report,
                speakers=None if count is None else SpeakerRequest(count, self.diarizers),
                hotwords=self.hotwords(job),
            )
        figures = RunFigures(
            source_key=job.object_key,
            job_id=claim.job_id,
            language=job.language_code,
            model=result.model,
            audio_seconds=result.audio_seconds,
            transcribe_seconds=result.transcribe_seconds,
            diarize_seconds=result.diarize_seconds,
        )
        in_flight.check()
        written = write_transcripts(self.aws.s3, self.settings.bucket, keys, result, figures)  # 5.
        self.pauses.after("transcript_written", in_flight.check)
        return written

    def hotwords(self, job: AudioJob) -> str | None:
        """The terms of the job's glossary for the engine's prompt, when the settings say so.

        A glossary this worker does not know (its AMI is older than the Lambdas that chose
        it) costs the recording only its prompt: the Dispatcher checked the name, and the
        LLM Caller, which has it, still corrects with it."""
        if not self.settings.glossary_hotwords:
            return None
        try:
            return hotwords_for(job.glossary, job.details, job.language_code) or None
        except UnknownGlossaryError as exc:
            logger.warning(
                "the job's glossary is unknown to this worker; transcribing without its terms",
                extra={"error": str(exc)},
            )
            return None

    # ---- the ways out of a job --------------------------------------------------------

    def reject(self, lease: MessageLease, malformed: Malformed) -> None:
        """A message that is not a valid audio job: fail it where we can, else DLQ it."""
        body = lease.message.body
        with log_context(s3_key=malformed.source_key, job_id=malformed.job_id):
            logger.error(
                "malformed Audio Queue message: %s",
                malformed.reason,
                extra={"body": body[:MAX_LOGGED_BODY], "body_length": len(body)},
            )
            if malformed.source_key is None:  # nobody to tell: the DLQ takes it
                self.retry_later(lease)
                return
            try:
                self.fail(
                    lease,
                    malformed.source_key,
                    malformed.job_id,
                    f"{malformed.source_key}: {malformed.reason}",
                )
            except Exception:
                logger.exception("could not report the malformed message")
                self.retry_later(lease)

    def keep_for_after_the_fix(
        self, lease: MessageLease, job: AudioJob, exc: ConfigurationError
    ) -> None:
        """A configuration error (a grant the role lacks): the recording is not at fault,
        so the job is not failed, even on the last delivery. The reason goes to the log and
        the job row; the message goes back, and after its last receive to the DLQ, whose
        alarm fires and from which it is redriven once the configuration is fixed."""
        logger.error(
            "configuration error, the job is kept for after the fix: %s",
            exc,
            extra={
                "error": str(exc),
                "pause_seconds": self.settings.misconfiguration_pause_seconds,
            },
        )
        if job.job_id is not None:
            try:
                self.table.update_fields(
                    job.job_id,
                    {JobField.LAST_ERROR: str(exc)[:1000], JobField.LAST_ERROR_AT: utc_timestamp()},
                )
            except Exception:
                logger.warning("could not record the configuration error", exc_info=True)
        self.retry_later(lease, self.settings.misconfiguration_pause_seconds)

    def give_up(self, lease: MessageLease, job: AudioJob, exc: Exception) -> None:
        """The last delivery failed too: fail the job with a reason the user can read.

        Without this the message would reach the DLQ after its last receive and the user
        would never hear of the recording. Should even the report fail (SQS down), the
        message goes back and the DLQ (with its alarm) keeps it.
        """
        count = lease.message.receive_count
        reason = (
            f"{job.object_key}: gave up after {count} attempts; "
            f"last error: {type(exc).__name__}: {exc}"
        )
        logger.error("the job failed on its last delivery", exc_info=exc)
        job_id: str | None = job.job_id
        if job_id is None:
            try:
                job_id = resolve_job_id(self.aws.s3, job.bucket or self.settings.bucket, job)
            except Exception:
                job_id = None
        try:
            record = self.table.get(job_id) if job_id is not None else None
            if record is not None and record.state.is_final:  # one outcome per job, never two
                logger.info("the job has its outcome already; not failing it")
                lease.delete()
                return
            self.fail_job(lease, job, job_id, reason)
        except Exception:
            logger.exception("could not report the failure; the DLQ will keep the message")
            self.retry_later(lease)

    def fail_job(self, lease: MessageLease, job: AudioJob, job_id: str | None, reason: str) -> None:
        """``fail`` for a job whose message was read: its Result names its files and language."""
        self.fail(
            lease,
            job.object_key,
            job_id,
            reason,
            language=job.language,
            output_name=job.resolved_output_name,
        )

    def fail(
        self,
        lease: MessageLease,
        source_key: str,
        job_id: str | None,
        reason: str,
        *,
        language: str | None = None,
        output_name: str | None = None,
    ) -> None:
        """The job's one outcome is a failure: the Result (and job row) first, then the
        message goes; a report that raises leaves the message to the caller."""
        report_failure(
            self.aws.sqs,
            self.settings.results_queue_url,
            self.table,
            source_key=source_key,
            job_id=job_id,
            reason=reason,
            topic=self.results_topic,
            language=language,
            output_name=output_name,
        )
        lease.delete()

    def retry_later(
        self, lease: MessageLease, delay_seconds: int | None = None, *, backoff: bool = False
    ) -> None:
        """Let the message come back after a short delay (the DLQ counts the receives).

        With ``backoff`` the delay grows with each delivery (1x, 2x, 4x ...), so that a
        dependency that is down gets time to come back before the last try.
        """
        delay = self.settings.retry_delay_seconds if delay_seconds is None else delay_seconds
        if backoff:
            delay = min(delay * 2 ** max(0, lease.message.receive_count - 1), 12 * 3600)
        try:
            lease.release(delay)
        except Exception:  # it comes back anyway when its visibility timeout runs out
            logger.warning("could not shorten the message's visibility", exc_info=True)

    # ---- leaving ----------------------------------------------------------------------

    def leave_when_idle(self) -> int | None:
        """Queue empty for ``idle_shutdown_seconds``: exit, or leave the ASG; None: stay."""
        if self.settings.asg_name is None:
            logger.info("the Audio Queue stayed empty; exiting (no Auto Scaling group)")
            return EXIT_OK
        return self.leave_group(stay_if_busy=True)

    def leave_on_stop(self) -> int:
        request = self.stop.requested
        reason = request.reason if request else "?"
        logger.warning("stopped taking work: %s", reason, extra={"stop_reason": reason})
        if request is not None and request.deadline is None and self.settings.asg_name:
            # A rebalance advice: the instance is still ours, hand the work to a new one.
            return self.leave_group(stay_if_busy=False) or EXIT_OK
        return EXIT_OK

    def instance_id(self) -> str:
        if self.settings.instance_id is not None:
            return self.settings.instance_id
        if self.imds is None:
            raise ConfigError("IMDS_ENDPOINT or WORKER_INSTANCE_ID is needed with GPU_ASG_NAME")
        return self.imds.instance_id()

    def leave_group(self, stay_if_busy: bool) -> int | None:
        assert self.settings.asg_name is not None
        try:
            outcome = leave_group(
                self.aws.autoscaling,
                self.queue,
                self.settings.asg_name,
                self.instance_id(),
                stay_if_busy=stay_if_busy,
            )
        except Exception:  # systemd restarts us, and the next idle period tries again
            logger.exception("could not leave the Auto Scaling group")
            return EXIT_FAILURE
        if outcome is Leave.STAY:
            self.idle.reset()
            return None
        logger.warning("left the Auto Scaling group", extra={"outcome": outcome.value})
        return EXIT_OK


def main() -> int:
    """Entry point of ``gpu-worker`` and ``python -m gpu_worker``."""
    configure_logging("INFO", service="gpu-worker")
    clear_fatal_exit()
    try:
        settings = WorkerSettings.from_env()
        configure_logging(settings.log_level, service="gpu-worker")
        PausePoints(settings.pause_after_step)
        if settings.asg_name and not (settings.imds_endpoint or settings.instance_id):
            raise ConfigError(
                "environment variable IMDS_ENDPOINT (or WORKER_INSTANCE_ID) is required with "
                "GPU_ASG_NAME: the worker must know its instance to leave the group"
            )
    except ConfigError as exc:
        logger.error("bad configuration: %s", exc)
        record_fatal_exit(EXIT_CONFIG, f"bad configuration: {exc}")
        return EXIT_CONFIG
    stop = StopController()
    install_signal_handlers(stop)
    try:
        imds = ImdsClient(settings.imds_endpoint) if settings.imds_endpoint else None
        worker_id = settings.instance_id or (imds.instance_id() if imds is not None else None)
        options = DecodeOptions(
            beam_size=settings.beam_size,
            batch_size=settings.batch_size,
            batched=settings.batched_inference,
        )
        engines = EngineCache(
            settings.engine,
            settings.models,
            settings.device,
            loader=functools.partial(load_engine, options=options),
        )
        try:
            engines.for_language("*")  # load the default model now: fail fast, warm first job
        except Exception as exc:
            raise ModelLoadError(
                f"could not load the default model {settings.models['*']!r} with the "
                f"{settings.engine} engine on {settings.device}: {type(exc).__name__}: {exc}"
            ) from exc
        worker = Worker(
            settings, AwsClients.from_environment(), engines, stop, imds=imds, worker_id=worker_id
        )
        return worker.run()
    except Exception as exc:
        logger.exception("the worker failed: %s", exc)
        record_fatal_exit(EXIT_FAILURE, f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
