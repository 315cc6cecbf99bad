"""Domain glossaries: their file format, the ones that ship, and which one a recording gets.

A glossary is a JSON file in ``pipeline_core/glossaries/`` named ``<name>.json``. It ships
inside the code (the Lambda bundle vendors ``pipeline_core``, the worker's AMI and the
on-prem install are built from the same source) rather than living in the bucket: the
format and its reader change together, the same bytes reach the Dispatcher's check, the
worker's Whisper prompt and the LLM Caller's prompt, no job pays an S3 read or needs a
grant for it, and the on-prem uploader can refuse an unknown name before the upload. A
deployment's own extra terms still come from the bucket (``GLOSSARY_KEY``, added after the
chosen glossary by the LLM Caller).

Format (``format_version`` 1)::

    {"format_version": 1, "name": "talmud", "title": "...",
     "selected_by": ["Talmud", "גמרא"],
     "sections": [{"title": "Tractates", "selects": true,
                   "entries": [{"spellings": {"he": "בבא קמא", "en": "Bava Kamma"},
                                "heard_as": {"en": ["Baba Kama"]}, "note": "..."}]}]}

``spellings`` is the preferred spelling per language (Whisper's codes), ``heard_as`` what the
recogniser or a careless writer puts instead (the model is told to replace it), ``note`` a
short English gloss for the model. A section with ``selects`` lets any of its terms in a
recording's ``details`` choose the glossary, as ``selected_by`` phrases do.

Which glossary (``choose``): the recording's ``glossary`` metadata when given (``none``: no
glossary; an unknown name is an error, never skipped), else the glossary whose phrases the
``details`` mention ("Bava Kamma 2a" -> ``talmud``), else the deployment's default.
"""

from __future__ import annotations

import functools
import itertools
import re
from importlib import resources
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FORMAT_VERSION: Final = 1
NO_GLOSSARY: Final = "none"  # the name that asks for no glossary
NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,63}$"
# Whisper gives its prompt at most half of its 448-token context, and a long prompt makes
# it likelier to echo the prompt into silence; Hebrew takes about a token per letter.
MAX_HOTWORDS_CHARS: Final = 200
_FOLDER: Final = "glossaries"
# Hebrew's one-letter prefixes (and, the, in, to, from, that, as): "בבבא קמא" is "in Bava Kamma".
_HEBREW_PREFIXES: Final = "ובהלמשכד"


class GlossaryError(ValueError):
    """A glossary file that breaks the format."""


class UnknownGlossaryError(ValueError):
    """A glossary name that no shipped glossary has."""

    def __init__(self, name: str) -> None:
        self.name = name
        known = ", ".join([*sorted(catalogue()), NO_GLOSSARY])
        super().__init__(f"unknown glossary {name!r}; known glossaries: {known}")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GlossaryEntry(_Model):
    spellings: dict[str, str] = Field(min_length=1)  # language code -> preferred spelling
    heard_as: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    note: str = ""

    def spelling(self, language_code: str) -> str | None:
        return self.spellings.get(language_code)

    def forms(self) -> set[str]:
        """Every way the term may be written, in any language."""
        return {*self.spellings.values(), *(f for forms in self.heard_as.values() for f in forms)}


class GlossarySection(_Model):
    title: str = Field(min_length=1)
    selects: bool = False  # its terms in a recording's details choose this glossary
    # Its terms go into the speech recogniser's prompt too (not for written forms such as
    # abbreviations, which nobody says).
    for_recogniser: bool = True
    entries: tuple[GlossaryEntry, ...] = Field(min_length=1)


