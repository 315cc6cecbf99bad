"""The four transcript files the worker writes, as pure functions of the segments.

- ``.timed.txt``: one segment a line (the LLM Caller's input, so its format is part of the
  pipeline's contract: ``pipeline_core.timed_text`` writes and reads it);
- ``.json``: segments with words, and the figures of the run;
- ``.srt`` and ``.vtt``: subtitles.

Text is kept as the engine produced it (Hebrew stays logical-order UTF-8, no bidi marks
are added); only line breaks inside a segment are folded into spaces, so that one segment
is always one line of the timed file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gpu_worker.transcription.transcript import Segment, Word
from pipeline_core.timed_text import format_timestamp, one_line


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
            )
            for w in segment.words
        )
        result.append(Segment(start=start, end=end, text=text, words=words))
        previous_start = start
    return result


def srt(segments: Iterable[Segment]) -> str:
    cues = [
        f"{index}\n{format_timestamp(s.start, ',')} --> {format_timestamp(s.end, ',')}\n"
        f"{one_line(s.text)}\n"
        for index, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def _vtt_text(text: str) -> str:
    # WebVTT cue text is markup; escaping ">" also keeps "-->" out of the cue, as required.
    return one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def vtt(segments: Iterable[Segment]) -> str:
    cues = [
        f"{format_timestamp(s.start)} --> {format_timestamp(s.end)}\n{_vtt_text(s.text)}\n"
        for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


@dataclass(frozen=True)
class RunFigures:
    """What the JSON file records about the run besides the segments."""

    source_key: str
    job_id: str
    language: str
    model: str
    audio_seconds: float
    transcribe_seconds: float

    @property
    def real_time_factor(self) -> float:
        """Processing time per second of audio (0.05 = twenty times faster than real time)."""
        return self.transcribe_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0


def _seconds(value: float) -> float:
    return round(float(value), 3)


def _word(word: Word) -> dict[str, Any]:
    data: dict[str, Any] = {
        "start": _seconds(word.start),
        "end": _seconds(word.end),
        "text": word.text,
    }
    if word.probability is not None:
        data["probability"] = round(float(word.probability), 4)
    return data


def transcript_json(segments: Iterable[Segment], figures: RunFigures) -> str:
    document: Mapping[str, Any] = {
        "source_key": figures.source_key,
        "job_id": figures.job_id,
        "language": figures.language,
        "model": figures.model,
        "audio_seconds": _seconds(figures.audio_seconds),
        "transcribe_seconds": _seconds(figures.transcribe_seconds),
        "real_time_factor": round(figures.real_time_factor, 4),
        "segments": [
            {
                "start": _seconds(s.start),
                "end": _seconds(s.end),
                "text": one_line(s.text),
                "words": [_word(w) for w in s.words],
            }
            for s in segments
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=1) + "\n"
