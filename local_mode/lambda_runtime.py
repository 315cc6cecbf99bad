"""Runs Lambda handlers in-process the way their AWS event sources would invoke them.

moto's Lambda needs Docker, which this project does not assume; the handlers are plain
callables (the Chalice app's registered handlers), so they are called here with the same
event payloads AWS sends:
- an SQS event source mapping: batches of messages from a queue, at most ``max_concurrency``
  invocations at once (the function's reserved concurrency), the batch deleted on success and
  left on the queue on failure, so that the queue's redrive policy moves a message to its DLQ
  after ``maxReceiveCount`` receives, exactly as in AWS;
- S3 bucket notifications, which moto delivers to an SQS queue; each becomes the S3 event
  an asynchronously invoked Lambda receives.
One difference, on purpose: after a failed invocation the message's visibility is cut to a
few seconds, where AWS waits out the queue's full visibility timeout (up to 90 minutes for the
LLM Queue). The number of attempts is the same; only the wait is shortened.

An asynchronous invocation (S3 -> the Dispatcher) is retried as Lambda retries it
(``AsyncInvocation``: the first attempt and ``max_retry_attempts`` more, the delays between
them shortened), then its invocation record goes to the on-failure destination, sent with the
function's role as Lambda sends it. The maximum event age is not emulated: nothing here is
throttled. A schedule (EventBridge) invokes its function every so often (``ScheduleTrigger``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from pipeline_core.reconcile import invocation_record

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    """The parts of Lambda's context object handlers use."""

    function_name: str
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        elapsed = time.monotonic() - self._started
        return max(0, int((self.timeout_seconds - elapsed) * 1000))


@dataclass
class InvocationStats:
    invocations: int = 0
    failures: int = 0
    max_concurrency_seen: int = 0
    _running: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def started(self) -> None:
        with self._lock:
            self.invocations += 1
            self._running += 1
            self.max_concurrency_seen = max(self.max_concurrency_seen, self._running)

    def finished(self, failed: bool) -> None:
        with self._lock:
            self._running -= 1
            self.failures += int(failed)


def sqs_event(messages: list[MessageTypeDef], queue_arn: str, region: str) -> dict[str, Any]:
    """The event an SQS event source mapping hands to the function."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for message in messages
        ]
    }


def s3_notification_event(
    messages: list[MessageTypeDef], queue_arn: str, region: str
) -> dict[str, Any] | None:
    """The S3 event a bucket notification delivers; None for S3's ``s3:TestEvent``."""
    records: list[Any] = []
    for message in messages:
        body = json.loads(message["Body"])
        records.extend(body.get("Records", []))
    return {"Records": records} if records else None


def with_version_ids(
    s3: S3Client,
) -> Callable[[list[MessageTypeDef], str, str], dict[str, Any] | None]:
    """``s3_notification_event``, with each record's ``versionId`` filled in.

    S3 puts the new version's id in every notification of a versioned bucket, and the
    Dispatcher keys jobs on it (a new version is a new job, and the worker reads exactly
    that version). moto's notifications leave it out; it is looked up here as the version
    whose ETag the record carries (versions with equal ETags hold the same bytes).
    """

    def make(messages: list[MessageTypeDef], queue_arn: str, region: str) -> dict[str, Any] | None:
        event = s3_notification_event(messages, queue_arn, region)
        for record in (event or {}).get("Records", []):
            obj = record.get("s3", {}).get("object", {})
            if obj.get("versionId") or not obj.get("eTag"):
                continue
            bucket = record["s3"]["bucket"]["name"]
            key = unquote_plus(obj["key"])
            versions: list[Any]
            try:
                versions = list(
                    s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
                )
            except Exception:  # a key moto cannot list (control characters): the current one
                try:
                    head = s3.head_object(Bucket=bucket, Key=key)
                except Exception:
                    log.warning("no version id for the notification; the ETag keys the job")
                    continue
                versions = [
                    {"Key": key, "ETag": head.get("ETag", ""), "VersionId": head.get("VersionId")}
                ]
            for version in versions:
                same = (
                    version.get("Key") == key and version.get("ETag", "").strip('"') == obj["eTag"]
                )
                if same and version.get("VersionId") not in (None, "null"):
                    obj["versionId"] = version["VersionId"]
                    break
        return event

    return make


@dataclass(frozen=True)
class AsyncInvocation:
    """How Lambda handles a failed asynchronous invocation (PutFunctionEventInvokeConfig)."""

    function_arn: str
    max_retry_attempts: int
    # Before each retry; Lambda waits about 1 and 2 minutes, shortened here.
    retry_delays_seconds: tuple[int, ...]
    # Sends the invocation record (as JSON) to the on-failure destination.
    send_on_failure: Callable[[str], None]

    @property
    def max_attempts(self) -> int:
        return 1 + self.max_retry_attempts

    def retry_delay(self, attempts_made: int) -> int:
        delays = self.retry_delays_seconds
        return delays[min(attempts_made, len(delays)) - 1] if delays else 0


