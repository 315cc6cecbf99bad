"""Whether a corrector's answer may replace the lines it was given.

Edits (the default format) are judged one by one, each accepted or refused alone
(``apply_edits``): an edit must name a line of the chunk, its ``from`` must occur in that
line, it must be small, keep the line's script, keep the words it replaces when they are
Talmudic Aramaic (a "correction" into Hebrew is a translation), keep at least half the
letters it replaces (no deletion of content), add at most ``MAX_ADDED_WORDS`` words, leave
speaker labels alone (``Speaker 2``: the labels travel in the lines' prefixes, never shown to
the model, so an edit that writes or rewrites one is moving words between speakers), and
leave the whole line close to its original. Only an answer that is no list
of edits at all, or was cut off, is refused as a whole.

In the echo format the answer must hold exactly the ids it was sent, once each, and each
line must stay close to its original (``difflib`` ratio, with a small absolute allowance so
that a short misheard phrase such as "on the camera" -> "Bava Kamma" can be fixed). So an
answer that was cut off, that dropped, merged or invented lines, or that obeyed instructions
hidden in the transcript or the description, is refused as a whole and the chunk keeps its
original text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any, Final

from chalicelib.correction.prompt import unmarked
from pipeline_core.speakers import mentions_label
from pipeline_core.timed_text import TimedLine

_LINE = re.compile(r"^\s*(\d+)\s*\|(.*)$")
SMALL_EDIT_CHARS = 16  # characters any line may change, however short it is
MAX_EDIT_CHARS: Final = 80  # the longest `from` or `to` one edit may have
# Words one edit may add beyond those it replaces. The model has no audio: a word the
# recogniser did not write at all cannot be known, so more is invention (an instruction
# obeyed, "visit our site ..."). True corrections of Whisper's errors on the evaluation set
# add at most one (a missed short word, carried with the word before it: bench/README.md).
MAX_ADDED_WORDS: Final = 2
# Words of Talmudic Aramaic that Hebrew says otherwise: an edit whose `from` has one and whose
# `to` has lost it is rewriting Aramaic as Hebrew (מאי טעמא -> מה הטעם). A heuristic: an
# Aramaic phrase without any of these words is judged by the other rules only.
ARAMAIC_MARKERS: Final = frozenset(
    ("מאי", "היכי", "הכא", "התם", "טעמא", "נמי", "ליה", "ביה", "להו", "בהו", "קא", "איכא",
     "ליכא", "איתא", "תנן", "תניא", "איתמר", "אמאי", "לאו", "דאמר", "קאמר", "תיובתא", "מתקיף",
     "דידן", "האי", "הני", "נינהו", "אית", "לית", "מנא", "הלכתא", "כדתניא", "דתנן", "מיבעיא")
)  # fmt: skip


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
        parsed.append((int(match.group(1)), unmarked(match.group(2)).strip()))
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
        if mentions_label([after]) and not mentions_label([before]):
            raise AnswerRefusedError(f"line {line.number} was given a speaker label")
    return texts


@dataclass(frozen=True)
class Edit:
    line: int
    old: str  # the tool's `from`
    new: str  # the tool's `to`


@dataclass
class EditOutcome:
    texts: dict[int, str]  # every line of the chunk, with the accepted edits applied
    accepted: int = 0
    # Why each refused edit was refused, by the line it named (malformed edits: by 0).
    refusals: dict[int, list[str]] = field(default_factory=dict)


def parse_edits(tool_input: Mapping[str, Any] | None, *, truncated: bool) -> list[Edit | str]:
    """The edits of an answer, each an ``Edit`` or, where it is malformed, why; the answer
    as a whole is refused (``AnswerRefusedError``) only when it is no list of edits."""
    if truncated:
        raise AnswerRefusedError("the answer was cut off at the output limit")
    if tool_input is None:
        raise AnswerRefusedError("the answer did not call the edits tool")
    raw = tool_input.get("edits")
    if not isinstance(raw, list):
        raise AnswerRefusedError("the answer's edits are not a list")
    edits: list[Edit | str] = []
    for item in raw:
        fields = item if isinstance(item, dict) else {}
        line, old, new = fields.get("line"), fields.get("from"), fields.get("to")
        if isinstance(line, int) and isinstance(old, str) and isinstance(new, str):
            edits.append(Edit(line, unmarked(old), unmarked(new)))
        else:
            edits.append(f"a malformed edit: {str(item)[:80]!r}")
    return edits


def _scripts(text: str) -> set[str]:
    """The writing systems of the letters in ``text`` (LATIN, HEBREW, CYRILLIC...)."""
    return {unicodedata.name(ch, "?").split(" ")[0] for ch in text if ch.isalpha()}


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def _letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def edit_refusal(original: str, current: str, edit: Edit, min_similarity: float) -> str | None:
    """Why ``edit`` may not apply to a line now reading ``current`` (``original`` before any
    edit); None: it may."""
    if not edit.old:
        return "an edit without `from` text"
    if edit.old not in current:
        return f"`from` {edit.old[:40]!r} is not in the line"
    if max(len(edit.old), len(edit.new)) > MAX_EDIT_CHARS:
        return f"an edit longer than {MAX_EDIT_CHARS} characters"
    if mentions_label([edit.old, edit.new]):
        return "the edit touches a speaker label"
    if _scripts(edit.new) - _scripts(original):
        return "the edit brings in another script"
    lost = {w for w in _words(edit.old) if w in ARAMAIC_MARKERS} - set(_words(edit.new))
    if lost:
        return f"the edit rewrites Aramaic ({' '.join(sorted(lost))})"
    # Letters, not words: a word the recogniser split ("se lebraré en" -> "celebraré") is
    # one mishearing, not a deletion.
    if 2 * _letters(edit.new) < _letters(edit.old):
        return "the edit deletes words"
    added = len(edit.new.split()) - len(edit.old.split())
    if added > MAX_ADDED_WORDS:
        return f"the edit adds {added} words the recogniser did not hear"
    after = current.replace(edit.old, edit.new, 1).strip()
    if not after:
        return "the edit empties the line"
    if not line_is_close(original, after, min_similarity):
        return "the line would change too much to be a correction"
    return None


def apply_edits(
    lines: Sequence[TimedLine], edits: Sequence[Edit | str], min_similarity: float
) -> EditOutcome:
    """Each edit in order, accepted or refused on its own; accepted ones change the line
    (its first occurrence of `from`) for the edits that follow."""
    originals = {line.number: line.text.strip() for line in lines}
    outcome = EditOutcome(texts=dict(originals))
    for edit in edits:
        if isinstance(edit, str):
            outcome.refusals.setdefault(0, []).append(edit)
            continue
        if edit.line not in originals:
            outcome.refusals.setdefault(edit.line, []).append("a line it was not asked about")
            continue
        current = outcome.texts[edit.line]
        why = edit_refusal(originals[edit.line], current, edit, min_similarity)
        if why is not None:
            outcome.refusals.setdefault(edit.line, []).append(why)
            continue
        outcome.texts[edit.line] = current.replace(edit.old, edit.new, 1).strip()
        outcome.accepted += 1
    return outcome
