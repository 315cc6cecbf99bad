"""How a recording's ``language``, ``details``, ``speakers`` and ``glossary`` travel as S3
user metadata.

S3 user metadata is sent as HTTP headers, which boto3 restricts to ASCII, while ``details``
is often Hebrew. Values are therefore stored percent-encoded UTF-8, and an extra
``x-amz-meta-meta-encoding: percent-utf8`` header says so. Metadata written by other tools
(for example ``aws s3 cp --metadata language=hebrew``) has no such marker and is read as it
is. The on-prem uploader and the Dispatcher both go through this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

LANGUAGE: Final = "language"
DETAILS: Final = "details"
SPEAKERS: Final = "speakers"  # pipeline_core.speakers
GLOSSARY: Final = "glossary"  # optional: the domain glossary (pipeline_core/glossary.py)
ENCODING: Final = "meta-encoding"
PERCENT_UTF8: Final = "percent-utf8"
# S3 allows 2 KB of user metadata per object, counted as the UTF-8 bytes of keys and values.
MAX_METADATA_BYTES: Final = 2048


class MetadataError(ValueError):
    """Metadata that cannot be stored on, or read from, an S3 object."""


@dataclass(frozen=True)
class RecordingMetadata:
    language: str | None
    details: str
    speakers: str | None = None
    glossary: str | None = None


def encode_metadata(
    language: str | None, details: str, speakers: str | None = None, glossary: str | None = None
) -> dict[str, str]:
    """The ``Metadata=`` argument for ``put_object`` / ``upload_file``."""
    metadata = {ENCODING: PERCENT_UTF8, DETAILS: quote(details, safe=" ")}
    if language:
        metadata[LANGUAGE] = quote(language, safe="")
    if speakers:
        metadata[SPEAKERS] = quote(speakers, safe="")
    if glossary:
        metadata[GLOSSARY] = quote(glossary, safe="")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if size > MAX_METADATA_BYTES:
        raise MetadataError(
            f"the metadata takes {size} bytes once encoded, more than S3's {MAX_METADATA_BYTES}; "
            f"shorten 'details' ({len(details)} characters)"
        )
    return metadata


def decode_metadata(metadata: Mapping[str, str]) -> RecordingMetadata:
    """Read what ``head_object(...)["Metadata"]`` returns (keys are lower-case there)."""
    lowered = {key.lower(): value for key, value in metadata.items()}
    encoded = lowered.get(ENCODING) == PERCENT_UTF8

    def read(name: str) -> str | None:
        value = lowered.get(name)
        if value is None or not encoded:
            return value
        try:
            return unquote(value, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise MetadataError(f"metadata {name!r} is not percent-encoded UTF-8") from None

    return RecordingMetadata(
        language=read(LANGUAGE) or None,
        details=read(DETAILS) or "",
        speakers=read(SPEAKERS) or None,
        glossary=read(GLOSSARY) or None,
    )