class Glossary(_Model):
    format_version: Literal[1]
    name: str = Field(pattern=NAME_PATTERN)
    title: str = Field(min_length=1)
    selected_by: tuple[str, ...] = ()
    sections: tuple[GlossarySection, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _name_is_not_reserved(self) -> Glossary:
        if self.name == NO_GLOSSARY:
            raise ValueError(f"{NO_GLOSSARY!r} names no glossary and cannot be a glossary's name")
        return self

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "glossary") -> Glossary:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "<file>"
            raise GlossaryError(f"{source}: {where}: {first['msg']}") from None

    def entries(self, language_code: str) -> list[tuple[GlossarySection, GlossaryEntry]]:
        """The entries with a spelling in ``language_code``, in the file's order."""
        return [
            (section, entry)
            for section in self.sections
            for entry in section.entries
            if entry.spelling(language_code)
        ]

    def selection_phrases(self) -> set[str]:
        """What, mentioned in a recording's details, chooses this glossary."""
        phrases = set(self.selected_by)
        for section in self.sections:
            if section.selects:
                phrases.update(form for entry in section.entries for form in entry.forms())
        return phrases

    def hotwords(self, language_code: str, max_chars: int = MAX_HOTWORDS_CHARS) -> str:
        """The terms for the speech recogniser's prompt, as many as fit in ``max_chars``:
        the first of each section, then the second of each... (each section's most useful
        first); empty when no term is in the language."""
        columns = [
            [e.spellings[language_code] for e in section.entries if e.spelling(language_code)]
            for section in self.sections
            if section.for_recogniser
        ]
        chosen: list[str] = []
        size = 0
        for row in itertools.zip_longest(*columns):
            for term in row:
                if term is None or term in chosen:
                    continue
                if size + len(term) + 2 > max_chars:
                    return ", ".join(chosen)
                chosen.append(term)
                size += len(term) + 2
        return ", ".join(chosen)


@functools.cache
def catalogue() -> dict[str, Glossary]:
    """The shipped glossaries by name, read once per process."""
    glossaries: dict[str, Glossary] = {}
    for item in sorted(resources.files("pipeline_core").joinpath(_FOLDER).iterdir(), key=str):
        if not item.name.endswith(".json"):
            continue
        glossary = Glossary.from_json(item.read_bytes(), source=item.name)
        if f"{glossary.name}.json" != item.name:
            raise GlossaryError(f"{item.name}: holds the glossary {glossary.name!r}; rename one")
        glossaries[glossary.name] = glossary
    return glossaries


def check_name(name: str) -> str:
    """``name`` when a glossary has it (or it is ``none``); else ``UnknownGlossaryError``."""
    if name != NO_GLOSSARY and name not in catalogue():
        raise UnknownGlossaryError(name)
    return name


def glossary_named(name: str) -> Glossary | None:
    """The glossary ``name`` (None for ``none``); ``UnknownGlossaryError`` for another name."""
    return None if check_name(name) == NO_GLOSSARY else catalogue()[name]


def _normalised(text: str) -> str:
    return " ".join(re.sub(r"[-_,.:;()\"'״׳]", " ", text).casefold().split())


def _mentions(details: str, phrase: str) -> bool:
    normal = _normalised(phrase)
    if not normal:
        return False
    prefix = f"[{_HEBREW_PREFIXES}]{{0,2}}" if re.search(r"[\u05d0-\u05ea]", normal) else ""
    return re.search(rf"(?<!\w){prefix}{re.escape(normal)}(?!\w)", details) is not None


def glossary_for_details(details: str) -> str | None:
    """The glossary whose phrases ``details`` mentions most (ties: the first by name)."""
    text = _normalised(details)
    if not text:
        return None
    best: tuple[int, str] | None = None
    for name, glossary in sorted(catalogue().items()):
        hits = sum(_mentions(text, phrase) for phrase in glossary.selection_phrases())
        if hits and (best is None or hits > best[0]):
            best = (hits, name)
    return None if best is None else best[1]


def choose(requested: str | None, details: str, default: str | None) -> str:
    """The glossary a recording gets: ``requested`` (its metadata), else the one its
    ``details`` mention, else ``default`` (the deployment's), else ``none``. Raises
    ``UnknownGlossaryError`` for an unknown ``requested`` or ``default``."""
    if requested:
        return check_name(requested)
    return glossary_for_details(details) or check_name(default or NO_GLOSSARY)


def hotwords_for(requested: str | None, details: str, language_code: str) -> str:
    """The speech recogniser's prompt terms for a job that names ``requested`` (a job from
    before glossaries were chosen: the glossary its details mention); empty without one."""
    glossary = glossary_named(choose(requested, details, None))
    return glossary.hotwords(language_code) if glossary is not None else ""
