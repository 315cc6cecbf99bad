"""Subtitle cues: the player conventions (2 lines of 42 characters, 7 seconds, cut at word
timings), right-to-left marks, and every file read back by a real parser."""

from __future__ import annotations

import itertools

import srt as srt_parser
import webvtt

from pipeline_core.subtitles import RLM, CueLimits, cues, srt, vtt, wrap
from pipeline_core.transcript_document import SegmentRecord, TranscriptDocument, WordRecord

LIMITS = CueLimits()
SENTENCE = (
    "the mishnah lists four primary categories of damage and the gemara asks why the "
    "tanna counts them in this particular order when the verses give another order entirely"
)


def _document(segments: list[SegmentRecord], language: str = "en") -> TranscriptDocument:
    return TranscriptDocument(
        source_key="audio-input/lesson.mp3", job_id="j1", language=language, model="m",
        audio_seconds=100.0, transcribe_seconds=5.0, real_time_factor=0.05,
        segments=tuple(segments),
    )  # fmt: skip


def _timed_words(text: str, start: float, seconds_per_word: float) -> tuple[WordRecord, ...]:
    return tuple(
        WordRecord(
            start=round(start + i * seconds_per_word, 3),
            end=round(start + (i + 1) * seconds_per_word - 0.05, 3),
            text=f" {word}",
        )
        for i, word in enumerate(text.split())
    )


def _check_conventions(cue_list: list[srt_parser.Subtitle]) -> None:
    for cue in cue_list:
        lines = cue.content.replace(RLM, "").split("\n")
        assert 1 <= len(lines) <= LIMITS.lines, cue
        assert all(len(line) <= LIMITS.line_chars for line in lines), cue
        assert (cue.end - cue.start).total_seconds() <= LIMITS.seconds, cue
        assert cue.end >= cue.start


def test_a_long_segment_is_cut_at_word_timings_into_cues_players_accept() -> None:
    words = _timed_words(SENTENCE, 10.0, 0.6)  # 28 words over 16.8 s
    segment = SegmentRecord(start=10.0, end=26.8, text=SENTENCE, words=words)

    parsed = list(srt_parser.parse(srt(_document([segment]))))

    assert len(parsed) > 2
    _check_conventions(parsed)
    starts = {w.start for w in words}
    ends = {w.end for w in words}
    assert all(cue.start.total_seconds() in starts for cue in parsed)
    assert all(cue.end.total_seconds() in ends for cue in parsed)
    assert " ".join(cue.content.replace("\n", " ") for cue in parsed) == SENTENCE
    captions = webvtt.from_string(vtt(_document([segment]))).captions
    assert [c.text for c in captions] == [cue.content for cue in parsed]


def test_the_seven_second_limit_cuts_slow_speech_with_few_characters() -> None:
    text = "one two three four five six"
    segment = SegmentRecord(start=0.0, end=18.0, text=text, words=_timed_words(text, 0.0, 3.0))
    parsed = list(srt_parser.parse(srt(_document([segment]))))
    _check_conventions(parsed)
    # each word lasts 2.95 s of its 3: three words would run 8.95 s
    assert [cue.content for cue in parsed] == ["one two", "three four", "five six"]


def test_without_words_the_segment_time_is_shared_in_proportion_to_length() -> None:
    segment = SegmentRecord(start=100.0, end=112.0, text=SENTENCE)
    cue_list = cues([segment])
    assert len(cue_list) > 2
    assert cue_list[0].start == 100.0
    assert abs(cue_list[-1].end - 112.0) < 1e-9
    for cue, following in itertools.pairwise(cue_list):
        assert abs(cue.end - following.start) < 1e-9  # contiguous: the segment's time, shared
    # a cue's share of the time follows its share of the characters
    characters = sum(len(cue.text) + 1 for cue in cue_list)
    for cue in cue_list:
        assert abs((cue.end - cue.start) / 12.0 - (len(cue.text) + 1) / characters) < 0.01
    _check_conventions(list(srt_parser.parse(srt(_document([segment])))))


def test_words_that_do_not_spell_the_text_are_not_trusted() -> None:
    segment = SegmentRecord(
        start=0.0, end=4.0, text="hello world", words=_timed_words("something else", 3.0, 0.5)
    )
    [cue] = cues([segment])
    assert (cue.start, cue.end, cue.text) == (0.0, 4.0, "hello world")


