"""The corrected transcript as a ``TranscriptDocument``, from which ``.json``, ``.srt`` and
``.vtt`` are written (``pipeline_core.subtitles``), like the worker's.

The timings come from the worker's own ``.json`` (``transcriptions/<name>.json``), which the
LLM Caller reads beside the timed transcript rather than having them carried in the LLM
job: a lecture's word timings run to megabytes, far past an SQS message's limit, the worker
writes that file anyway, and the LLM Caller's role already reads ``transcriptions/``. The
JSON is used only when it is this job's (same job id) and its segments are the timed
transcript's lines; otherwise (an older worker, a transcript written by hand) each line's
own timing prefix gives its segment's times, without words, and subtitles share a
segment's time among its words in proportion to their length. Speakers come from the
worker's JSON too, or else from the lines' prefixes; correction never changes them.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline_core.timed_text import TimedLine, TimedTranscript, one_line, prefix_times
from pipeline_core.transcript_document import (
    SegmentRecord,
    TranscriptDocument,
    WordRecord,
    seconds,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorrectionSource:
    """What the corrected document says about where it came from."""

    job_id: str | None  # None: an LLM job without one (then any matching JSON is used)
    source_key: str
    language: str
    corrector: str


def corrected_words(words: Sequence[WordRecord], text: str) -> tuple[WordRecord, ...]:
    """The words of ``text`` with ``words``' timings where they are the same words.

    Words the correction replaced or added share the time of the recognised words they stand
    in for (or the gap they were put in), in proportion to their length, marked estimated;
    words it removed are left out."""
    recognised = [word for word in words if word.text.strip()]
    if not recognised:
        return ()
    tokens = one_line(text).split(" ") if one_line(text) else []
    matcher = difflib.SequenceMatcher(
        None, [word.text.strip() for word in recognised], tokens, autojunk=False
    )
    result: list[WordRecord] = []
    for tag, first, last, token_first, token_last in matcher.get_opcodes():
        if tag == "equal":
            result.extend(recognised[first:last])
            continue
        replacing = tokens[token_first:token_last]
        if not replacing:  # deleted
            continue
        if first < last:
            start, end = recognised[first].start, recognised[last - 1].end
        else:  # inserted between two recognised words
            start = recognised[first - 1].end if first > 0 else recognised[0].start
            end = recognised[first].start if first < len(recognised) else recognised[-1].end
        result.extend(_spread(replacing, start, max(start, end)))
    return tuple(result)


def _spread(tokens: Sequence[str], start: float, end: float) -> list[WordRecord]:
    weights = [len(token) + 1 for token in tokens]
    total = sum(weights)
    words = []
    elapsed = 0
    for token, weight in zip(tokens, weights, strict=True):
        word_start = start + (end - start) * elapsed / total
        elapsed += weight
        word_end = start + (end - start) * elapsed / total
        words.append(
            WordRecord(
                start=seconds(word_start), end=seconds(word_end), text=f" {token}", estimated=True
            )
        )
    return words


def matching_segments(
    lines: Sequence[TimedLine], recognised: TranscriptDocument | None, job_id: str | None
) -> Sequence[SegmentRecord] | None:
    """The worker's segments when they are these lines (one segment a line, same text)."""
    if recognised is None:
        return None
    if job_id is not None and recognised.job_id != job_id:
        log.warning(
            "the recognised JSON is another job's; timings from the timed transcript",
            extra={"json_job_id": recognised.job_id},
        )
        return None
    segments = recognised.segments
    same = len(segments) == len(lines) and all(
        segment.text == one_line(line.text) for segment, line in zip(segments, lines, strict=True)
    )
    if not same:
        log.warning("the recognised JSON does not match the timed transcript; no word timings")
        return None
    return segments


def _segment_from_line(line: TimedLine, previous_end: float) -> SegmentRecord:
    times = prefix_times(line.prefix)
    start, end = times if times is not None else (previous_end, previous_end)
    start = max(0.0, start)
    return SegmentRecord(
        start=seconds(start), end=seconds(max(start, end)), text=line.text, speaker=line.speaker
    )


def corrected_document(
    transcript: TimedTranscript,
    texts: Mapping[int, str],
    recognised: TranscriptDocument | None,
    source: CorrectionSource,
) -> TranscriptDocument:
    """``texts``: the corrected text of each line the corrector's answer was accepted for."""
    lines = transcript.correctable
    segments = matching_segments(lines, recognised, source.job_id)
    if segments is None:
        recognised = None
    corrected: list[SegmentRecord] = []
    previous_end = 0.0
    for index, line in enumerate(lines):
        base = segments[index] if segments is not None else _segment_from_line(line, previous_end)
        previous_end = base.end
        recognised_text = one_line(line.text)
        text = one_line(texts.get(line.number, line.text)) or recognised_text
        changed = text != recognised_text
        words = corrected_words(base.words, text) if changed else base.words
        if base.speaker is not None:  # words the correction brought in are the line's speaker's
            words = tuple(w.model_copy(update={"speaker": base.speaker}) for w in words)
        corrected.append(
            base.model_copy(
                update={
                    "text": text,
                    "words": words,
                    "corrected": line.number in texts,
                    "original_text": recognised_text if changed else None,
                }
            )
        )
    if recognised is not None:
        return recognised.model_copy(
            update={"corrector": source.corrector, "segments": tuple(corrected)}
        )
    return TranscriptDocument(  # the recognition's figures are not known
        source_key=source.source_key,
        job_id=source.job_id or "",
        language=source.language,
        model="unknown",
        audio_seconds=previous_end,
        transcribe_seconds=0.0,
        real_time_factor=0.0,
        corrector=source.corrector,
        segments=tuple(corrected),
    )
