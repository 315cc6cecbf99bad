"""A timed transcript as lines of (timing, text), so that correction changes only text.

Each line of ``<stem>.timed.txt`` is split into its timing prefix, kept byte for byte, and
its text, the only part a corrector may change. Recognised prefixes: ``[...]`` (e.g.
``[00:01:02.500 --> 00:01:05.000]``) and SRT-style ``00:01:02,500 --> 00:01:05,000``; a line
without one is all text. Blank lines stay as they are and are never sent to a model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_TIME = r"\d{1,2}(?::\d{2}){1,2}(?:[.,]\d+)?"
_PREFIX = re.compile(rf"^(\s*\[[^\]\n]*\]\s*|\s*{_TIME}\s*-->\s*{_TIME}\s+)(.*)$", re.DOTALL)


@dataclass(frozen=True)
class TimedLine:
    number: int  # 1-based position in the file: the line's id in prompts
    prefix: str
    text: str

    @property
    def correctable(self) -> bool:
        return bool(self.text.strip())


@dataclass(frozen=True)
class TimedTranscript:
    lines: tuple[TimedLine, ...]
    trailing_newline: bool

    @property
    def correctable(self) -> list[TimedLine]:
        return [line for line in self.lines if line.correctable]


def parse(text: str) -> TimedTranscript:
    body = text.removeprefix("\ufeff")
    trailing = body.endswith("\n")
    raw_lines = body.split("\n")
    if trailing:
        raw_lines.pop()
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        content = raw.removesuffix("\r")
        match = _PREFIX.match(content)
        prefix, line_text = (match.group(1), match.group(2)) if match else ("", content)
        lines.append(TimedLine(number, prefix, line_text))
    return TimedTranscript(tuple(lines), trailing)


def render_timed(transcript: TimedTranscript, texts: Mapping[int, str]) -> str:
    """The timed transcript with each line's text replaced by ``texts[number]`` if given."""
    out = [line.prefix + texts.get(line.number, line.text) for line in transcript.lines]
    return "\n".join(out) + ("\n" if transcript.trailing_newline else "")


def render_plain(transcript: TimedTranscript, texts: Mapping[int, str]) -> str:
    """The text alone, one segment a line, without timings."""
    out = [texts.get(line.number, line.text).strip() for line in transcript.lines]
    kept = [text for text in out if text]
    return "\n".join(kept) + ("\n" if kept else "")


def chunks(lines: Sequence[TimedLine], max_chars: int) -> list[list[TimedLine]]:
    """Consecutive lines in groups of at most ``max_chars`` characters of text each
    (a single longer line makes a group of its own)."""
    groups: list[list[TimedLine]] = []
    current: list[TimedLine] = []
    size = 0
    for line in lines:
        length = len(line.text) + 8  # the id and separator the prompt adds
        if current and size + length > max_chars:
            groups.append(current)
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        groups.append(current)
    return groups
