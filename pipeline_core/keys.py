"""The bucket's key layout, in one place.

``audio-input/<name>.<ext>`` is what the on-prem side uploads; the worker writes
``transcriptions/<name>.timed.txt`` (+ ``.json``, ``.srt``, ``.vtt``); the LLM Caller writes
``final-output/<name>.txt`` and the corrected ``.timed.txt``, ``.json``, ``.srt`` and
``.vtt`` (``OutputFormat``: what each is, and what the on-prem side builds at home from
them). ``<name>`` keeps any
sub-folders below ``audio-input/`` so that two uploads with the same file name in different
folders never overwrite each other's outputs.
"""

from __future__ import annotations

import hashlib
import posixpath
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Final
from urllib.parse import quote_plus, unquote_plus

AUDIO_PREFIX: Final = "audio-input/"
TRANSCRIPT_PREFIX: Final = "transcriptions/"
FINAL_PREFIX: Final = "final-output/"
# The LLM Caller's chunk checkpoints; deleted once the outputs are written.
LLM_WORK_PREFIX: Final = "llm-work/"

# What the Dispatcher accepts; anything else is failed before it costs GPU time.
AUDIO_SUFFIXES: Final = (".mp3", ".wav", ".m4a", ".flac", ".ogg", ".opus", ".webm", ".mp4")

TIMED_SUFFIX: Final = ".timed.txt"
MAX_KEY_BYTES: Final = 1024  # S3's own limit on a key's UTF-8 length
# A local file name's limit (255 bytes on ext4, NTFS, APFS) less room for a temporary suffix.
MAX_LOCAL_NAME_BYTES: Final = 200


class InvalidKeyError(ValueError):
    """A key that is not a safe object key of our layout."""


def _check_safe(key: str) -> None:
    if not key:
        raise InvalidKeyError("the key is empty")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"the key is longer than {MAX_KEY_BYTES} bytes")
    if any(unicodedata.category(ch) == "Cc" for ch in key):
        raise InvalidKeyError(f"the key {key!r} contains control characters")
    if key.startswith("/") or "//" in key:
        raise InvalidKeyError(f"the key {key!r} has an empty path segment or starts with '/'")
    if any(part in (".", "..") for part in key.split("/")):
        raise InvalidKeyError(f"the key {key!r} has a '.' or '..' path segment")


def decode_event_key(raw_key: str) -> str:
    """Decode a key as S3 event notifications carry it (URL-encoded, ``+`` for space)."""
    return unquote_plus(raw_key, encoding="utf-8", errors="strict")


def encode_event_key(key: str) -> str:
    """A key as S3 event notifications carry it; ``decode_event_key`` reverses it."""
    return quote_plus(key, safe="/", encoding="utf-8")


def audio_key(s3_key: str) -> str:
    """Full object key of an audio job's ``s3_key``, given with or without ``audio-input/``.

    The original design's messages carry the key relative to ``audio-input/``; the full key is
    accepted too. This is the one place where that difference is resolved.
    """
    _check_safe(s3_key)
    key = s3_key if s3_key.startswith(AUDIO_PREFIX) else AUDIO_PREFIX + s3_key
    _check_safe(key)
    if key == AUDIO_PREFIX or key.endswith("/"):
        raise InvalidKeyError(f"the key {s3_key!r} names a folder, not a file")
    return key


def relative_audio_name(key: str) -> str:
    """The part of an audio key below ``audio-input/`` (``audio-input/a/b.mp3`` -> ``a/b.mp3``)."""
    return audio_key(key)[len(AUDIO_PREFIX) :]


def has_audio_suffix(key: str) -> bool:
    return key.lower().endswith(AUDIO_SUFFIXES)


def stem(key: str) -> str:
    """Name of a job's outputs: the audio key below ``audio-input/`` without its extension."""
    name = relative_audio_name(key)
    base, ext = posixpath.splitext(name)
    return base if ext and base and not base.endswith("/") else name


@dataclass(frozen=True)
class TranscriptKeys:
    """What the worker writes for one audio file."""

    timed: str
    json: str
    srt: str
    vtt: str


def _transcript_keys_of(stem_name: str) -> TranscriptKeys:
    base = TRANSCRIPT_PREFIX + stem_name
    return TranscriptKeys(
        timed=base + OutputFormat.TIMED.suffix,
        json=base + OutputFormat.JSON.suffix,
        srt=base + OutputFormat.SRT.suffix,
        vtt=base + OutputFormat.VTT.suffix,
    )


def transcript_keys(audio: str) -> TranscriptKeys:
    return _transcript_keys_of(stem(audio))


def transcript_keys_of_timed(timed_key: str) -> TranscriptKeys:
    """The worker's other files beside a timed transcript (the LLM Caller reads the JSON)."""
    return _transcript_keys_of(stem_from_timed_key(timed_key))


def stem_from_timed_key(timed_key: str) -> str:
    """Inverse of ``transcript_keys(...).timed``: ``transcriptions/x.timed.txt`` -> ``x``."""
    _check_safe(timed_key)
    if not timed_key.startswith(TRANSCRIPT_PREFIX) or not timed_key.endswith(TIMED_SUFFIX):
        raise InvalidKeyError(
            f"the timed transcript key {timed_key!r} is not {TRANSCRIPT_PREFIX}<name>{TIMED_SUFFIX}"
        )
    name = timed_key[len(TRANSCRIPT_PREFIX) : -len(TIMED_SUFFIX)]
    if not name or name.endswith("/"):
        raise InvalidKeyError(f"the timed transcript key {timed_key!r} has no file name")
    return name


