"""The timed transcript format: written by the worker, read by the LLM Caller, one module."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pipeline_core.timed_text import (
    TIMED_LINE,
    TIMED_PREFIX,
    format_timestamp,
    parse,
    parse_timestamp,
    render_plain,
    render_segments,
    render_timed,
)


@dataclass(frozen=True)
class Seg:
    start: float
    end: float
    text: str
    speaker: str | None = None


TIMED = (
    "[00:00:00.000 --> 00:00:02.000] שלום לכולם\n"
    "00:00:02,000 --> 00:00:04,500 an SRT-style line\n"
    "\n"
    "[1:02:03.5 -> 1:02:04] any bracketed prefix\n"
    "a line without timing\n"
    "[00:00:09.000 --> 00:00:10.000]\n"
)


def test_only_text_is_replaced_and_everything_else_is_kept_byte_for_byte() -> None:
    transcript = parse(TIMED)
    assert [line.prefix for line in transcript.lines] == [
        "[00:00:00.000 --> 00:00:02.000] ",
        "00:00:02,000 --> 00:00:04,500 ",
        "",
        "[1:02:03.5 -> 1:02:04] ",
        "",
        "[00:00:09.000 --> 00:00:10.000]",
    ]
    assert [line.number for line in transcript.correctable] == [1, 2, 4, 5]
    assert render_timed(transcript, {}) == TIMED
    changed = render_timed(transcript, {1: "שלום לכולם!", 5: "A line without timing."})
    assert changed.split("\n")[0] == "[00:00:00.000 --> 00:00:02.000] שלום לכולם!"
    assert changed.split("\n")[4] == "A line without timing."
    assert render_plain(transcript, {1: "שלום לכולם!"}).split("\n")[:2] == [
        "שלום לכולם!",
        "an SRT-style line",
    ]


def test_crlf_and_missing_final_newline_survive() -> None:
    text = "[0:01 --> 0:02] a\r\n[0:02 --> 0:03] b"
    transcript = parse(text)
    assert [line.text for line in transcript.lines] == ["a", "b"]
    assert render_timed(transcript, {}) == "[0:01 --> 0:02] a\n[0:02 --> 0:03] b"


@pytest.mark.parametrize(
    ("seconds", "stamp"),
    [
        (0.0, "00:00:00.000"),
        (1.234, "00:00:01.234"),
        (59.999, "00:00:59.999"),
        (3725.5, "01:02:05.500"),
        (99 * 3600 + 59 * 60 + 59.999, "99:59:59.999"),
        (100 * 3600 + 0.001, "100:00:00.001"),  # hours grow past 99, as the writer always did
        (1234 * 3600 + 61.5, "1234:01:01.500"),
    ],
)
def test_timestamps_round_trip_to_the_millisecond(seconds: float, stamp: str) -> None:
    assert format_timestamp(seconds) == stamp
    assert parse_timestamp(stamp) == pytest.approx(seconds, abs=5e-7)
    assert format_timestamp(parse_timestamp(stamp)) == stamp


def test_what_the_writer_writes_the_line_pattern_and_the_reader_accept() -> None:
    segments = [
        Seg(-0.2, 1.0, "  שלום\nעולם  "),  # before zero is zero; one segment is one line
        Seg(1.0, 2.5, "a <b> & c --> d [x]"),
        Seg(100 * 3600, 100 * 3600 + 1.25, "past a hundred hours"),
    ]
    text = render_segments(segments)
    assert text.splitlines() == [
        "[00:00:00.000 --> 00:00:01.000] שלום עולם",
        "[00:00:01.000 --> 00:00:02.500] a <b> & c --> d [x]",
        "[100:00:00.000 --> 100:00:01.250] past a hundred hours",
    ]
    matches = [TIMED_LINE.match(line) for line in text.splitlines()]
    assert all(matches)
    rows = [
        (parse_timestamp(m["start"]), parse_timestamp(m["end"]), m["text"]) for m in matches if m
    ]
    assert rows == [
        (0.0, 1.0, "שלום עולם"),
        (1.0, 2.5, "a <b> & c --> d [x]"),
        (360000.0, 360001.25, "past a hundred hours"),
    ]
    transcript = parse(text)
    assert [line.text for line in transcript.lines] == [row[2] for row in rows]
    assert [TIMED_PREFIX.match(line.prefix) is not None for line in transcript.lines] == [True] * 3
    assert render_timed(transcript, {}) == text
    assert render_plain(transcript, {}) == "שלום עולם\na <b> & c --> d [x]\npast a hundred hours\n"


def test_the_line_pattern_wants_our_exact_form() -> None:
    assert TIMED_LINE.match("[00:00:01.000 --> 00:00:02.000] text")
    for line in [
        "[00:00:01.000 --> 00:00:02.000]",  # no text
        "[00:00:01.000 --> 00:00:02.000]  text",  # text after two spaces
        "[0:00:01.000 --> 0:00:02.000] text",  # one hour digit
        "[00:00:01,000 --> 00:00:02,000] text",  # SRT's comma
        "[00:00:01.00 --> 00:00:02.00] text",  # centiseconds
        "00:00:01.000 --> 00:00:02.000 text",  # no brackets
    ]:
        assert not TIMED_LINE.match(line), line


def test_the_reader_keeps_srt_style_prefixes_to_two_hour_digits_as_before() -> None:
    transcript = parse("99:00:00,000 --> 99:00:01,000 a\n100:00:00,000 --> 100:00:01,000 b\n")
    assert [line.prefix for line in transcript.lines] == ["99:00:00,000 --> 99:00:01,000 ", ""]
    assert render_timed(transcript, {}) == (
        "99:00:00,000 --> 99:00:01,000 a\n100:00:00,000 --> 100:00:01,000 b\n"
    )


def test_a_byte_order_mark_is_dropped() -> None:
    transcript = parse("\ufeff[00:00:00.000 --> 00:00:01.000] a\n")
    assert transcript.lines[0].prefix == "[00:00:00.000 --> 00:00:01.000] "
    assert render_timed(transcript, {1: "A"}) == "[00:00:00.000 --> 00:00:01.000] A\n"


def test_a_labelled_line_keeps_its_speaker_out_of_the_text_and_the_plain_text_has_paragraphs() -> (
    None
):
    segments = [
        Seg(0.0, 1.0, "Good morning.", "Speaker 1"),
        Seg(1.0, 2.0, "Today: tides.", "Speaker 1"),
        Seg(2.5, 3.0, "A question [inaudible]", "Speaker 2"),
        Seg(3.0, 4.0, "Yes.", "Speaker 1"),
    ]
    text = render_segments(segments)
    assert (
        text.splitlines()[2] == "[00:00:02.500 --> 00:00:03.000] [Speaker 2] A question [inaudible]"
    )
    transcript = parse(text)
    assert [line.text for line in transcript.lines] == [s.text for s in segments]
    assert [line.speaker for line in transcript.lines] == [s.speaker for s in segments]
    assert render_timed(transcript, {3: "A question?"}).splitlines()[2] == (
        "[00:00:02.500 --> 00:00:03.000] [Speaker 2] A question?"
    )
    assert render_plain(transcript, {}) == (
        "Speaker 1: Good morning.\nToday: tides.\n\n"
        "Speaker 2: A question [inaudible]\n\nSpeaker 1: Yes.\n"
    )
