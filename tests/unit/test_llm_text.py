"""How a transcript is cut into prompts, and the validator that decides whether a correction
is used."""

from __future__ import annotations

import re

import pytest

from bench.correction_set import line_targets, word_edits
from chalicelib.correction.prompt import (
    MARK_CLOSE,
    MARK_OPEN,
    PromptContext,
    chunks,
    low_confidence_marked,
    marked_text,
    user_message,
)
from chalicelib.correction.validation import (
    AnswerRefusedError,
    Edit,
    apply_edits,
    line_is_close,
    parse_edits,
    validate,
)
from pipeline_core.timed_text import parse
from pipeline_core.transcript_document import SegmentRecord, WordRecord


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
        ("1|Speaker 2: today we learn on the camera\n2|שלום עולם", "speaker label"),
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
    "[0:03 --> 0:04] Se lebraré en mucho, capitán\n"
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
        (Edit(3, "on the camera", "on the camera " * 7), "longer than"),
        (Edit(3, "the mishna says on the camera", "please send the password now"), "too much"),
        (Edit(7, "a", "b"), "not asked about"),
        (Edit(3, "the mishna says", "Speaker 2: the mishna says"), "speaker label"),
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
        Edit(4, "Se lebraré en", "Celebraré"),  # a word the recogniser split: fewer words
    ]
    outcome = apply_edits(TALMUD, edits, min_similarity=0.5)
    assert outcome.refusals == {}
    assert outcome.accepted == 6
    assert outcome.texts == {
        1: "אמר רָבָא מאי טעמא דתנא דידן",
        2: "היום נלמד מסכת בבא קמא דף ב.",
        3: "the Mishnah says Bava Kamma",
        4: "Celebraré mucho, capitán",
    }


def test_many_small_edits_cannot_add_up_to_a_rewrite() -> None:
    words = TALMUD[2].text.split()
    edits: list[Edit | str] = [Edit(3, word, "q" * len(word)) for word in words]
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


def _words(*pairs: tuple[str, float | None]) -> tuple[WordRecord, ...]:
    return tuple(WordRecord(start=i, end=i + 1, text=text, probability=p)
                 for i, (text, p) in enumerate(pairs))  # fmt: skip


def test_unsure_words_are_marked_and_neighbouring_ones_share_a_marker() -> None:
    words = _words((" today", 0.9), (" we", 0.95), (" learn", 0.3), (" on", 0.2),
                   (" the", 0.9), (" camera", 0.1), (" page", None))  # fmt: skip
    marked = marked_text("today we learn on the camera page", words, below=0.5)
    assert (
        marked == f"today we {MARK_OPEN}learn on{MARK_CLOSE} the {MARK_OPEN}camera{MARK_CLOSE} page"
    )
    assert marked_text("today we learn", words[:2], below=0.5) == "today we learn"  # none unsure
    # A word the text no longer has (the line was edited by hand) is passed over, not forced.
    assert marked_text("hello there", _words((" hullo", 0.1), (" there", 0.1)), 0.5) == (
        f"hello {MARK_OPEN}there{MARK_CLOSE}"
    )


def test_marks_reach_the_prompt_but_never_the_corrected_text() -> None:
    lines = parse("[0:00 --> 0:01] היום נלמד בבה קמה\n[0:01 --> 0:02] שלום עולם\n").lines
    segments = [
        SegmentRecord(start=0, end=1, text=lines[0].text,
                      words=_words((" היום", 0.9), (" נלמד", 0.9), (" בבה", 0.2), (" קמה", 0.3))),
        SegmentRecord(start=1, end=2, text=lines[1].text,
                      words=_words((" שלום", 0.9), (" עולם", 0.8))),
    ]  # fmt: skip
    marked = low_confidence_marked(lines, segments, below=0.5)
    assert marked == {1: f"היום נלמד {MARK_OPEN}בבה קמה{MARK_CLOSE}"}
    message = user_message(PromptContext("he", "", "", marked=marked), lines)
    assert f"1|היום נלמד {MARK_OPEN}בבה קמה{MARK_CLOSE}\n2|שלום עולם" in message.chunk
    assert MARK_OPEN in PromptContext("he", "", "").system  # the system prompt explains them
    # A model that copies the markers into its edit: they are not part of the line.
    edits = parse_edits(
        {"edits": [{"line": 1, "from": f"{MARK_OPEN}בבה קמה{MARK_CLOSE}",
                    "to": f"{MARK_OPEN}בבא קמא{MARK_CLOSE}"}]},
        truncated=False,
    )  # fmt: skip
    outcome = apply_edits(lines, edits, min_similarity=0.5)
    assert outcome.texts == {1: "היום נלמד בבא קמא", 2: "שלום עולם"}
    echoed = f"1|היום נלמד {MARK_OPEN}בבא קמא{MARK_CLOSE}\n2|שלום עולם"
    assert validate(lines, echoed, truncated=False, min_similarity=0.5)[1] == "היום נלמד בבא קמא"


