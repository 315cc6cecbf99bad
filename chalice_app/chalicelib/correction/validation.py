"""Whether a corrector's answer may replace the lines it was given.

The validator, not the model, decides what reaches the output: the answer must hold
exactly the ids it was sent, once each, and each line must stay close to its original
(``difflib`` ratio, with a small absolute allowance so that a short misheard phrase such
as "on the camera" -> "Bava Kamma" can be fixed). So an answer that was cut off, that
dropped, merged or invented lines, or that obeyed instructions hidden in the transcript or
the description, is refused as a whole and the chunk keeps its original text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import SequenceMatcher

from pipeline_core.timed_text import TimedLine

_LINE = re.compile(r"^\s*(\d+)\s*\|(.*)$")
SMALL_EDIT_CHARS = 16  # characters any line may change, however short it is


class AnswerRefusedError(ValueError):
    """The answer cannot be used; the message says why."""


def changed_chars(before: str, after: str) -> int:
    matcher = SequenceMatcher(None, before, after, autojunk=False)
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return len(before) + len(after) - 2 * matched


def line_is_close(before: str, after: str, min_similarity: float) -> bool:
    total = len(before) + len(after)
    allowance = max(SMALL_EDIT_CHARS, (1.0 - min_similarity) * total)
    return changed_chars(before, after) <= allowance


def parse_answer(answer: str) -> list[tuple[int, str]]:
    """The numbered lines of an answer; text before the first and after the last numbered
    line (a preamble, a sign-off) is tolerated, anything between them is not."""
    raw = answer.strip().split("\n")
    numbered = [i for i, line in enumerate(raw) if _LINE.match(line)]
    if not numbered:
        raise AnswerRefusedError("the answer has no numbered lines")
    parsed: list[tuple[int, str]] = []
    for line in raw[numbered[0] : numbered[-1] + 1]:
        match = _LINE.match(line)
        if match is None:
            if line.strip():
                raise AnswerRefusedError(f"unnumbered text between the lines: {line[:80]!r}")
            continue
        parsed.append((int(match.group(1)), match.group(2).strip()))
    return parsed


def validate(
    lines: Sequence[TimedLine], answer: str, *, truncated: bool, min_similarity: float
) -> dict[int, str]:
    """The corrected text of each line, or ``AnswerRefusedError``."""
    if truncated:
        raise AnswerRefusedError("the answer was cut off at the output limit")
    parsed = parse_answer(answer)
    expected = [line.number for line in lines]
    got = [number for number, _ in parsed]
    if len(set(got)) != len(got):
        raise AnswerRefusedError("the answer repeats a line number")
    missing = sorted(set(expected) - set(got))
    invented = sorted(set(got) - set(expected))
    if missing or invented:
        raise AnswerRefusedError(
            f"the answer's lines differ from the input: missing {missing[:10]}, "
            f"not asked for {invented[:10]}"
        )
    texts = dict(parsed)
    for line in lines:
        before, after = line.text.strip(), texts[line.number]
        if not after:
            raise AnswerRefusedError(f"line {line.number} came back empty")
        if not line_is_close(before, after, min_similarity):
            raise AnswerRefusedError(f"line {line.number} was changed too much to be a correction")
    return texts
