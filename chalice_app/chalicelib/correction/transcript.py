"""Correcting a timed transcript chunk by chunk, within a time budget, resumably.

The correctable lines are cut into chunks that fit the model's output limit; chunks are
corrected a few at a time. The model answers with edits, each accepted or refused on its
own (``validation.apply_edits``); an answer that is no usable list of edits (or, in the echo
format, any answer the validator refuses) is asked once more with a stricter instruction,
and a chunk refused twice keeps its original text.
Every finished chunk is saved as a checkpoint, keyed by a fingerprint of its content and
of everything the answer depends on, so that a retried or continued invocation (or a
duplicate message) never pays for the same chunk twice. When the invocation's time runs
low no new chunk is started and the report says the work is incomplete.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from chalicelib.correction.correctors import Corrector, ModelAnswer, ModelRejectedError
from chalicelib.correction.prompt import (
    NO_NEIGHBOURS,
    PROMPT_VERSION,
    Neighbours,
    PromptContext,
    chunks,
    numbered,
    user_message,
)
from chalicelib.correction.validation import (
    AnswerRefusedError,
    apply_edits,
    parse_edits,
    validate,
)
from pipeline_core.config import CONTEXT_LINES
from pipeline_core.errors import LLM_CALLER_READER, ConfigurationError, is_missing_object
from pipeline_core.timed_text import TimedLine, TimedTranscript

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkResult:
    corrected: bool
    texts: dict[int, str]  # the corrected text of every line, when corrected
    reason: str | None = None  # why the chunk kept its original text
    model_calls: int = 0
    refused: dict[int, str] = field(default_factory=dict)  # line -> why an edit was refused
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    edits_accepted: int = 0
    edits_refused: int = 0

    def to_json(self) -> dict[str, object]:
        """What a checkpoint keeps; the tokens too, so that the job's figures say what the
        whole transcript cost however many invocations it took."""
        return {"corrected": self.corrected, "texts": self.texts, "reason": self.reason,
                "refused": self.refused, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cache_read_tokens": self.cache_read_tokens,
                "cache_write_tokens": self.cache_write_tokens,
                "edits_accepted": self.edits_accepted,
                "edits_refused": self.edits_refused}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChunkResult:
        return cls(
            corrected=bool(data["corrected"]),
            texts={int(k): str(v) for k, v in data["texts"].items()},
            reason=data.get("reason"),
            refused={int(k): str(v) for k, v in (data.get("refused") or {}).items()},
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            cache_read_tokens=int(data.get("cache_read_tokens", 0)),
            cache_write_tokens=int(data.get("cache_write_tokens", 0)),
            edits_accepted=int(data.get("edits_accepted", 0)),
            edits_refused=int(data.get("edits_refused", 0)),
        )


class Checkpoints(Protocol):
    def load(self, fingerprint: str) -> ChunkResult | None: ...

    def save(self, fingerprint: str, result: ChunkResult) -> None: ...


class S3Checkpoints:
    """One small JSON object per finished chunk, below ``prefix``."""

    def __init__(self, s3: S3Client, bucket: str, prefix: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix
        self.keys: set[str] = set()

    def _key(self, fingerprint: str) -> str:
        key = f"{self._prefix}{fingerprint}.json"
        self.keys.add(key)
        return key

    def load(self, fingerprint: str) -> ChunkResult | None:
        key = self._key(fingerprint)
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"]
        except ClientError as exc:
            if is_missing_object(exc, LLM_CALLER_READER, self._bucket, key):
                return None
            raise
        return ChunkResult.from_json(json.loads(body.read()))

    def save(self, fingerprint: str, result: ChunkResult) -> None:
        self._s3.put_object(
            Bucket=self._bucket,
            Key=self._key(fingerprint),
            Body=json.dumps(result.to_json(), ensure_ascii=False).encode(),
            ContentType="application/json",
        )

    def delete_all(self) -> None:
        """Remove this transcript's checkpoints once its outputs are written."""
        keys = sorted(self.keys)
        for start in range(0, len(keys), 1000):
            self._s3.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True},
            )