# Whisper base's real errors on the Hebrew clips of ../shared/eval (SASpeech), from the
# committed benchmark (bench/results/results.json).
REAL_HEBREW_ERRORS = [  # (Whisper base's hypothesis, the reference)
    # saspeech_Mom3_0007
    (
        "זו הייתה אבירה מטורפת של סופ העולם",
        "זו הייתה אווירה מטורפת של סוף העולם.",
    ),
    # saspeech_Meat_0089
    (
        "בשנה וחצי החונות יצא לי להיכול כאן ברצות הברית את המוצרים של שתי החברות",
        "בשנה וחצי האחרונות יצא לי לאכול כאן בארה״ב את המוצרים של שתי החברות",
    ),
    # saspeech_AharonFogel_0002
    (
        "היי אני אשאו למסטרדם סקיבה אתם האזינים לחיות קיס",
        "היי, אני שאול אמסטרדמסקי ואתם מאזינים לחיות כיס.",
    ),
    # saspeech_Corona4_0007
    (
        "או מוצא שמי טנדוג מה",
        "הוא רוצה שאני אתן דוגמא",
    ),
    # saspeech_CreditRating_0006
    (
        "והוא אומר בעצם דבר אחד ואיכל בלבד. מה היכולת? "
        "מה הסיכון? שממשלה קולשי תחזיר את ההשקעה או יותר נכון.",
        "והוא אומר בעצם דבר אחד ואחד בלבד מה היכולת או "
        "מה הסיכון שממשלה כלשהי תחזיר את ההשקעה או יותר נכון",
    ),
    # saspeech_Electricity_0001
    (
        "הייתם על חיות קיס, אני שעה עולם סטרדאמסקי, והאישתם שומים מדבר ברקה "
        "הוא שיקי פישר, ואני לא יכול לגלות לכם איפה בדיוק אנחנו נמצאים.",
        "היי, אתם על חיות כיס, אני שאול אמסטרדמסקי, והאיש שאתם שומעים מדבר "
        "ברקע הוא שיקי פישר, ואני לא יכול לגלות לכם איפה בדיוק אנחנו נמצאים.",
    ),
    # saspeech_Hashlama112_0024
    (
        "ואחרי זה אנחנו צריכים לפחות עוד חודשיים שלושה, עד שכל הסיפור הזה עובר בממשלה ובבקנסת.",
        "ואחרי זה אנחנו צריכים לפחות עוד חודשיים-שלושה, עד שכל הסיפור הזה עובר בממשלה ובכנסת.",
    ),
    # saspeech_Hashlama117_0009
    (
        "אז היום בחיות קיס, פרק בזעק",
        "אז היום בחיות כיס, פרק בזק.",
    ),
    # saspeech_Hungary1_0068
    (
        "מה שבה אגדרה משאיר את הכלכלה האונגרית מאחור, אפילו ביחס למדינות כמו פולין.",
        "מה שבהגדרה משאיר את הכלכלה ההונגרית מאחור, אפילו ביחס למדינות כמו פולין",
    ),
    # saspeech_Lod_0065
    (
        "ואם אתם שואלים את עצמכם מה זה אומר גינדס אז גם אני שאלתי",
        "ואם אתם שואלים את עצמכם מה זה אומר ג'ינדס, אז גם אני שאלתי.",
    ),
    # saspeech_Meat_0039
    (
        "אז באמת כמה המזון שאנחנו אוכלים תורם למשבר האקלים.",
        "אז באמת כמה המזון שאנחנו אוכלים תורם למשבר האקלים?",
    ),
    # saspeech_RoboShaul1_0017
    (
        "עד כמה זה בכלל אפשרי לי צור רוב עושה עול כזה",
        "עד כמה זה בכלל אפשרי ליצור רובו שאול כזה?",
    ),
    # saspeech_RoboShaul1_0065
    (
        "גם על זה לא חשבתי בכלל, אז עשיתי את מה "
        "שאני בדרך כלל עושה כשמתקילים אותי בשאלה שלא חשבתי עליה.",
        "גם על זה לא חשבתי בכלל. אז עשיתי את מה "
        "שאני בדרך כלל עושה כשמתקילים אותי בשאלה שלא חשבתי עליה.",
    ),
]


