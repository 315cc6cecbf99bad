"""Subtitles (``.srt``, ``.vtt``) of a transcript, cut the way players and editors expect.

A segment of speech can run for 30 seconds and hundreds of characters; a subtitle cannot.
Each segment is cut into cues of at most ``CueLimits.lines`` lines of ``line_chars``
characters and ``seconds`` seconds (2 x 42 characters, 7 s: the figures of the common
subtitling guidelines, e.g. Netflix's Timed Text Style Guide, General Requirements), at word
boundaries. A cue's times are its words' times when the engine gave word timings; otherwise
the segment's time is shared among its words in proportion to their length. A cue never
crosses a segment, so a cue's text is always part of one segment's. A cue that must end
early ends after a punctuation mark in its second half when there is one, so that clauses
stay together. A word longer than a line stands alone in its cue rather than being broken.

Right-to-left languages: each line is wrapped in RIGHT-TO-LEFT MARKs (U+200F). Players lay
out each subtitle line as a Unicode bidi paragraph. Those that follow the Unicode Bidi
Algorithm take the paragraph's direction from its first strong character (UAX #9, rules
P2-P3, https://www.unicode.org/reports/tr9/#The_Paragraph_Level); WebVTT requires exactly
that, line by line (https://www.w3.org/TR/webvtt1/#webvtt-cue-text-rendering-rules: "each
line of the cue is reordered as if it was a separate paragraph"). A Hebrew line that opens
with a Latin name or acronym would then be laid out left to right; the leading RLM makes
every line RTL. Players that lay every line out left to right whatever it holds (some TVs
and older players do) put a final "." or "?" after the Hebrew, on the right, and a
leading number on the left; with an RLM at each end, that punctuation sits between two
strong right-to-left characters and takes their direction (UAX #9 rule N1), and the whole
line is one right-to-left run, so it reads correctly there too. RLM is a plain strong
character, in Unicode since 1.1, that every renderer knows; the isolate controls
(U+2066-2069) the W3C prefers for inline markup are not understood by all subtitle
renderers and show as boxes there
(https://www.w3.org/International/questions/qa-bidi-unicode-controls).
WebVTT's ``&rlm;`` escape would mean the same, but SRT has no escapes, so both formats carry
the character itself.

Speakers: a cue of a labelled segment names its speaker, in WebVTT with a voice tag
(``<v Speaker 1>``, https://www.w3.org/TR/webvtt1/#webvtt-cue-voice-span) and in SRT, which has
no such markup, as a ``Speaker 1: `` prefix on its first line.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from pipeline_core.languages import is_right_to_left
from pipeline_core.timed_text import format_timestamp, one_line
from pipeline_core.transcript_document import SegmentRecord, TranscriptDocument

RLM: Final = "\u200f"
# A cue that must end early ends after one of these rather than mid-clause.
PAUSE_PUNCTUATION: Final = (".", "?", "!", ",", ";", ":", "\u2026", "\u05c3")  # ..., sof pasuq


@dataclass(frozen=True)
class CueLimits:
    line_chars: int = 42
    lines: int = 2
    seconds: float = 7.0


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]
    speaker: str | None = None

    @property
    def text(self) -> str:
        return " ".join(self.lines)


@dataclass(frozen=True)
class _Token:
    text: str
    start: float
    end: float


def _word_tokens(segment: SegmentRecord) -> list[_Token] | None:
    """The segment's words as timed tokens, or None when they do not spell its text.

    A word that does not start with a space continues the previous one (engines split
    numbers and some punctuation that way)."""
    tokens: list[_Token] = []
    for word in segment.words:
        text = word.text.strip()
        if not text:
            continue
        if tokens and not word.text[:1].isspace():
            last = tokens[-1]
            tokens[-1] = _Token(last.text + text, last.start, max(last.end, word.end))
        else:
            tokens.append(_Token(text, word.start, max(word.start, word.end)))
    spelled = " ".join(token.text for token in tokens)
    return tokens if tokens and spelled == one_line(segment.text) else None


def _proportional_tokens(segment: SegmentRecord) -> list[_Token]:
    """The segment's words, its time shared among them in proportion to their length."""
    words = one_line(segment.text).split(" ")
    weights = [len(word) + 1 for word in words]
    total = sum(weights)
    span = max(0.0, segment.end - segment.start)
    tokens = []
    elapsed = 0
    for word, weight in zip(words, weights, strict=True):
        start = segment.start + span * elapsed / total
        elapsed += weight
        tokens.append(_Token(word, start, segment.start + span * elapsed / total))
    return tokens


