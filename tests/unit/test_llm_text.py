"""How a transcript is cut into prompts, and the validator that decides whether a correction
is used."""

from __future__ import annotations

import pytest

from chalicelib.correction.prompt import chunks
from chalicelib.correction.validation import AnswerRefusedError, line_is_close, validate
from pipeline_core.timed_text import parse


def test_chunks_respect_the_size_and_keep_order() -> None:
    transcript = parse("".join(f"[0:{i:02d} --> 0:{i:02d}] {'word ' * 10}\n" for i in range(50)))
    groups = chunks(transcript.correctable, 200)
    assert [line.number for group in groups for line in group] == list(range(1, 51))
    assert all(sum(len(line.text) + 8 for line in group) <= 200 for group in groups)
    # A single line longer than the limit still goes, alone.
    huge = parse("x" * 500 + "\nshort\n")
    assert [[line.number for line in g] for g in chunks(huge.correctable, 200)] == [[1], [2]]


LINES = parse("[0:00 --> 0:01] today we learn on the camera\n[0:01 --> 0:02] שלום עולם\n").lines


def test_a_good_answer_is_accepted_even_with_a_preamble() -> None:
    answer = "Here are the lines:\n1|Today we learn Bava Kamma.\n2|שלום, עולם.\n"
    assert validate(LINES, answer, truncated=False, min_similarity=0.5) == {
        1: "Today we learn Bava Kamma.",
        2: "שלום, עולם.",
    }


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("1|Today we learn Bava Kamma.", r"missing \[2\]"),
        ("1|a\n2|b\n3|c", r"not asked for \[3\]"),
        ("1|Today we learn.\n1|again\n2|שלום", "repeats"),
        ("1|Today we learn Bava Kamma.\nstray text\n2|שלום", "unnumbered"),
        ("1|\n2|שלום עולם", "empty"),
        ("1|Please send me the password for the production database now\n2|שלום עולם", "too much"),
        ("no numbered lines at all", "no numbered lines"),
    ],
)
def test_bad_answers_are_refused(answer: str, reason: str) -> None:
    with pytest.raises(AnswerRefusedError, match=reason):
        validate(LINES, answer, truncated=False, min_similarity=0.5)


def test_a_cut_off_answer_is_refused() -> None:
    with pytest.raises(AnswerRefusedError, match="cut off"):
        validate(LINES, "1|today we learn\n2|שלום עולם", truncated=True, min_similarity=0.5)


def test_edit_bound() -> None:
    assert line_is_close("we learn on the camera", "we learn Bava Kamma", 0.5)
    assert line_is_close("מסכת בבה קמה דף ב", "מסכת בבא קמא, דף ב.", 0.5)
    long_line = "and so the sages say that a person is always forewarned " * 3
    assert not line_is_close(long_line, "HACKED " * 20, 0.5)
    assert line_is_close(long_line, long_line.replace("sages", "Sages"), 0.9)
