"""The correction test set: per clip, the recogniser's timed lines, the reference, and the
edits (line, from, to) that turn one into the other, built at run time from the evaluation
set and the benchmark's own transcripts (nothing of the clips or references is stored).

The word alignment has one home here: jiwer's (Levenshtein, the one WER is counted with)
when jiwer is installed, else ``difflib``'s; adjacent differences are one edit, so that a word
the recogniser split ("se lebraré en" -> "celebraré") is one mishearing, as a model would fix
it. Each reference word is given to the line of the recognised word it replaces (a word the
recogniser missed to the line of the word before it), so the corrected lines joined are the
reference and no correction moves words between lines.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeline_core.timed_text import (
    TimedLine,
    TimedSegment,
    TimedTranscript,
    parse,
    render_segments,
)

if TYPE_CHECKING:
    from bench.clips import Clip


class WordSpan(NamedTuple):
    """Recognised words ``said[start:end]`` become reference words ``meant[at:to]``."""

    start: int
    end: int
    at: int
    to: int


def _opcodes(said: Sequence[str], meant: Sequence[str]) -> list[tuple[bool, int, int, int, int]]:
    """(equal, said start, said end, meant start, meant end) blocks in order."""
    try:
        import jiwer
    except ImportError:  # pragma: no cover - jiwer is a bench dependency
        matcher = difflib.SequenceMatcher(None, list(said), list(meant), autojunk=False)
        return [(tag == "equal", a, b, c, d) for tag, a, b, c, d in matcher.get_opcodes()]
    if not said or not meant:
        return [(False, 0, len(said), 0, len(meant))] if said or meant else []
    output = jiwer.process_words(" ".join(meant), " ".join(said))
    return [
        (chunk.type == "equal", chunk.hyp_start_idx, chunk.hyp_end_idx,
         chunk.ref_start_idx, chunk.ref_end_idx)
        for chunk in output.alignments[0]
    ]  # fmt: skip


def differences(said: Sequence[str], meant: Sequence[str]) -> list[WordSpan]:
    """The spans where ``said`` and ``meant`` differ, adjacent differences merged."""
    spans: list[WordSpan] = []
    for equal, start, end, at, to in _opcodes(said, meant):
        if equal:
            continue
        if spans and spans[-1].end == start and spans[-1].to == at:
            spans[-1] = WordSpan(spans[-1].start, end, spans[-1].at, to)
        else:
            spans.append(WordSpan(start, end, at, to))
    return spans


def word_edits(hypothesis: str, reference: str) -> list[tuple[str, str]]:
    """The (from, to) edits, left to right, that turn ``hypothesis`` into ``reference`` when
    each is applied to the first occurrence of ``from`` in the text as the edits before it
    left it (the LLM Caller's rule): a ``from`` that occurs earlier is widened to the left
    until it is the first; an insertion carries the word before it (at the very start, the
    word after it)."""
    said, meant = hypothesis.split(), reference.split()
    edits: list[tuple[str, str]] = []
    for span in differences(said, meant):
        start, end, at, to = span
        if start == end and start > 0:
            start, at = start - 1, at - 1
        elif start == end:
            end, to = end + 1, to + 1
        while True:
            current = [*meant[:at], *said[start:]]
            old, new = " ".join(said[start:end]), " ".join(meant[at:to])
            offset = len(" ".join(current[:at])) + (1 if at else 0)
            if " ".join(current).find(old) == offset or start == 0:
                break
            start, at = start - 1, at - 1
        edits.append((old, new))
    return edits


def line_targets(lines: Sequence[str], reference: str) -> list[str]:
    """What each recognised line should read for the lines joined to be ``reference``."""
    said: list[str] = []
    line_of: list[int] = []
    for index, line in enumerate(lines):
        words = line.split()
        said += words
        line_of += [index] * len(words)
    meant = reference.split()
    targets: list[list[str]] = [[] for _ in lines]
    if not said:
        if lines:
            targets[0] = meant
        return [" ".join(t) for t in targets]
    for equal, start, end, at, to in _opcodes(said, meant):
        if equal:
            for offset in range(end - start):
                targets[line_of[start + offset]].append(meant[at + offset])
            continue
        if start == end:  # words the recogniser missed: to the line of the word before
            targets[line_of[max(0, start - 1)]] += meant[at:to]
            continue
        # Each replacing word to the line of the recognised word at its place (jiwer's
        # substitutions are one for one), so a correction never moves words between lines.
        for offset in range(to - at):
            said_index = start + offset * (end - start) // (to - at)
            targets[line_of[said_index]].append(meant[at + offset])
    return [" ".join(t) for t in targets]


@dataclass(frozen=True)
class CorrectionCase:
    """One clip of the set."""

    clip: Clip
    segments: tuple[TimedSegment, ...]  # the recogniser's
    transcript: TimedTranscript  # the recogniser's timed lines, as the LLM Caller reads them
    targets: dict[int, str]  # line number -> the line as the reference has it
    edits: list[dict[str, Any]]  # {line, from, to}: what a model that knows the answer proposes

    @property
    def hypothesis(self) -> str:
        return " ".join(line.text.strip() for line in self.transcript.correctable)


def case(clip: Clip, segments: Sequence[TimedSegment]) -> CorrectionCase:
    """The case of one transcribed clip (``segments``: the engine's)."""
    reference = clip.reference
    transcript = parse(render_segments(segments))
    lines: list[TimedLine] = list(transcript.correctable)
    targets = line_targets([line.text.strip() for line in lines], reference)
    edits = [
        {"line": line.number, "from": old, "to": new}
        for line, target in zip(lines, targets, strict=True)
        for old, new in word_edits(line.text.strip(), target)
    ]
    return CorrectionCase(
        clip=clip,
        segments=tuple(segments),
        transcript=transcript,
        targets={line.number: t for line, t in zip(lines, targets, strict=True)},
        edits=edits,
    )