def wrap(words: Sequence[str], limits: CueLimits = CueLimits()) -> tuple[str, ...] | None:
    """``words`` as at most ``limits.lines`` lines of ``limits.line_chars``, or None.

    Two lines are balanced (the shorter line on top when they cannot be equal), as the
    guidelines ask; a single word longer than a line is a line of its own."""
    one = " ".join(words)
    if len(one) <= limits.line_chars or len(words) == 1:
        return (one,)
    if limits.lines < 2:
        return None
    best: tuple[str, str] | None = None
    for split in range(1, len(words)):
        top, bottom = " ".join(words[:split]), " ".join(words[split:])
        if len(top) > limits.line_chars or len(bottom) > limits.line_chars:
            continue
        if best is None or _balance(top, bottom) < _balance(*best):
            best = (top, bottom)
    return best


def _balance(top: str, bottom: str) -> tuple[int, bool]:
    return max(len(top), len(bottom)), len(top) > len(bottom)


def _natural_cut(tokens: Sequence[_Token]) -> int | None:
    """Where to end a full cue early: after the last punctuation in its second half."""
    for cut in range(len(tokens) - 1, max(1, (len(tokens) + 1) // 2) - 1, -1):
        if tokens[cut - 1].text.endswith(PAUSE_PUNCTUATION):
            return cut
    return None


def segment_cues(segment: SegmentRecord, limits: CueLimits = CueLimits()) -> list[Cue]:
    """A segment's cues: as many words as fit each, ending at a punctuation mark in the
    cue's second half when there is one (a sentence or clause is not cut mid-way)."""
    tokens = _word_tokens(segment) or _proportional_tokens(segment)
    result: list[Cue] = []

    def fits(group: Sequence[_Token]) -> bool:
        duration = group[-1].end - group[0].start
        return wrap([t.text for t in group], limits) is not None and duration <= limits.seconds

    def close(group: Sequence[_Token]) -> None:
        lines = wrap([t.text for t in group], limits)
        assert lines is not None  # every cue is built to fit
        end = max(group[0].start, group[-1].end)
        result.append(Cue(group[0].start, end, lines, segment.speaker))

    current: list[_Token] = []
    for token in tokens:
        if not current or fits([*current, token]):
            current.append(token)
            continue
        cut = _natural_cut(current)
        if cut is not None and fits([*current[cut:], token]):
            close(current[:cut])
            current = [*current[cut:], token]
        else:
            close(current)
            current = [token]
    if current:
        close(current)
    return result


def cues(segments: Iterable[SegmentRecord], limits: CueLimits = CueLimits()) -> list[Cue]:
    """Every segment's cues in order; a cue ends no later than the next one starts."""
    result = [
        cue for segment in segments if segment.text.strip() for cue in segment_cues(segment, limits)
    ]
    for index, (cue, following) in enumerate(itertools.pairwise(result)):
        if cue.end > following.start > cue.start:
            result[index] = Cue(cue.start, following.start, cue.lines, cue.speaker)
    return result


def _display(line: str, rtl: bool) -> str:
    return f"{RLM}{line}{RLM}" if rtl else line


def _srt_lines(cue: Cue) -> tuple[str, ...]:
    if cue.speaker is None:
        return cue.lines
    return (f"{cue.speaker}: {cue.lines[0]}", *cue.lines[1:])


def render_srt(cue_list: Iterable[Cue], *, rtl: bool) -> str:
    blocks = [
        f"{index}\n{format_timestamp(cue.start, ',')} --> {format_timestamp(cue.end, ',')}\n"
        + "".join(_display(line, rtl) + "\n" for line in _srt_lines(cue))
        for index, cue in enumerate(cue_list, start=1)
    ]
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    # WebVTT cue text is markup; escaping ">" also keeps "-->" out of the cue, as required.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _vtt_lines(cue: Cue, rtl: bool) -> list[str]:
    lines = [_display(_vtt_escape(line), rtl) for line in cue.lines]
    if cue.speaker is not None:  # the voice span runs to the end of the cue
        lines[0] = f"<v {_vtt_escape(cue.speaker)}>{lines[0]}"
    return lines


def render_vtt(cue_list: Iterable[Cue], *, rtl: bool) -> str:
    blocks = [
        f"{format_timestamp(cue.start)} --> {format_timestamp(cue.end)}\n"
        + "".join(line + "\n" for line in _vtt_lines(cue, rtl))
        for cue in cue_list
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def srt(document: TranscriptDocument, limits: CueLimits = CueLimits()) -> str:
    return render_srt(cues(document.segments, limits), rtl=is_right_to_left(document.language))


def vtt(document: TranscriptDocument, limits: CueLimits = CueLimits()) -> str:
    return render_vtt(cues(document.segments, limits), rtl=is_right_to_left(document.language))