def test_a_word_without_a_leading_space_continues_the_previous_one() -> None:
    words = (
        WordRecord(start=0.0, end=0.5, text=" page"),
        WordRecord(start=0.5, end=0.8, text=" 1"),
        WordRecord(start=0.8, end=1.0, text="0."),
    )
    [cue] = cues([SegmentRecord(start=0.0, end=1.0, text="page 10.", words=words)])
    assert (cue.start, cue.end, cue.lines) == (0.0, 1.0, ("page 10.",))


def test_two_lines_are_balanced_and_a_word_longer_than_a_line_stands_alone() -> None:
    assert wrap(["short", "line"]) == ("short line",)
    lines = wrap(
        ["the", "gemara", "asks", "why", "the", "tanna", "counts", "them", "in", "this", "order"]
    )
    assert lines is not None
    assert len(lines) == 2
    top, bottom = lines
    assert (top, bottom) == ("the gemara asks why the tanna", "counts them in this order")
    # when two cuts are as good, the shorter line goes on top
    assert wrap(["x" * 20, "y" * 20, "z" * 20]) == ("x" * 20, "y" * 20 + " " + "z" * 20)
    assert wrap(["x" * 60]) == ("x" * 60,)
    assert wrap(["x" * 30, "y" * 30, "z" * 30]) is None  # three lines' worth

    long_word = "פסקאותארוכותמאודשאינןנכנסותבשורהאחתבשוםאופןבכלל"
    segment = SegmentRecord(start=0.0, end=3.0, text=f"אמר {long_word} כך")
    assert [cue.text for cue in cues([segment])] == ["אמר", long_word, "כך"]


def test_overlapping_segments_give_cues_that_end_when_the_next_starts() -> None:
    first = SegmentRecord(start=0.0, end=5.0, text="first")
    second = SegmentRecord(start=4.0, end=6.0, text="second")
    assert [(c.start, c.end) for c in cues([first, second])] == [(0.0, 4.0), (4.0, 6.0)]


def test_hebrew_lines_are_wrapped_in_right_to_left_marks_english_not() -> None:
    hebrew = "2 דפים בשיעור היום, ואחר כך נלמד את המשנה הבאה בפרק הזה. נכון?"
    segment = SegmentRecord(start=0.0, end=6.0, text=hebrew)
    [cue] = list(srt_parser.parse(srt(_document([segment], language="he"))))
    lines = cue.content.split("\n")
    assert len(lines) == 2
    assert all(line.startswith(RLM) and line.endswith(RLM) for line in lines)
    assert " ".join(line.strip(RLM) for line in lines) == hebrew
    [caption] = webvtt.from_string(vtt(_document([segment], language="he"))).captions
    assert caption.text == cue.content

    arabic = _document([SegmentRecord(start=0.0, end=1.0, text="مرحبا")], language="ar")
    assert RLM in srt(arabic)
    english = _document([SegmentRecord(start=0.0, end=1.0, text="hello")], language="en")
    assert RLM not in srt(english) + vtt(english)


def test_a_full_cue_ends_after_a_clause_in_its_second_half_not_mid_clause() -> None:
    text = (
        "today we finish the first chapter of the tractate, and then we begin the second one "
        "after a short break"
    )
    segment = SegmentRecord(start=0.0, end=7.0, text=text, words=_timed_words(text, 0.0, 0.3))
    assert [cue.text for cue in cues([segment])] == [
        "today we finish the first chapter of the tractate,",
        "and then we begin the second one after a short break",
    ]
    # without punctuation in the second half, as many words as fit
    plain = text.replace(",", "")
    unpunctuated = SegmentRecord(
        start=0.0, end=7.0, text=plain, words=_timed_words(plain, 0.0, 0.3)
    )
    first = cues([unpunctuated])[0]
    assert len(first.text) > len("today we finish the first chapter of the tractate")


def test_a_labelled_cue_names_its_speaker_with_a_vtt_voice_tag_and_an_srt_prefix() -> None:
    document = _document(
        [
            SegmentRecord(start=0.0, end=2.0, text="Good morning.", speaker="Speaker 1"),
            SegmentRecord(start=2.5, end=4.0, text="Morning.", speaker="Speaker 2"),
            SegmentRecord(start=4.5, end=5.0, text="Unlabelled."),
        ]
    )
    captions = webvtt.from_string(vtt(document)).captions
    assert [(c.voice, c.text) for c in captions] == [
        ("Speaker 1", "Good morning."),
        ("Speaker 2", "Morning."),
        (None, "Unlabelled."),
    ]
    assert [s.content for s in srt_parser.parse(srt(document))] == [
        "Speaker 1: Good morning.",
        "Speaker 2: Morning.",
        "Unlabelled.",
    ]
