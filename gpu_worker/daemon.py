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

import contextvars
import functools
import logging
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import boto3
from botocore.config import Config

from gpu_worker.delivery.lease import MessageLease, heartbeat
from gpu_worker.delivery.messages import Malformed, read_audio_job
from gpu_worker.delivery.prefetch import HANDOVER_POLL_SECONDS, Finisher, Poll, Prefetcher
from gpu_worker.delivery.queues import AudioQueue, Received
from gpu_worker.faults import PausePoints
from gpu_worker.job.claim import (
    Action,
    Claim,
    claim_job,
    give_back_claim,
    object_version,
    resolve_job_id,
)
from gpu_worker.job.handoff import mark_transcribed, record_handed_off, report_failure, send_llm_job
from gpu_worker.lifecycle.give_back import clear_fatal_exit, record_fatal_exit
from gpu_worker.lifecycle.imds import ImdsClient
from gpu_worker.lifecycle.interruption import install_signal_handlers, watching_interruptions
from gpu_worker.lifecycle.protection import job_hooks
from gpu_worker.lifecycle.scale_to_zero import IdleClock, Leave, leave_group
from gpu_worker.lifecycle.stopping import InFlight, JobAbandonedError, StopController
from gpu_worker.speakers.diarizer import DiarizerCache
from gpu_worker.storage.download import download_audio
from gpu_worker.storage.outputs import (
    TimedFileChangedError,
    TimedSlot,
    TranscriptWriter,
    WrittenTranscript,
    check_transcript_key,
    find_written_transcript,
    write_transcripts,
)
from gpu_worker.transcription.engine_cache import EngineCache
from gpu_worker.transcription.engines import DecodeOptions, load_engine
from gpu_worker.transcription.formats import RunFigures
from gpu_worker.transcription.recognize import OpenedAudio
from gpu_worker.transcription.transcribe_step import SpeakerRequest, Transcription, transcribe_audio
from pipeline_core.config import ConfigError, WorkerSettings
from pipeline_core.contracts import ResultTopic, utc_timestamp
from pipeline_core.errors import ConfigurationError, PermanentError
from pipeline_core.glossary import UnknownGlossaryError, hotwords_for
from pipeline_core.jobs import JobField, JobTable
from pipeline_core.jsonlog import configure_logging, log_context
from pipeline_core.keys import TranscriptKeys, transcript_keys
from pipeline_core.ownership import SupersededError
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
# A timed file that keeps changing under the check is a race that outlasts this many rounds:
# the message is then retried later, like any other transient error.
TIMED_WRITE_ATTEMPTS: Final = 3
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