def _request_id(message: MessageTypeDef) -> str:
    """One event, one request id across its retries (as Lambda keeps it)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, message["MessageId"]))


class QueueTrigger:
    """Polls a queue and invokes ``handler`` like an event source mapping would (or, with
    ``asynchronous``, like Lambda's queue of asynchronous invocations: one event a message)."""

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        queue_arn: str,
        handler: Handler,
        *,
        function_name: str,
        make_event: Callable[[list[MessageTypeDef], str, str], dict[str, Any] | None] = sqs_event,
        batch_size: int = 1,
        max_concurrency: int = 3,
        timeout_seconds: int = 900,
        retry_after_seconds: int = 2,
        region: str = "us-east-1",
        asynchronous: AsyncInvocation | None = None,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._handler = handler
        self._function_name = function_name
        self._make_event = make_event
        self._batch_size = batch_size
        self._max_concurrency = max_concurrency
        self._timeout = timeout_seconds
        self._retry_after = retry_after_seconds
        self._region = region
        self._asynchronous = asynchronous
        self.stats = InvocationStats()
        self._slots = threading.Semaphore(max_concurrency)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix=function_name)
        self._poller = threading.Thread(target=self._poll, name=f"{function_name}-poller")

    def start(self) -> None:
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        self._poller.join()
        self._pool.shutdown(wait=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            try:
                response = self._sqs.receive_message(
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=min(self._batch_size, 10),
                    WaitTimeSeconds=1,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception:
                self._slots.release()
                log.exception("polling failed; retrying", extra={"function": self._function_name})
                self._stop.wait(1)
                continue
            messages = response.get("Messages", [])
            if not messages:
                self._slots.release()
                continue
            self._pool.submit(self._invoke, messages)

    def _invoke(self, messages: list[MessageTypeDef]) -> None:
        self.stats.started()
        failed = False
        event: dict[str, Any] | None = None
        try:
            event = self._make_event(messages, self._queue_arn, self._region)
            if event is not None:
                context = LambdaContext(self._function_name, self._timeout)
                if self._asynchronous is not None:  # one request id across the retries
                    context = LambdaContext(
                        self._function_name, self._timeout, _request_id(messages[0])
                    )
                self._handler(event, context)
        except Exception as exc:
            failed = True
            if self._asynchronous is not None and event is not None:
                self._failed_asynchronously(messages[0], event, exc, self._asynchronous)
            else:
                self._retry_later(messages, exc, self._retry_after)
        else:
            self._delete(messages)
        finally:
            self.stats.finished(failed)
            self._slots.release()

    def _retry_later(self, messages: list[MessageTypeDef], exc: Exception, delay: int) -> None:
        log.warning(
            "invocation failed; the messages go back to the queue",
            extra={"function": self._function_name, "error": f"{type(exc).__name__}: {exc}"},
        )
        for message in messages:
            self._sqs.change_message_visibility(
                QueueUrl=self._queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=delay,
            )

    def _failed_asynchronously(
        self,
        message: MessageTypeDef,
        event: dict[str, Any],
        exc: Exception,
        config: AsyncInvocation,
    ) -> None:
        attempts = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        if attempts < config.max_attempts:
            self._retry_later([message], exc, config.retry_delay(attempts))
            return
        record = invocation_record(
            payload=event,
            function_arn=config.function_arn,
            request_id=_request_id(message),
            invoke_count=attempts,
            error=exc,
            now=datetime.now(UTC),
        )
        try:
            config.send_on_failure(json.dumps(record))
        except Exception:
            # Lambda then counts a DestinationDeliveryFailures metric and drops the event.
            log.exception(
                "the invocation record could not reach the on-failure destination; dropped",
                extra={"function": self._function_name},
            )
        else:
            log.error(
                "invocation failed all its attempts; its record went to the on-failure destination",
                extra={"function": self._function_name, "attempts": attempts, "error": str(exc)},
            )
        self._delete([message])

    def _delete(self, messages: list[MessageTypeDef]) -> None:
        self._sqs.delete_message_batch(
            QueueUrl=self._queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


# The event EventBridge hands a function on its schedule (Chalice's CloudWatchEvent).
def scheduled_event(rule_arn: str, region: str, account: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


class ScheduleTrigger:
    """Invokes ``handler`` every ``every_seconds`` like an EventBridge schedule rule."""

    def __init__(
        self,
        handler: Handler,
        *,
        function_name: str,
        every_seconds: float,
        make_event: Callable[[], dict[str, Any]],
        timeout_seconds: int = 300,
    ) -> None:
        self._handler = handler
        self._function_name = function_name
        self._every = every_seconds
        self._make_event = make_event
        self._timeout = timeout_seconds
        self.stats = InvocationStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{function_name}-schedule")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def invoke(self) -> Any:
        """One invocation now, as the schedule makes it; its error is raised."""
        self.stats.started()
        failed = True
        try:
            result = self._handler(
                self._make_event(), LambdaContext(self._function_name, self._timeout)
            )
            failed = False
            return result
        finally:
            self.stats.finished(failed)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.invoke()
            except Exception:
                log.exception(
                    "scheduled invocation failed", extra={"function": self._function_name}
                )
