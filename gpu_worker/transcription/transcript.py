"""What an engine produces: timed segments (and words where the engine gives them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str
    probability: float | None = None
    speaker: str | None = None  # "Speaker 1"...: set when the recording asked for speakers


@dataclass(frozen=True)
class Segment:
    """One stretch of speech; times in seconds from the start of the audio."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = field(default_factory=tuple)
    speaker: str | None = None
