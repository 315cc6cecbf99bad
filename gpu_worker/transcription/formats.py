"""The segments the worker writes, and the document its files are made from.

- ``.timed.txt``: one segment a line (the LLM Caller's input, so its format is part of the
  pipeline's contract: ``pipeline_core.timed_text`` writes and reads it);
- ``.json``: segments with words, and the figures of the run
  (``pipeline_core.transcript_document``);
- ``.srt`` and ``.vtt``: subtitles (``pipeline_core.subtitles``).

The LLM Caller writes the same three formats of the corrected text, from the same code.
Text is kept as the engine produced it (Hebrew stays logical-order UTF-8); only line breaks
inside a segment are folded into spaces, so that one segment is always one line of the
timed file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gpu_worker.transcription.transcript import Segment, Word
from pipeline_core.timed_text import one_line
from pipeline_core.transcript_document import (
    SegmentRecord,
    TranscriptDocument,
    WordRecord,
    seconds,
)


def normalize_segments(segments: Iterable[Segment], duration: float | None) -> list[Segment]:
    """Segments with text, times inside ``[0, duration]``, each starting no earlier than the last.

    Engines occasionally end the last segment a little past the audio or emit an empty
    segment; readers of the timed file may rely on monotonic times inside the recording.
    """
    limit = float("inf") if duration is None else max(0.0, float(duration))
    result: list[Segment] = []
    previous_start = 0.0
    for segment in segments:
        text = one_line(segment.text)
        if not text:
            continue
        start = min(max(float(segment.start), previous_start), limit)
        end = min(max(float(segment.end), start), limit)
        words = tuple(
            Word(
                start=min(max(float(w.start), start), end),
                end=min(max(float(w.end), float(w.start), start), end),
                text=w.text,
                probability=None if w.probability is None else float(w.probability),
                speaker=w.speaker,
            )
            for w in segment.words
        )
        result.append(Segment(start, end, text, words, speaker=segment.speaker))
        previous_start = start
    return result


@dataclass(frozen=True)
class RunFigures:
    """What the JSON file records about the run besides the segments."""

    source_key: str
    job_id: str
    language: str
    model: str
    audio_seconds: float
    transcribe_seconds: float
    diarize_seconds: float | None = None

    @property
    def real_time_factor(self) -> float:
        """Processing time per second of audio (0.05 = twenty times faster than real time)."""
        return self.transcribe_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0


def _word(word: Word) -> WordRecord:
    probability = None if word.probability is None else round(float(word.probability), 4)
    return WordRecord(
        start=seconds(word.start),
        end=seconds(word.end),
        text=word.text,
        probability=probability,
        speaker=word.speaker,
    )


def transcript_document(segments: Iterable[Segment], figures: RunFigures) -> TranscriptDocument:
    """The ``.json`` the worker writes; its ``.srt`` and ``.vtt`` are made from it
    (``pipeline_core.subtitles``), like the LLM Caller's corrected ones."""
    return TranscriptDocument(
        source_key=figures.source_key,
        job_id=figures.job_id,
        language=figures.language,
        model=figures.model,
        audio_seconds=seconds(figures.audio_seconds),
        transcribe_seconds=seconds(figures.transcribe_seconds),
        real_time_factor=round(figures.real_time_factor, 4),
        diarize_seconds=(
            None if figures.diarize_seconds is None else seconds(figures.diarize_seconds)
        ),
        segments=tuple(
            SegmentRecord(
                start=seconds(s.start),
                end=seconds(s.end),
                text=one_line(s.text),
                words=tuple(_word(w) for w in s.words),
                speaker=s.speaker,
            )
            for s in segments
        ),
    )