class Deadline:
    """When to stop starting model calls: ``seconds`` from now (None: never)."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = None if seconds is None else clock() + seconds

    def passed(self) -> bool:
        return self._end is not None and self._clock() >= self._end


@dataclass
class CorrectionReport:
    texts: dict[int, str] = field(default_factory=dict)  # corrected lines only
    lines_total: int = 0
    lines_uncorrected: int = 0
    lines_changed: int = 0
    lines_refused: int = 0  # lines with an edit the validator refused (kept as they were)
    chunks_total: int = 0
    chunks_uncorrected: int = 0
    chunks_pending: int = 0  # not started before the deadline
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    edits_accepted: int = 0  # edits format: each edit judged on its own
    edits_refused: int = 0
    reasons: list[str] = field(default_factory=list)  # why chunks went uncorrected
    refusals: list[str] = field(default_factory=list)  # why edits were refused

    @property
    def complete(self) -> bool:
        return self.chunks_pending == 0

    @property
    def fully_corrected(self) -> bool:
        return self.complete and self.chunks_uncorrected == 0


@dataclass(frozen=True)
class CorrectionParams:
    chunk_max_chars: int
    calls_in_flight: int  # model calls at once, at most (one per chunk being corrected)
    min_similarity: float
    context_lines: int = CONTEXT_LINES


def fingerprint(
    corrector: Corrector,
    context: PromptContext,
    lines: Sequence[TimedLine],
    neighbours: Neighbours = NO_NEIGHBOURS,
) -> str:
    material = "\x1f".join(
        (PROMPT_VERSION, context.answer_format, corrector.identity, context.language_code,
         context.details, context.glossary, numbered(neighbours.before, context.marked),
         numbered(lines, context.marked), numbered(neighbours.after, context.marked))
    )  # fmt: skip
    return hashlib.sha256(material.encode()).hexdigest()[:40]


def correct_chunk(
    corrector: Corrector,
    context: PromptContext,
    lines: Sequence[TimedLine],
    min_similarity: float,
    neighbours: Neighbours = NO_NEIGHBOURS,
) -> ChunkResult:
    """One chunk: ask, validate, ask once more if refused, else keep the original."""
    reason = "no answer"
    calls = 0
    usage = _Usage()
    for attempt in range(2):
        calls += 1
        message = user_message(context, lines, attempt > 0, neighbours)
        try:
            answer = corrector.complete(context.system, message, context.tool)
        except ModelRejectedError as exc:
            reason = str(exc)
            break
        usage.add(answer)
        log.info(
            "model answered",
            extra={"first_line": lines[0].number, "attempt": attempt + 1,
                   "input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens,
                   "cache_read_tokens": answer.cache_read_tokens,
                   "cache_write_tokens": answer.cache_write_tokens},
        )  # fmt: skip
        refused: dict[int, str] = {}
        judged = (0, 0)  # edits accepted, refused
        try:
            if context.tool is None:
                texts = validate(
                    lines, answer.text, truncated=answer.truncated, min_similarity=min_similarity
                )
            else:
                edits = parse_edits(answer.tool_input, truncated=answer.truncated)
                outcome = apply_edits(lines, edits, min_similarity)
                texts = outcome.texts
                refused = {n: "; ".join(why) for n, why in outcome.refusals.items()}
                judged = (outcome.accepted, sum(map(len, outcome.refusals.values())))
        except AnswerRefusedError as exc:
            reason = str(exc)
            log.warning(
                "answer refused",
                extra={"attempt": attempt + 1, "reason": reason, "first_line": lines[0].number},
            )
            continue
        if refused:
            log.warning("edits refused", extra={"first_line": lines[0].number, "refused": refused})
        return usage.result(True, texts, calls=calls, refused=refused, judged=judged)
    return usage.result(False, {}, calls=calls, reason=reason)


@dataclass
class _Usage:
    """The tokens of a chunk's model calls, as the server reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def add(self, answer: ModelAnswer) -> None:
        self.input_tokens += answer.input_tokens
        self.output_tokens += answer.output_tokens
        self.cache_read_tokens += answer.cache_read_tokens
        self.cache_write_tokens += answer.cache_write_tokens

    def result(
        self,
        corrected: bool,
        texts: dict[int, str],
        *,
        calls: int,
        reason: str | None = None,
        refused: dict[int, str] | None = None,
        judged: tuple[int, int] = (0, 0),  # edits accepted, refused
    ) -> ChunkResult:
        return ChunkResult(
            corrected, texts, reason=reason, model_calls=calls, refused=refused or {},
            input_tokens=self.input_tokens, output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens, cache_write_tokens=self.cache_write_tokens,
            edits_accepted=judged[0], edits_refused=judged[1],
        )  # fmt: skip


