"""Each recording's ``language``, ``details``, ``speakers`` and ``glossary``: sidecar, folder
defaults, flags, config.

The most specific statement wins, field by field:

1. the sidecar ``<file>.json`` next to the recording (``lecture.mp3.json``);
2. folder defaults, ``_defaults.json`` or ``.transcribe.json``, in the recording's folder or
   any folder above it up to the scanned root (the nearest folder wins; in one folder
   ``.transcribe.json`` wins over ``_defaults.json``);
3. the ``--language`` / ``--details`` / ``--speakers`` / ``--glossary`` flags of this run;
4. ``language`` in the config file or ``ONPREM_LANGUAGE``.

A run-wide flag is the fallback for recordings that say nothing themselves, so a sidecar
saying ``english`` is honoured in a folder uploaded with ``--language hebrew``.
Every file is JSON: ``{"language": "hebrew", "details": "Bava Kamma 2a"}``; ``"speakers":
"auto"`` (or a number of speakers, or ``"off"``) asks for speaker labels
(``pipeline_core.speakers``); without it the deployment's default holds.
``"glossary": "talmud"`` (optional: a shipped glossary's name or ``none``, checked here,
before the upload) chooses the domain glossary; without it the Dispatcher picks the one the
details mention, else the deployment's default (``pipeline_core/glossary.py``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pipeline_core.contracts import MAX_DETAILS_CHARS
from pipeline_core.glossary import UnknownGlossaryError, check_name
from pipeline_core.languages import UnknownLanguageError, normalize_language
from pipeline_core.speakers import SpeakersRequestError, normalize_speakers

DEFAULTS_FILES: Final = ("_defaults.json", ".transcribe.json")
SIDECAR_SUFFIX: Final = ".json"
FIELDS: Final = ("language", "details", "speakers", "glossary")


class RecordingMetadataError(ValueError):
    """Metadata for one recording that is missing or cannot be used."""


@dataclass(frozen=True)
class Recording:
    language: str  # Whisper code, e.g. "he"
    details: str
    language_source: str  # where the language came from, for logs and errors
    speakers: str | None = None  # normalized ("auto", "off", "2"); None: the deployment's
    glossary: str | None = None  # a shipped glossary's name, or "none"; None: not said


@dataclass(frozen=True)
class _Layer:
    values: dict[str, str]
    source: str


def _read_json(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordingMetadataError(f"{path}: cannot be read as UTF-8 JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RecordingMetadataError(f"{path}: must be a JSON object like {{'language': ...}}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise RecordingMetadataError(
            f"{path}: unknown field(s) {', '.join(map(repr, unknown))}; "
            f"allowed are {', '.join(FIELDS)}"
        )
    for name, value in data.items():
        if name == "speakers":
            try:
                data[name] = normalize_speakers(value)
            except SpeakersRequestError as exc:
                raise RecordingMetadataError(f"{path}: {exc}") from None
        elif not isinstance(value, str):
            raise RecordingMetadataError(f"{path}: {name!r} must be a string, not {value!r}")
    return dict(data)


def speakers_flag(value: str) -> str:
    """``--speakers`` as an argparse type: the value ``normalize_speakers`` makes of it, or a
    usage error saying what it may be."""
    try:
        return normalize_speakers(value)
    except SpeakersRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class MetadataResolver:
    """Resolves recordings below one root; folder defaults are read once per folder."""

    def __init__(
        self,
        root: Path,
        *,
        flag_language: str | None = None,
        flag_details: str | None = None,
        flag_speakers: str | None = None,  # normalized: ``speakers_flag``
        config_language: str | None = None,
        flag_glossary: str | None = None,
    ) -> None:
        self._root = root
        self._base: list[_Layer] = []
        if config_language:
            self._base.append(_Layer({"language": config_language}, "the config language"))
        flags = {
            name: value
            for name, value in (
                ("language", flag_language),
                ("details", flag_details),
                ("speakers", flag_speakers),
                ("glossary", flag_glossary),
            )
            if value is not None
        }
        if flags:
            self._base.append(_Layer(flags, "the command-line flags"))
        self._folders: dict[Path, list[_Layer]] = {}

    def _folder_layers(self, folder: Path) -> list[_Layer]:
        cached = self._folders.get(folder)
        if cached is not None:
            return cached
        parent = (
            self._folder_layers(folder.parent)
            if folder not in (self._root, folder.parent)
            else list(self._base)
        )
        layers = list(parent)
        for name in DEFAULTS_FILES:
            path = folder / name
            if path.is_file():
                layers.append(_Layer(_read_json(path), str(path)))
        self._folders[folder] = layers
        return layers

    def resolve(self, recording: Path) -> Recording:
        layers = list(self._folder_layers(recording.parent))
        sidecar = recording.with_name(recording.name + SIDECAR_SUFFIX)
        if sidecar.is_file():
            layers.append(_Layer(_read_json(sidecar), str(sidecar)))
        merged: dict[str, _Layer] = {}
        for layer in layers:
            for name in layer.values:
                merged[name] = layer
        if "language" not in merged:
            raise RecordingMetadataError(
                f"no language for {recording.name}: add a sidecar {sidecar.name} or a "
                f'{DEFAULTS_FILES[0]} in its folder with {{"language": "hebrew"}}, '
                f"or pass --language"
            )
        language_layer = merged["language"]
        raw_language = language_layer.values["language"]
        try:
            language = normalize_language(raw_language)
        except UnknownLanguageError as exc:
            raise RecordingMetadataError(f"{language_layer.source}: {exc}") from None
        details = merged["details"].values["details"] if "details" in merged else ""
        if len(details) > MAX_DETAILS_CHARS:
            raise RecordingMetadataError(
                f"{merged['details'].source}: details has {len(details)} characters, more "
                f"than {MAX_DETAILS_CHARS}"
            )
        speakers = merged["speakers"].values["speakers"] if "speakers" in merged else None
        glossary = merged["glossary"].values["glossary"] if "glossary" in merged else None
        if glossary is not None:
            try:
                check_name(glossary)
            except UnknownGlossaryError as exc:
                raise RecordingMetadataError(f"{merged['glossary'].source}: {exc}") from None
        return Recording(language, details, language_layer.source, speakers, glossary)
