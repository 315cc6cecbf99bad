"""The speakers put on a transcript: each word gets the speaker of the turn it overlaps most
(the nearest turn when it falls in a pause), a segment whose words change speaker is split
there, and speakers are named ``Speaker 1``... in order of first appearance."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import replace

from gpu_worker.speakers.diarizer import SpeakerTurn
from gpu_worker.transcription.transcript import Segment, Word
from pipeline_core.speakers import labels_in_order
from pipeline_core.timed_text import one_line


class _Timeline:
    def __init__(self, turns: Sequence[SpeakerTurn]) -> None:
        self.turns = sorted(turns, key=lambda turn: turn.start)
        self.starts = [turn.start for turn in self.turns]

    def speaker_at(self, start: float, end: float) -> str:
        """The speaker of the turn overlapping ``[start, end]`` most, or the nearest one."""
        first = max(0, bisect.bisect_right(self.starts, end) - 1)
        best, best_overlap = None, 0.0
        for turn in reversed(self.turns[: first + 1]):
            overlap = min(end, turn.end) - max(start, turn.start)
            if overlap > best_overlap:
                best, best_overlap = turn, overlap
            if turn.end < start - 30.0:  # turns are short; none this early can overlap
                break
        if best is not None:
            return best.speaker
        middle = (start + end) / 2
        candidates = self.turns[max(0, first - 1) : first + 2]
        nearest = min(
            candidates, key=lambda t: max(t.start - middle, middle - t.end, 0.0), default=None
        )
        assert nearest is not None  # the timeline is never empty
        return nearest.speaker


def _split(segment: Segment, timeline: _Timeline) -> list[Segment]:
    if not segment.words:
        return [replace(segment, speaker=timeline.speaker_at(segment.start, segment.end))]
    words = [replace(w, speaker=timeline.speaker_at(w.start, w.end)) for w in segment.words]
    runs = [list(run) for _, run in itertools.groupby(words, key=lambda w: w.speaker)]
    if len(runs) == 1:
        return [replace(segment, words=tuple(words), speaker=words[0].speaker)]
    pieces = []
    for index, run in enumerate(runs):
        start = segment.start if index == 0 else run[0].start
        end = segment.end if index == len(runs) - 1 else run[-1].end
        text = one_line("".join(word.text for word in run))
        if text:
            pieces.append(Segment(start, end, text, tuple(run), speaker=run[0].speaker))
    return pieces


def label_segments(segments: Sequence[Segment], turns: Sequence[SpeakerTurn]) -> list[Segment]:
    """``segments`` with speakers; unchanged when no turn was found (no speech detected)."""
    if not turns:
        return list(segments)
    timeline = _Timeline(turns)
    split = [piece for segment in segments for piece in _split(segment, timeline)]
    names = labels_in_order(segment.speaker for segment in split)

    def named(word: Word) -> Word:
        return replace(word, speaker=names[word.speaker]) if word.speaker else word

    return [
        replace(
            segment,
            speaker=names[segment.speaker],
            words=tuple(named(word) for word in segment.words),
        )
        for segment in split
    ]