class OutputFormat(StrEnum):
    """A deliverable, by the name users ask for it (the poller's ``formats`` setting)."""

    TXT = "txt"  # the corrected text, one segment a line
    TIMED = "timed"  # the same with each segment's timing
    SRT = "srt"
    VTT = "vtt"
    JSON = "json"  # segments, words, timings, which segments were corrected
    DOCX = "docx"  # for word processors; built at home from the JSON
    HTML = "html"  # the reader page (onprem/reader.py); built at home from the JSON

    @property
    def suffix(self) -> str:
        return TIMED_SUFFIX if self is OutputFormat.TIMED else f".{self.value}"

    @property
    def built_at_home(self) -> bool:
        """Made by the on-prem poller from the corrected JSON rather than fetched."""
        return self in HOME_BUILT_FORMATS

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self]


HOME_BUILT_FORMATS: Final = frozenset({OutputFormat.DOCX, OutputFormat.HTML})
_CONTENT_TYPES: Final = {
    OutputFormat.TXT: "text/plain; charset=utf-8",
    OutputFormat.TIMED: "text/plain; charset=utf-8",
    OutputFormat.SRT: "application/x-subrip; charset=utf-8",
    OutputFormat.VTT: "text/vtt; charset=utf-8",
    OutputFormat.JSON: "application/json; charset=utf-8",
    OutputFormat.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    OutputFormat.HTML: "text/html; charset=utf-8",
}


@dataclass(frozen=True)
class FinalKeys:
    """What the LLM Caller writes for one transcript."""

    text: str
    timed: str
    json: str
    srt: str
    vtt: str

    def of(self, output: OutputFormat) -> str:
        """The key of a format; for one built at home, the name it would have beside the
        JSON (never an object: the on-prem side names its local file after it)."""
        if output.built_at_home:
            return self.json.removesuffix(OutputFormat.JSON.suffix) + output.suffix
        return {
            OutputFormat.TXT: self.text,
            OutputFormat.TIMED: self.timed,
            OutputFormat.JSON: self.json,
            OutputFormat.SRT: self.srt,
            OutputFormat.VTT: self.vtt,
        }[output]


def final_keys(stem_name: str) -> FinalKeys:
    base = FINAL_PREFIX + stem_name
    return FinalKeys(
        text=base + OutputFormat.TXT.suffix,
        timed=base + OutputFormat.TIMED.suffix,
        json=base + OutputFormat.JSON.suffix,
        srt=base + OutputFormat.SRT.suffix,
        vtt=base + OutputFormat.VTT.suffix,
    )


def stem_from_final_text_key(text_key: str) -> str:
    """Inverse of ``final_keys(...).text``: ``final-output/x.txt`` -> ``x``."""
    _check_safe(text_key)
    suffix = OutputFormat.TXT.suffix
    if not text_key.startswith(FINAL_PREFIX) or not text_key.endswith(suffix):
        raise InvalidKeyError(f"the output key {text_key!r} is not {FINAL_PREFIX}<name>{suffix}")
    name = text_key[len(FINAL_PREFIX) : -len(suffix)]
    if not name or name.endswith("/"):
        raise InvalidKeyError(f"the output key {text_key!r} has no file name")
    return name


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    if not uri.startswith("s3://"):
        raise InvalidKeyError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise InvalidKeyError(f"{uri!r} has no bucket or no key")
    return bucket, key


def local_relative_path(key: str, prefix: str) -> PurePosixPath:
    """Path below a local folder for an object key below ``prefix``; never escapes the folder.

    The on-prem poller mirrors ``final-output/<name>`` into its output folder; a key with
    ``..``, an absolute path or control characters is refused rather than written.
    """
    _check_safe(key)
    if not key.startswith(prefix) or len(key) == len(prefix):
        raise InvalidKeyError(f"the key {key!r} is not below {prefix!r}")
    relative = PurePosixPath(key[len(prefix) :])
    if relative.is_absolute() or ".." in relative.parts or "\\" in key:
        raise InvalidKeyError(f"the key {key!r} would leave the output folder")
    return PurePosixPath(*(local_name(part) for part in relative.parts))


def local_name(name: str) -> str:
    """One path component, short enough for a local file system.

    A key's segment may be up to 1024 bytes; Linux and Windows file names end at 255. A
    longer one keeps its beginning, a digest of the whole (two long names that share their
    beginning stay apart) and its suffix (``.timed.txt``, ``.txt``, ``.json``), within
    ``MAX_LOCAL_NAME_BYTES``, leaving room for a writer's temporary suffix.
    """
    raw = name.encode("utf-8")
    if len(raw) <= MAX_LOCAL_NAME_BYTES:
        return name
    if name.endswith(TIMED_SUFFIX):
        base, suffix = name[: -len(TIMED_SUFFIX)], TIMED_SUFFIX
    else:
        base, suffix = posixpath.splitext(name)
        if len(suffix.encode("utf-8")) > 16:
            base, suffix = name, ""
    digest = hashlib.sha256(base.encode("utf-8")).hexdigest()[:16]
    tail = f"~{digest}{suffix}"
    room = MAX_LOCAL_NAME_BYTES - len(tail.encode("utf-8"))
    head = base.encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return head + tail
