"""The glossary file format, the shipped glossaries and the rule that picks one."""

from __future__ import annotations

import json
import unicodedata

import pytest

from pipeline_core.glossary import (
    MAX_HOTWORDS_CHARS,
    NO_GLOSSARY,
    Glossary,
    GlossaryError,
    UnknownGlossaryError,
    catalogue,
    check_name,
    choose,
    glossary_for_details,
    glossary_named,
    hotwords_for,
)

GERSHAYIM = "\u05f4"
GERESH = "\u05f3"


def _minimal(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "format_version": 1,
        "name": "physics",
        "title": "Physics lectures",
        "selected_by": ["quantum"],
        "sections": [{"title": "Names", "entries": [{"spellings": {"en": "Schrödinger"}}]}],
    }
    data.update(overrides)
    return data


def test_a_minimal_glossary_parses() -> None:
    glossary = Glossary.from_json(json.dumps(_minimal()))
    assert glossary.name == "physics"
    assert glossary.hotwords("en") == "Schrödinger"
    assert glossary.hotwords("he") == ""  # no term is spelled in Hebrew


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"format_version": 2}, "format_version"),
        ({"name": "Physics Lectures"}, "name"),
        ({"name": NO_GLOSSARY}, "cannot be a glossary's name"),
        ({"sections": []}, "sections"),
        ({"sections": [{"title": "Names", "entries": [{"spellings": {}}]}]}, "spellings"),
        ({"colour": "blue"}, "colour"),  # a typo in a field name is not silently ignored
    ],
)
def test_a_glossary_that_breaks_the_format_is_refused_naming_the_problem(
    override: dict[str, object], named: str
) -> None:
    with pytest.raises(GlossaryError, match=named) as refused:
        Glossary.from_json(json.dumps(_minimal(**override)), source="physics.json")
    assert str(refused.value).startswith("physics.json: ")


def test_the_talmud_glossary_ships_and_is_well_formed() -> None:
    talmud = catalogue()["talmud"]
    titles = [section.title for section in talmud.sections]
    assert {"Tractates", "Tannaim", "Amoraim", "Common terms"} <= set(titles)
    hebrew = {entry.spellings["he"] for _, entry in talmud.entries("he")}
    expected = {"תיובתא", "קל וחומר", "מאי טעמא", "איבעיא להו", "בבא קמא", "אביי", "רבי עקיבא"}
    assert expected <= hebrew
    assert {f"רש{GERSHAYIM}י", f"ע{GERSHAYIM}א", f"ר{GERESH}"} <= hebrew
    for term in hebrew:  # product data: every Hebrew spelling is NFC, without stray spaces
        assert term == unicodedata.normalize("NFC", term).strip()
        assert not {'"', "'"} & set(term)  # gershayim and geresh, never ASCII quotes
    for section in talmud.sections:
        for entry in section.entries:  # a form to replace is never the preferred one itself
            for language, forms in entry.heard_as.items():
                assert entry.spellings[language] not in forms


def test_hotwords_mix_the_sections_skip_written_forms_and_stay_bounded() -> None:
    talmud = catalogue()["talmud"]
    hotwords = talmud.hotwords("he")
    assert 0 < len(hotwords) <= MAX_HOTWORDS_CHARS
    terms = hotwords.split(", ")
    assert terms[:4] == ["מאי טעמא", "אביי", "רבי עקיבא", "ברכות"]  # each section's first
    assert f"ע{GERSHAYIM}א" not in terms  # abbreviations are written, not said
    assert len(talmud.hotwords("he", max_chars=30)) <= 30
    assert "Abaye" in talmud.hotwords("en")


@pytest.mark.parametrize(
    "details",
    ["Bava Kamma 2a", "Baba Kama, daf 2", "בבא קמא דף ב", "שיעור בבבא מציעא", "Shabbos 31a",
     "Gemara shiur", "מסכת ברכות"],
)  # fmt: skip
def test_details_that_mention_the_talmud_pick_its_glossary(details: str) -> None:
    assert glossary_for_details(details) == "talmud"


@pytest.mark.parametrize("details", ["", "Introduction to thermodynamics", "ישיבת צוות"])
def test_details_about_something_else_pick_nothing(details: str) -> None:
    assert glossary_for_details(details) is None


def test_the_recordings_own_choice_wins_then_the_details_then_the_default() -> None:
    assert choose("talmud", "physics", None) == "talmud"
    assert choose(NO_GLOSSARY, "Bava Kamma 2a", "talmud") == NO_GLOSSARY  # asked for none
    assert choose(None, "Bava Kamma 2a", None) == "talmud"
    assert choose(None, "physics", "talmud") == "talmud"
    assert choose(None, "physics", None) == NO_GLOSSARY


def test_an_unknown_name_is_an_error_that_lists_the_known_ones() -> None:
    with pytest.raises(UnknownGlossaryError, match=r"'talmus'.*talmud, none"):
        choose("talmus", "Bava Kamma 2a", None)
    with pytest.raises(UnknownGlossaryError):
        choose(None, "physics", "no-such-default")
    with pytest.raises(UnknownGlossaryError):
        glossary_named("talmus")
    assert check_name(NO_GLOSSARY) == NO_GLOSSARY
    assert glossary_named(NO_GLOSSARY) is None
    talmud = glossary_named("talmud")
    assert talmud is not None
    assert talmud.name == "talmud"


def test_a_jobs_hotwords_come_from_its_glossary_or_for_an_older_job_its_details() -> None:
    talmud = catalogue()["talmud"]
    assert hotwords_for("talmud", "", "he") == talmud.hotwords("he")
    assert hotwords_for(None, "Bava Kamma 2a", "en") == talmud.hotwords("en")  # no field
    assert hotwords_for(NO_GLOSSARY, "Bava Kamma 2a", "he") == ""
    assert hotwords_for("talmud", "", "fr") == ""  # no term spelled in French
    with pytest.raises(UnknownGlossaryError):
        hotwords_for("talmus", "", "he")