@dataclass
class HeldJob:
    """A valid audio job's message from its receive to its end (deleted or given back): the
    lease, its heartbeat and its place with the stop controller, and what each step learnt."""

    message: Received
    lease: MessageLease
    job: AudioJob
    bucket: str
    resources: ExitStack = field(default_factory=ExitStack)
    in_flight: InFlight = field(init=False)
    job_id: str | None = None
    claim: Claim | None = None
    written: WrittenTranscript | None = None  # by an earlier delivery
    audio: OpenedAudio | None = None  # downloaded, its first window decoded
    transcription: Transcription | None = None

    def hold(self, stop: StopController, settings: WorkerSettings, *, waiting: bool) -> None:
        """Keep the message hidden (heartbeat) and known to the stop controller until ``close``."""
        self.resources.enter_context(heartbeat(self.lease, settings.heartbeat_seconds))
        self.in_flight = self.resources.enter_context(
            stop.job(self.lease, settings.progress_log_seconds, waiting=waiting)
        )

    @property
    def keys(self) -> TranscriptKeys:
        return transcript_keys(self.job.resolved_output_name)

    @property
    def writer(self) -> TranscriptWriter:
        """Who writes the transcript, once the job is claimed."""
        assert self.claim is not None
        return TranscriptWriter(self.claim.job_id, self.job.object_key, object_version(self.job))

    def log_fields(self) -> dict[str, object]:
        return {
            "message_id": self.message.message_id,
            "receive_count": self.message.receive_count,
            "s3_key": self.job.object_key,
            "job_id": self.job_id or self.job.job_id,
        }

    def close(self) -> None:
        """The job ended: stop the heartbeat, unregister, delete the downloaded audio."""
        self.resources.close()


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
        self.hooks = job_hooks(aws.autoscaling, settings.asg_name, self.instance_id)
        self.hold_off_until = 0.0  # monotonic: after a configuration error, take no job until
        self._in_hand: set[str] = set()  # the job ids of the messages held (take_in_hand)
        self._in_hand_changed = threading.Condition()
        # Calls made beside a job's own thread, so that it does not wait for them in turn:
        # the download during the claim, the hand-off's record during the delete. Its two
        # threads live as long as the worker (idle ones do not hold up the process's exit).
        self._beside = ThreadPoolExecutor(max_workers=2, thread_name_prefix="beside")

    # ---- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Serve the Audio Queue until stopped or idle long enough: with prefetch, the next
        job is prepared and the last one handed off while the engine transcribes."""
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
                    "prefetch": self.settings.prefetch,
                    "batched_inference": self.settings.batched_inference,
                    "batched_languages": sorted(self.settings.batched_languages or ()) or None,
                },
            )
            prefetcher = Prefetcher(self.fetch_next, self.give_back)
            finisher = Finisher()
            background.callback(finisher.close)
            background.callback(prefetcher.pause)
            while self.stop.requested is None:  # until SIGTERM, a Spot notice, a rebalance
                if self.settings.prefetch:
                    held = prefetcher.take(self.stop)  # 1.-3., prepared ahead
                    if held is not None:
                        self.take_on(held, finisher.submit)  # 4. here, 5.-6. behind
                        self.idle.reset()  # idle time counts from the end of the last job
                        self.hold_off(prefetcher)
                        continue
                else:
                    message = self.poll()  # 1. long-poll for one message
                    if message is not None:
                        self.handle(message)  # 1.-6.
                        self.idle.reset()
                        continue
                finisher.wait()  # the message it holds keeps the queue from looking idle
                self.hooks.worker_idle()  # scale-in protection off
                if self.stop.requested is None and self.idle_long_enough():  # scale to zero
                    prefetcher.pause()
                    finisher.wait()
                    # The worker is idle: nothing held, nothing being finished.
                    code = self.leave_when_idle()
                    if code is not None:
                        return code
            prefetcher.pause()
            finisher.wait()
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

    def hold_off(self, prefetcher: Prefetcher[HeldJob]) -> None:
        """After a configuration error take no job for a while: the next would fail the same
        way. The job prepared meanwhile goes back."""
        if self.hold_off_until > time.monotonic():
            prefetcher.pause()
            self.stop.wait(self.hold_off_until - time.monotonic())

    # ---- one job: prepared, transcribed, handed off -------------------------------------

    def handle(self, message: Received) -> None:
        """One delivery from its receive to its end, on this thread; never raises."""
        held = self.prepare(message, waiting=False)
        if held is not None:
            self.take_on(held, lambda finish: finish())
        if self.hold_off_until > time.monotonic():
            self.stop.wait(self.settings.misconfiguration_pause_seconds)

    def fetch_next(self, halted: Callable[[], bool]) -> HeldJob | Literal[Poll.EMPTY] | None:
        """The prefetcher's step: receive one message and prepare it while the engine works
        on the job before; None when the message needed no engine."""
        if self.stop.requested is not None:  # take nothing more; the loop is ending
            time.sleep(HANDOVER_POLL_SECONDS)
            return None
        waited = self.hold_off_until - time.monotonic()
        if waited > 0:  # a configuration error: take no job for a while
            self.stop.wait(waited)
            return None
        message = self.poll()
        if message is None:
            return Poll.EMPTY
        self.idle.reset()
        if halted():  # paused while the receive waited: back at once, untouched
            lease = MessageLease(self.queue, message, self.settings.visibility_timeout_seconds)
            self.retry_later(lease, delay_seconds=0)
            return None
        return self.prepare(message, waiting=True)

    def give_back(self, held: HeldJob) -> None:
        """A prepared job nobody will take (idle exit, stop, configuration error)."""
        with log_context(**held.log_fields()):
            self.stop.release_waiting(held.in_flight, "the prefetched job was not taken")
        held.close()

    def prepare(self, message: Received, *, waiting: bool) -> HeldJob | None:
        """Steps 1-3, all that can run before the engine is free; None when the delivery
        ended here (malformed, a duplicate, failed, given back)."""
        with log_context(message_id=message.message_id, receive_count=message.receive_count):
            lease = MessageLease(self.queue, message, self.settings.visibility_timeout_seconds)
            if self.stop.requested is not None:  # arrived while stopping: give it back
                self.retry_later(lease, delay_seconds=0)
                return None
            job = read_audio_job(message.body)  # 1. validate
            if isinstance(job, Malformed):
                self.reject(lease, job)
                return None
            with log_context(s3_key=job.object_key, job_id=job.job_id):
                held = HeldJob(message, lease, job, job.bucket or self.settings.bucket)
                held.hold(self.stop, self.settings, waiting=waiting)
                if not self.settle(held, self.claim_and_fetch):
                    held.close()
                    return None
                return held

    def take_on(self, held: HeldJob, run_finish: Callable[[Callable[[], None]], None]) -> None:
        """Step 4 on this thread, then ``run_finish`` runs steps 5-6 (here or behind)."""
        with log_context(**held.log_fields()):
            if not self.stop.start(held.in_flight, self.settings.progress_log_seconds):
                logger.warning("the prefetched job was released before the engine was free")
                held.close()
                return
            self.hooks.job_started()  # scale-in protection on
            if not self.settle(held, self.transcribe):
                held.close()
                return
        run_finish(functools.partial(self.finish, held))

    def finish(self, held: HeldJob) -> None:
        try:
            with log_context(**held.log_fields()):
                self.settle(held, self.hand_off)
        finally:
            held.close()

    def settle(self, held: HeldJob, step: Callable[[HeldJob], bool]) -> bool:
        """Run one step of a held job: True when the job goes on to its next step; False when
        it ended, which a failure does as the job's kind of failure calls for."""
        lease, job = held.lease, held.job
        try:
            try:
                return step(held)
            except SupersededError as exc:  # a newer upload's outputs hold the name
                with log_context(job_id=held.job_id):
                    self.fail_job(lease, job, held.job_id, str(exc), superseded=True)
            except PermanentError as exc:  # retrying will not help: fail the job with the reason
                with log_context(job_id=held.job_id):
                    self.fail_job(lease, job, held.job_id, f"{job.object_key}: {exc}")
        except JobAbandonedError:
            logger.warning("abandoned the job; another worker will take it")
        except ConfigurationError as exc:
            self.hold_off_until = time.monotonic() + self.settings.misconfiguration_pause_seconds
            self.keep_for_after_the_fix(lease, job, exc)
        except Exception as exc:  # not the file's fault: let the message come back
            if held.message.receive_count >= self.settings.max_receives:
                self.give_up(lease, job, exc)
            else:
                logger.exception("the job failed; the message will be delivered again")
                self.retry_later(lease, backoff=True)
        return False

    def claim_and_fetch(self, held: HeldJob) -> bool:
        """Steps 2-3: claim the job, and fetch and decode what the engine will need."""
        in_flight, job = held.in_flight, held.job
        self.pauses.after("received", in_flight.check)
        if held.bucket != self.settings.bucket:  # its role may not read it: a 403, not this job
            raise ForeignBucketError(
                f"the message names bucket {held.bucket!r}; this deployment serves "
                f"{self.settings.bucket!r}"
            )
        held.job_id = resolve_job_id(self.aws.s3, held.bucket, job)
        with log_context(job_id=held.job_id):
            self.take_in_hand(held)
            # A first delivery is downloaded while it is claimed: the claim almost always
            # says transcribe, and a download that turns out not to be needed is only read.
            early = self.start_download(held) if held.message.receive_count == 1 else None
            claim = claim_job(self.table, held.job_id, job, held.bucket, self.worker_id)  # 2.
            held.claim = claim
            logger.info(CLAIM_LOG[claim.action], extra={"action": claim.action.value})
            if claim.action is Action.SKIP:  # a duplicate or a redelivery of done work
                held.lease.delete()
                return False
            if claim.action is Action.TRANSCRIBE:  # a prefetched job given back is unclaimed
                in_flight.undo_on_release(
                    functools.partial(give_back_claim, self.table, claim, self.worker_id)
                )
            self.pauses.after("claimed", in_flight.check)
            if claim.action is Action.TRANSCRIBE:
                # Only an earlier attempt can have written this job's transcript: a first
                # one does not look (the check before the write covers the rest).
                held.written = (
                    find_written_transcript(
                        self.aws.s3, self.settings.bucket, held.keys, held.writer
                    )
                    if claim.attempt > 1
                    else None
                )
                if held.written is not None:
                    logger.info("the transcript was written by an earlier delivery; not redoing it")
                else:
                    path = (early or self.start_download(held)).result()  # 3.
                    self.pauses.after("downloaded", in_flight.check)
                    held.audio = held.resources.enter_context(closing(OpenedAudio(path)))
            self.pauses.after("prefetched", in_flight.check)
            return True

    def start_download(self, held: HeldJob) -> Future[Path]:
        """Step 3 on a ``beside`` thread, into a folder that lives as long as ``held``; the
        job does not end before the download does, so the folder is never removed under it."""
        folder = held.resources.enter_context(tempfile.TemporaryDirectory(prefix="gpu-worker-"))
        download = self._beside.submit(
            contextvars.copy_context().run,
            download_audio,
            self.aws.s3,
            held.bucket,
            held.job.object_key,
            object_version(held.job),
            Path(folder),
        )
        held.resources.callback(futures.wait, [download])
        return download

    def take_in_hand(self, held: HeldJob) -> None:
        """Mark the job as in this worker's hands until ``held`` ends. Should another delivery
        of it be in hand already (a duplicate message, prefetched while the first is
        transcribed), wait for that one to end: this one then finds its outcome instead of
        claiming the job a second time."""
        assert held.job_id is not None
        with self._in_hand_changed:
            if held.job_id in self._in_hand:
                logger.info("another delivery of this job is in hand; waiting for its outcome")
            while held.job_id in self._in_hand:
                held.in_flight.check()
                self._in_hand_changed.wait(HANDOVER_POLL_SECONDS)
            self._in_hand.add(held.job_id)
        held.resources.callback(self.let_go, held.job_id)

    def let_go(self, job_id: str) -> None:
        with self._in_hand_changed:
            self._in_hand.discard(job_id)
            self._in_hand_changed.notify_all()

    def transcribe(self, held: HeldJob) -> bool:
        """Step 4, unless an earlier delivery wrote the transcript or only the hand-off is left."""
        if held.audio is None:
            return True
        in_flight, job, claim = held.in_flight, held.job, held.claim
        assert claim is not None

        def check() -> None:
            in_flight.check()
            self.pauses.after("mid_transcription", in_flight.check)

        def report(percent: float) -> None:
            if in_flight.progress.elapsed() < self.settings.progress_log_seconds:
                return  # nobody watches a job shorter than one report interval
            try:
                self.table.update_fields(
                    claim.job_id, {JobField.PROGRESS_PERCENT: round(percent, 1)}
                )
            except Exception:  # progress is for people watching; the job goes on
                logger.warning("could not record the progress", exc_info=True)

        engine = self.engines.for_language(job.language_code)  # 4.
        count = requested_count(job.speakers, self.settings.default_speakers)
        held.transcription = transcribe_audio(
            engine,
            held.audio,
            job.language_code,
            in_flight.progress,
            check,
            on_report=report,
            speakers=None if count is None else SpeakerRequest(count, self.diarizers),
            hotwords=self.hotwords(job),
        )
        held.audio.close()  # its decoded window is not kept while the job is handed off
        held.audio = None
        return True

    def hand_off(self, held: HeldJob) -> bool:
        """Steps 5-6: write the transcript, mark the job, send the LLM job, delete."""
        in_flight, job, claim = held.in_flight, held.job, held.claim
        assert claim is not None
        job_id = claim.job_id
        if claim.action is Action.TRANSCRIBE:
            written = held.written or self.write(held)  # 5.
            in_flight.check()
            if not mark_transcribed(self.table, job_id, written):
                logger.info("another delivery of this job finished it first")
                held.lease.delete()
                return False
            self.pauses.after("marked_transcribed", in_flight.check)
            timed_key, timed_version = written.keys.timed, written.timed_version_id
        else:  # what the delivery that transcribed it recorded
            recorded = claim.record.attributes if claim.record is not None else {}
            timed_key = str(recorded.get(JobField.TIMED_KEY) or held.keys.timed)
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
        # The record and the delete at once: either may come first. A delete without the
        # record loses nothing (the LLM job is out and this message is gone); only a
        # duplicate message of the upload would send a second LLM job, which the LLM
        # Caller's claim turns away, as it does after a crash before the record.
        recording = self._beside.submit(
            contextvars.copy_context().run, record_handed_off, self.table, job_id
        )
        held.lease.delete()
        try:
            recording.result()
        except Exception:
            logger.warning(
                "could not record that the LLM job was sent; the message is deleted",
                exc_info=True,
            )
        logger.info("job handed to the LLM Caller", extra={"timed_key": timed_key})
        return True

    def write(self, held: HeldJob) -> WrittenTranscript:
        result, claim, job = held.transcription, held.claim, held.job
        assert result is not None
        assert claim is not None
        figures = RunFigures(
            source_key=job.object_key,
            job_id=claim.job_id,
            language=job.language_code,
            model=result.model,
            audio_seconds=result.audio_seconds,
            transcribe_seconds=result.transcribe_seconds,
            diarize_seconds=result.diarize_seconds,
        )
        # A first attempt writes at once, each file only where its key is empty (a new
        # recording's name is): the name's check, a round trip, is made when a key is not.
        slot: TimedSlot | None = None
        taken_key: str | None = None  # a file the unchecked write found at the name
        for attempt in range(1, TIMED_WRITE_ATTEMPTS + 1):
            held.in_flight.check()
            if claim.attempt > 1 or attempt > 1:
                slot = check_transcript_key(
                    self.aws.s3, self.settings.bucket, held.keys, held.writer, taken_key=taken_key
                )
            try:
                written = write_transcripts(
                    self.aws.s3, self.settings.bucket, held.keys, result, figures, slot=slot
                )
                break
            except TimedFileChangedError as exc:
                # A file at the name: an earlier upload's (a newer one's ends this job
                # superseded), or another upload of the same file wrote at the same moment.
                if attempt == TIMED_WRITE_ATTEMPTS:
                    raise
                taken_key = exc.key
                logger.info(
                    "the transcript's name holds a file; checking whose",
                    extra={"key_taken": exc.key},
                )
        self.pauses.after("transcript_written", held.in_flight.check)
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

    def fail_job(
        self,
        lease: MessageLease,
        job: AudioJob,
        job_id: str | None,
        reason: str,
        *,
        superseded: bool = False,
    ) -> None:
        """``fail`` for a job whose message was read: its Result names its files and language."""
        self.fail(
            lease,
            job.object_key,
            job_id,
            reason,
            language=job.language,
            output_name=job.resolved_output_name,
            superseded=superseded,
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
        superseded: bool = False,
    ) -> None:
        """The job's one outcome is a failure (or, ``superseded``, a newer upload's outputs
        took its place): the Result (and job row) first, then the message goes; a report
        that raises leaves the message to the caller."""
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
            superseded=superseded,
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
            # No group, no other worker: a message in flight is one of ours coming back, and
            # one may have come back while the prefetcher was paused for this check.
            depth = self.queue.depth()
            if not depth.nothing_waiting or depth.in_flight > 0:
                return None
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
            batched_languages=settings.batched_languages,
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
