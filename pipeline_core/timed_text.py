"""The timed transcript: the LLM Queue's payload, one segment a line.

The worker writes each segment as ``[HH:MM:SS.mmm --> HH:MM:SS.mmm] text`` (``TIMED_LINE``;
hours grow past 99 rather than wrap; the text is one line, never empty). The LLM Caller
reads a transcript as lines of (timing prefix, text), so that correction changes only text:
the prefix is kept byte for byte. Besides ours, it recognises any ``[...]`` prefix and the
SRT-style ``00:01:02,500 --> 00:01:05,000``, so that a transcript written by hand or by
another tool is corrected too; a line without a prefix is all text. Blank lines stay as
they are and are never sent to a model. A labelled segment's line carries its speaker after
the timing, ``[...] [Speaker 1] text`` (``pipeline_core.speakers``): part of the prefix, so
correction never sees or changes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from pipeline_core.speakers import TIMED_TAG, speaker_of_prefix, timed_tag

_STAMP: Final = r"\d{2,}:\d{2}:\d{2}\.\d{3}"
# One line as the worker writes it; the groups are ``start``, ``end`` and ``text``.
TIMED_PREFIX: Final = re.compile(rf"^\[(?P<start>{_STAMP}) --> (?P<end>{_STAMP})\]")
TIMED_LINE: Final = re.compile(rf"{TIMED_PREFIX.pattern} (?P<text>\S.*)$")

# What the reader accepts as a line's timing prefix (any bracket, or SRT-style times).
_READ_TIME = r"\d{1,2}(?::\d{2}){1,2}(?:[.,]\d+)?"
_READ_PREFIX = re.compile(
    rf"^(?P<prefix>(?:\s*\[[^\]\n]*\]\s*|\s*{_READ_TIME}\s*-->\s*{_READ_TIME}\s+)"
    rf"(?:{TIMED_TAG.pattern}\s+)?)(?P<text>.*)$",
    re.DOTALL,
)
_SPACES = re.compile(r"\s+")
_ANY_TIME = r"\d+(?::\d{2}){1,2}(?:[.,]\d+)?"  # hours past 99 too
_PREFIX_TIMES = re.compile(rf"({_ANY_TIME})\s*-->\s*({_ANY_TIME})")


class TimedSegment(Protocol):
    """What a line is written from; times in seconds from the start of the audio."""

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def text(self) -> str: ...

    @property
    def speaker(self) -> str | None: ...


def one_line(text: str) -> str:
    """``text`` with every run of white space (line breaks too) folded into one space."""
    return _SPACES.sub(" ", text).strip()


def format_timestamp(seconds: float, separator: str = ".") -> str:
    """``3725.5`` -> ``01:02:05.500``; below zero is zero; hours grow past 99 rather than wrap."""
    total_ms = max(0, round(float(seconds) * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def parse_timestamp(stamp: str) -> float:
    """``01:02:05.500`` -> ``3725.5``, the inverse of ``format_timestamp``."""
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _read_time(stamp: str) -> float:
    """``01:02:05.500``, ``1:02:05,5`` or ``02:05.500`` -> seconds."""
    total = 0.0
    for part in stamp.replace(",", ".").split(":"):
        total = total * 60 + float(part)
    return total


def prefix_times(prefix: str) -> tuple[float, float] | None:
    """The start and end a line's timing prefix gives (ours or SRT-style), if it gives both."""
    match = _PREFIX_TIMES.search(prefix)
    if match is None:
        return None
    return _read_time(match.group(1)), _read_time(match.group(2))


def render_segments(segments: Iterable[TimedSegment]) -> str:
    """The timed transcript of ``segments``: one line each, every line ending in a newline."""
    return "".join(
        f"[{format_timestamp(s.start)} --> {format_timestamp(s.end)}] "
        f"{timed_tag(s.speaker) + ' ' if s.speaker else ''}{one_line(s.text)}\n"
        for s in segments
    )


@dataclass(frozen=True)
class TimedLine:
    number: int  # 1-based position in the file: the line's id in prompts
    prefix: str
    text: str

    @property
    def correctable(self) -> bool:
        return bool(self.text.strip())

    @property
    def speaker(self) -> str | None:
        return speaker_of_prefix(self.prefix)


@dataclass(frozen=True)
class TimedTranscript:
    lines: tuple[TimedLine, ...]
    trailing_newline: bool

    @property
    def correctable(self) -> list[TimedLine]:
        return [line for line in self.lines if line.correctable]


def parse(text: str) -> TimedTranscript:
    """Split each line into its timing prefix and its text (see the module's docstring)."""
    body = text.removeprefix("\ufeff")
    trailing = body.endswith("\n")
    raw_lines = body.split("\n")
    if trailing:
        raw_lines.pop()
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        content = raw.removesuffix("\r")
        match = _READ_PREFIX.match(content)
        prefix, line_text = (match["prefix"], match["text"]) if match else ("", content)
        lines.append(TimedLine(number, prefix, line_text))
    return TimedTranscript(tuple(lines), trailing)


def render_timed(transcript: TimedTranscript, texts: Mapping[int, str]) -> str:
    """The timed transcript with each line's text replaced by ``texts[number]`` if given."""
    out = [line.prefix + texts.get(line.number, line.text) for line in transcript.lines]
    return "\n".join(out) + ("\n" if transcript.trailing_newline else "")


def render_plain(transcript: TimedTranscript, texts: Mapping[int, str]) -> str:
    """The text alone, one segment a line, without timings; where speakers are labelled, a
    new paragraph opens with the speaker's label at each change (``Speaker 2: ...``)."""
    out: list[str] = []
    speaker: str | None = None
    for line in transcript.lines:
        text = texts.get(line.number, line.text).strip()
        if not text:
            continue
        if line.speaker is not None and line.speaker != speaker:
            if out:
                out.append("")
            text = f"{line.speaker}: {text}"
            speaker = line.speaker
        out.append(text)
    return "\n".join(out) + ("\n" if out else "")
