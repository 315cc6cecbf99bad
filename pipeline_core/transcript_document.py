"""The transcript's ``.json``: segments with their words and timings, and the run's figures.

One shape for both writers: the worker writes ``transcriptions/<name>.json`` (the text as
recognised), the LLM Caller writes ``final-output/<name>.json`` (the corrected text on the
same timings) and the on-prem side reads the latter for what it builds at home (``.docx``,
the reader page). Times are seconds from the start of the audio, rounded to milliseconds.

In the corrected document each segment says whether the corrector checked it
(``corrected``: its answer for the segment was accepted) and, where the correction changed
the text, what was recognised (``original_text``). Where the recording asked for speakers,
each segment and word carries its ``speaker`` (``Speaker 1``...: ``pipeline_core.speakers``);
a segment holds one speaker's words. Words keep the engine's timings where
the corrected words are the recognised ones; a word the correction introduced or changed
gets a timing spread over the recognised words it replaces, marked ``estimated``. Word
``text`` is as the engine writes it (Whisper puts a space before each word).

``schema_version`` grows when a field changes meaning or goes away; readers check it.
"""

from __future__ import annotations

import json
from typing import Final, Self

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat

SCHEMA_VERSION: Final = 1


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class WordRecord(_Record):
    start: NonNegativeFloat
    end: NonNegativeFloat
    text: str
    probability: float | None = None  # the engine's confidence, when it gives one
    estimated: bool | None = None  # True: timed from its neighbours, not by the engine
    speaker: str | None = None


class SegmentRecord(_Record):
    start: NonNegativeFloat
    end: NonNegativeFloat
    text: str
    words: tuple[WordRecord, ...] = ()
    corrected: bool = False  # the corrector checked this segment and its answer was accepted
    original_text: str | None = None  # the recognised text, where the correction changed it
    speaker: str | None = None

    @property
    def changed(self) -> bool:
        return self.original_text is not None


class TranscriptDocument(_Record):
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1)
    source_key: str
    job_id: str
    language: str
    model: str  # the speech recognition model
    audio_seconds: NonNegativeFloat
    transcribe_seconds: NonNegativeFloat
    real_time_factor: NonNegativeFloat
    diarize_seconds: NonNegativeFloat | None = None  # the speaker step's time, when it ran
    corrector: str | None = None  # who corrected it ("none": nobody); absent: as recognised
    segments: tuple[SegmentRecord, ...] = ()

    def to_json(self) -> str:
        """UTF-8 text (Hebrew stays readable, not ``\\u`` escapes); absent values left out."""
        data = self.model_dump(mode="json", exclude_none=True)
        return json.dumps(data, ensure_ascii=False, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        """Raises ``pydantic.ValidationError`` (a ``ValueError``) for a malformed document."""
        return cls.model_validate_json(text)


def seconds(value: float) -> float:
    """A time as the document stores it (milliseconds)."""
    return round(float(value), 3)
