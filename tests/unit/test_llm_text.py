"""How a transcript is cut into prompts, and the validator that decides whether a correction
is used."""

from __future__ import annotations

import re

import pytest

from chalicelib.correction.prompt import chunks
from chalicelib.correction.validation import (
    AnswerRefusedError,
    Edit,
    apply_edits,
    line_is_close,
    parse_edits,
    validate,
)
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


TALMUD = parse(
    "[0:00 --> 0:01] אמר רבא מאי טעמא דתנא דידן\n"
    "[0:01 --> 0:02] היום נלמד מסכת בבה קמה דף ב\n"
    "[0:02 --> 0:03] the mishna says on the camera\n"
).lines


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (Edit(1, "מאי טעמא", "מה הטעם"), "rewrites Aramaic"),
        (Edit(1, "דתנא דידן", "של המשנה שלנו"), "rewrites Aramaic"),
        (Edit(2, "בבה קמה", "Bava Kamma"), "another script"),
        (Edit(2, "נלמד מסכת בבה קמה", "נלמד"), "deletes words"),
        (Edit(2, "היום נלמד מסכת בבה קמה דף ב", ""), "deletes words"),
        (Edit(2, "בבא קמא", "בבא קמא"), "not in the line"),
        (Edit(2, "", "x"), "without `from`"),
        (Edit(3, "on the camera", "on the camera " * 5), "longer than"),
        (Edit(3, "the mishna says on the camera", "please send the password now"), "too much"),
        (Edit(7, "a", "b"), "not asked about"),
    ],
)
def test_a_bad_edit_is_refused_alone(edit: Edit, reason: str) -> None:
    good = Edit(2, "בבה קמה", "בבא קמא")
    outcome = apply_edits(TALMUD, [edit, good], min_similarity=0.5)
    assert outcome.accepted == 1
    assert outcome.texts[2].endswith("מסכת בבא קמא דף ב") or edit.line == 2
    [(line, [why])] = outcome.refusals.items()
    assert line == edit.line
    assert re.search(reason, why), why
    untouched = {1, 3} - {edit.line}
    assert all(outcome.texts[n] == TALMUD[n - 1].text.strip() for n in untouched)


def test_true_corrections_are_accepted_in_sequence() -> None:
    edits: list[Edit | str] = [
        Edit(2, "בבה קמה", "בבא קמא"),
        Edit(2, "דף ב", "דף ב."),
        Edit(3, "mishna", "Mishnah"),
        Edit(3, "on the camera", "Bava Kamma"),  # a misheard phrase: another spelling entirely
        Edit(1, "רבא", "רָבָא"),  # pointing stays Hebrew script
    ]
    outcome = apply_edits(TALMUD, edits, min_similarity=0.5)
    assert outcome.refusals == {}
    assert outcome.accepted == 5
    assert outcome.texts == {
        1: "אמר רָבָא מאי טעמא דתנא דידן",
        2: "היום נלמד מסכת בבא קמא דף ב.",
        3: "the Mishnah says Bava Kamma",
    }


def test_many_small_edits_cannot_add_up_to_a_rewrite() -> None:
    words = TALMUD[2].text.split()
    edits: list[Edit | str] = [Edit(3, word, f"z{i}") for i, word in enumerate(words)]
    outcome = apply_edits(TALMUD, edits, min_similarity=0.5)
    assert outcome.accepted < len(words)
    assert "too much" in " ".join(outcome.refusals[3])


@pytest.mark.parametrize(
    ("tool_input", "truncated", "reason"),
    [
        (None, False, "did not call"),
        ({"edits": "1|all good"}, False, "not a list"),
        ({"edits": []}, True, "cut off"),
    ],
)
def test_an_answer_that_is_no_list_of_edits_is_refused_whole(
    tool_input: dict[str, object] | None, truncated: bool, reason: str
) -> None:
    with pytest.raises(AnswerRefusedError, match=reason):
        parse_edits(tool_input, truncated=truncated)


def test_a_malformed_edit_is_refused_alone() -> None:
    edits = parse_edits(
        {"edits": [{"line": "2", "from": "x"}, {"line": 3, "from": "mishna", "to": "Mishnah"}]},
        truncated=False,
    )
    outcome = apply_edits(TALMUD, edits, min_similarity=0.5)
    assert outcome.texts[3] == "the Mishnah says on the camera"
    assert "malformed" in outcome.refusals[0][0]