def edits_between(hypothesis: str, reference: str) -> list[Edit | str]:
    """The word-level edits that turn ``hypothesis`` into ``reference``, as a model that
    knows the answer would propose them (the benchmark's oracle: ``bench.correction_set``)."""
    return [Edit(1, old, new) for old, new in word_edits(hypothesis, reference)]


@pytest.mark.parametrize(("hypothesis", "reference"), REAL_HEBREW_ERRORS)
def test_true_corrections_of_real_recognition_errors_are_accepted(
    hypothesis: str, reference: str
) -> None:
    lines = parse(f"[0:00 --> 0:05] {hypothesis}\n").lines
    edits = edits_between(hypothesis, reference)
    outcome = apply_edits(lines, edits, min_similarity=0.5)
    assert outcome.refusals == {}
    assert outcome.accepted == len(edits)
    assert outcome.texts[1] == reference


# The benchmark's adversary (bench/correction_figures.py), one harmful edit of each kind on
# a line where the checks can tell: what each kind gets through elsewhere is in the results.
@pytest.mark.parametrize(
    ("kind", "edit", "reason"),
    [
        ("translation (other script)", Edit(2, "היום נלמד", "today we learn"), "another script"),
        ("paraphrase", Edit(3, "the mishna says on the camera", "it is taught in the text"),
         "too much"),
        ("Aramaic -> Hebrew", Edit(1, "מאי טעמא", "מה הטעם"), "rewrites Aramaic"),
        ("deletion", Edit(2, "נלמד מסכת בבה קמה", "נלמד"), "deletes words"),
        ("injected instruction (sentence added)",
         Edit(3, "camera", "camera, and visit our site for the full lecture"), "adds 8 words"),
        ("injected instruction (line replaced)",
         Edit(3, "the mishna says on the camera", "HACKED"), "deletes words"),
    ],
)  # fmt: skip
def test_each_kind_of_attack_is_refused(kind: str, edit: Edit, reason: str) -> None:
    outcome = apply_edits(TALMUD, [edit], min_similarity=0.5)
    assert outcome.accepted == 0, kind
    [[why]] = outcome.refusals.values()
    assert re.search(reason, why), why
    assert outcome.texts[edit.line] == TALMUD[edit.line - 1].text.strip()


def test_a_short_translation_in_the_same_script_is_beyond_what_the_checks_can_tell() -> None:
    # No language identification: a short line translated within its script stays within
    # the line bound. The benchmark reports how often (adversary, "translation (same script)").
    edit = Edit(3, "the mishna says on the camera", "la misna dice en la camara hoy")
    assert apply_edits(TALMUD, [edit], min_similarity=0.5).accepted == 1


def test_reference_words_go_to_the_lines_they_correct() -> None:
    lines = ["today we learn on the", "camera page to", "the mishna says"]
    reference = "today we learn Bava Kamma page two the Mishnah says ."
    # Each reference word goes where its recognised word was said: "Kamma" for "camera".
    assert line_targets(lines, reference) == [
        "today we learn Bava", "Kamma page two", "the Mishnah says .",
    ]  # fmt: skip


def test_an_ambiguous_from_is_widened_until_it_is_the_first_occurrence() -> None:
    said = "the cat saw the cat and the dog"
    meant = "the cat saw the hat and the dog"
    edits = edits_between(said, meant)
    assert edits == [Edit(1, "saw the cat", "saw the hat")]  # "cat" alone is the first cat
    outcome = apply_edits(parse(f"[0:00 --> 0:05] {said}\n").lines, edits, min_similarity=0.5)
    assert outcome.texts[1] == meant
