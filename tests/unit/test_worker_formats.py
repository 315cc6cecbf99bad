from __future__ import annotations

import html
import json

import pytest
import srt as srt_parser
import webvtt

from gpu_worker.transcription.formats import RunFigures, normalize_segments, transcript_document
from gpu_worker.transcription.transcript import Segment, Word
from pipeline_core.subtitles import RLM, srt, vtt
from pipeline_core.timed_text import TIMED_LINE, format_timestamp, render_segments
from pipeline_core.transcript_document import SCHEMA_VERSION, TranscriptDocument

HEBREW = "אמר רבי יוחנן, (שבת ב.) מה?"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "00:00:00.000"),
        (0.0004, "00:00:00.000"),
        (1.2345, "00:00:01.234"),
        (59.9996, "00:01:00.000"),
        (3725.5, "01:02:05.500"),
        (3 * 3600 + 7.25, "03:00:07.250"),
        (100 * 3600, "100:00:00.000"),
        (-0.2, "00:00:00.000"),
    ],
)
def test_timestamp(seconds: float, text: str) -> None:
    assert format_timestamp(seconds) == text
    assert format_timestamp(seconds, ",") == text.replace(".", ",")


def _segments() -> list[Segment]:
    return [
        Segment(0.0, 2.5, " שלום  עולם\n", (Word(0.0, 1.0, " שלום", 0.9), Word(1.0, 2.5, " עולם"))),
        Segment(3725.5, 3727.0, HEBREW),
    ]


def test_timed_text_one_segment_a_line_with_hebrew_and_hours() -> None:
    text = render_segments(_segments())
    lines = text.splitlines()
    assert lines == [
        "[00:00:00.000 --> 00:00:02.500] שלום עולם",
        f"[01:02:05.500 --> 01:02:07.000] {HEBREW}",
    ]
    assert all(TIMED_LINE.match(line) for line in lines)
    assert text.endswith("\n")


def _figures(language: str = "he") -> RunFigures:
    return RunFigures(
        source_key="audio-input/שיעור.mp3",
        job_id="j1",
        language=language,
        model="faster-whisper:tiny",
        audio_seconds=3727.0,
        transcribe_seconds=186.35,
    )


def test_srt_and_vtt_of_english_text_escape_only_what_vtt_needs() -> None:
    segments = [Segment(0.0, 2.5, "hello world"), Segment(3.0, 4.0, "a <b> & c --> d")]
    document = transcript_document(segments, _figures("en"))
    assert srt(document) == (
        "1\n00:00:00,000 --> 00:00:02,500\nhello world\n\n"
        "2\n00:00:03,000 --> 00:00:04,000\na <b> & c --> d\n"
    )
    text = vtt(document)
    assert text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nhello world\n\n")
    cue_text = text.rstrip("\n").split("\n")[-1]
    assert cue_text == "a &lt;b&gt; &amp; c --&gt; d"
    # webvtt-py hands cue text over as written; the entities decode back to the words.
    captions = webvtt.from_string(text).captions
    assert [html.unescape(c.text) for c in captions] == ["hello world", "a <b> & c --> d"]


def test_hebrew_subtitles_carry_right_to_left_marks_and_parse() -> None:
    document = transcript_document(_segments(), _figures("he"))
    subtitles = list(srt_parser.parse(srt(document)))
    assert [s.content for s in subtitles] == [f"{RLM}שלום עולם{RLM}", f"{RLM}{HEBREW}{RLM}"]
    assert subtitles[1].start.total_seconds() == 3725.5
    captions = webvtt.from_string(vtt(document)).captions
    assert [c.text for c in captions] == [f"{RLM}שלום עולם{RLM}", f"{RLM}{HEBREW}{RLM}"]


def test_json_carries_segments_words_and_figures() -> None:
    text = transcript_document(_segments(), _figures()).to_json()
    document = json.loads(text)
    assert document["schema_version"] == SCHEMA_VERSION
    assert document["source_key"] == "audio-input/שיעור.mp3"
    assert document["language"] == "he"
    assert document["model"] == "faster-whisper:tiny"
    assert document["audio_seconds"] == 3727.0
    assert document["transcribe_seconds"] == 186.35
    assert document["real_time_factor"] == pytest.approx(0.05, abs=1e-4)
    assert "corrector" not in document  # as recognised
    assert [s["text"] for s in document["segments"]] == ["שלום עולם", HEBREW]
    assert [s["corrected"] for s in document["segments"]] == [False, False]
    assert document["segments"][0]["words"] == [
        {"start": 0.0, "end": 1.0, "text": " שלום", "probability": 0.9},
        {"start": 1.0, "end": 2.5, "text": " עולם"},
    ]
    assert "שלום" in text  # UTF-8, not \\u escapes
    assert TranscriptDocument.from_json(text) == transcript_document(_segments(), _figures())


def test_normalize_clamps_orders_and_drops_empty() -> None:
    raw = [
        Segment(-0.1, 1.0, "a", (Word(-0.1, 0.5, "a"),)),
        Segment(0.8, 0.7, "b"),  # ends before it starts
        Segment(0.5, 2.0, "   "),  # nothing said
        Segment(0.6, 9.0, "c"),  # starts before the previous one, ends past the audio
    ]
    segments = normalize_segments(raw, duration=5.0)
    assert [s.text for s in segments] == ["a", "b", "c"]
    assert [(s.start, s.end) for s in segments] == [(0.0, 1.0), (0.8, 0.8), (0.8, 5.0)]
    assert segments[0].words[0].start == 0.0
    starts = [s.start for s in segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start <= s.end <= 5.0 for s in segments)


def test_empty_transcript_is_still_valid_files() -> None:
    assert render_segments([]) == ""
    document = transcript_document([], _figures())
    assert srt(document) == ""
    assert vtt(document) == "WEBVTT\n\n"
    assert list(webvtt.from_string(vtt(document)).captions) == []