def correct_transcript(
    transcript: TimedTranscript,
    *,
    corrector: Corrector,
    context: PromptContext,
    checkpoints: Checkpoints,
    deadline: Deadline,
    params: CorrectionParams,
) -> CorrectionReport:
    """Correct what the deadline allows; raises what ``corrector`` raises (after every
    chunk in flight has finished and been saved). After a ``ConfigurationError`` no further
    chunk is started."""
    correctable = transcript.correctable
    groups = chunks(correctable, params.chunk_max_chars)
    misconfigured = threading.Event()  # every further call would fail the same way

    def work(lines: list[TimedLine], neighbours: Neighbours) -> ChunkResult | None:
        key = fingerprint(corrector, context, lines, neighbours)
        saved = checkpoints.load(key)
        if saved is not None:
            return saved
        if deadline.passed() or misconfigured.is_set():
            return None
        try:
            result = correct_chunk(corrector, context, lines, params.min_similarity, neighbours)
        except ConfigurationError:
            misconfigured.set()
            raise
        checkpoints.save(key, result)
        return result

    # The pool's size is the bound on model calls in flight: a chunk's calls (a refused
    # answer's second try included) are made one after the other on its thread.
    with ThreadPoolExecutor(max_workers=params.calls_in_flight) as pool:
        # Each task runs in a copy of this context, so its log lines carry the job's fields.
        futures = []
        start = 0
        for group in groups:
            end = start + len(group)
            around = Neighbours(
                before=correctable[max(0, start - params.context_lines) : start],
                after=correctable[end : end + params.context_lines],
            )
            futures.append(pool.submit(contextvars.copy_context().run, work, group, around))
            start = end
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]
    report = CorrectionReport(chunks_total=len(groups))
    for group, future in zip(groups, futures, strict=True):
        _add(report, group, future.result())
    return report


def _add(report: CorrectionReport, lines: Iterable[TimedLine], result: ChunkResult | None) -> None:
    group = list(lines)
    report.lines_total += len(group)
    if result is None:
        report.chunks_pending += 1
        report.lines_uncorrected += len(group)
        return
    report.model_calls += result.model_calls
    report.input_tokens += result.input_tokens
    report.output_tokens += result.output_tokens
    report.cache_read_tokens += result.cache_read_tokens
    report.cache_write_tokens += result.cache_write_tokens
    report.edits_accepted += result.edits_accepted
    report.edits_refused += result.edits_refused
    if not result.corrected:
        report.chunks_uncorrected += 1
        report.lines_uncorrected += len(group)
        if result.reason and len(report.reasons) < 5:
            report.reasons.append(f"lines {group[0].number}-{group[-1].number}: {result.reason}")
        return
    for line in group:
        text = result.texts[line.number]
        report.texts[line.number] = text
        report.lines_changed += int(text != line.text.strip())
    numbers = {line.number for line in group}
    report.lines_refused += len(numbers & result.refused.keys())
    for number, why in sorted(result.refused.items()):
        if len(report.refusals) < 5:
            report.refusals.append(f"line {number}: {why}" if number else why)
