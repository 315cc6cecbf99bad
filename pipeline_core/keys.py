"""The bucket's key layout, in one place.

``audio-input/<path>.<ext>`` is what the on-prem side uploads; the worker writes
``transcriptions/<name>.timed.txt`` (+ ``.json``, ``.srt``, ``.vtt``); the LLM Caller writes
``final-output/<name>.txt`` and the corrected ``.timed.txt``, ``.json``, ``.srt`` and
``.vtt`` (``OutputFormat``: what each is, and what the on-prem side builds at home from
them); the poller mirrors the formats asked for into its folder and writes a failure report
as ``failed/<name>.json``.

``<name>``, the recording's output name, is the upload's path below ``audio-input/``
without its extension (``recording-001.mp3`` -> ``recording-001``) when no other recording
holds that name; names are compared case-folded, as a Windows or macOS folder compares
them. Another source with the same folded name gets the first free of
``<stem> (<ext>)``, ``<stem> (<ext> 2)``, ``<stem> (<ext> 3)`` ... (``lecture.wav`` ->
``lecture (wav)``, ``Lecture.MP3`` -> ``Lecture (MP3)``): ``output_name_candidates`` lists
them in that order, and the Dispatcher reserves the first free one in the job table
(``pipeline_core.jobs.JobTable.reserve_output_name``), where the same source finds its own
name again. Sub-folders are kept, so two uploads with the same file name in different
folders never meet.
"""

from __future__ import annotations

import hashlib
import posixpath
import unicodedata
from collections.abc import Iterator
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
TIMED_STEM_SUFFIX: Final = TIMED_SUFFIX.removesuffix(".txt")
MAX_KEY_BYTES: Final = 1024  # S3's own limit on a key's UTF-8 length
# A local file name's limit (255 bytes on ext4, NTFS, APFS) less room for a temporary suffix.
MAX_LOCAL_NAME_BYTES: Final = 200
# ``<stem> (<ext> N)`` is tried up to this N before a name with a digest of the key.
MAX_NUMBERED_NAMES: Final = 20
# The on-prem poller's report of a failed recording: ``failed/<output name>.json``.
FAILURE_REPORT_SUFFIX: Final = ".json"


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
    """The plain output name of an upload: its key below ``audio-input/`` without its
    extension. It is the name when no other recording holds it, and the name of a job whose
    message predates reserved names (no ``output_name``)."""
    name = relative_audio_name(key)
    base, ext = posixpath.splitext(name)
    return base if ext and base and not base.endswith("/") else name


def folded_name(name: str) -> str:
    """What a case-insensitive file system (Windows, macOS) sees of a name: two names with
    the same folded form are one file there. Unicode case folding after NFC (macOS also
    treats the composed and decomposed forms of a letter as one)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def output_name_candidates(source_key: str) -> Iterator[str]:
    """The output names an upload may take, best first; the first free one is reserved.

    A recording first asks for its plain ``stem`` (unless it ends in ``.timed``); then (and
    any other upload at once, so that a refused ``notes.txt`` never takes ``notes`` from
    ``notes.mp3``) ``<stem> (<ext>)`` and ``<stem> (<ext> 2)``, ``(<ext> 3)`` ...; past
    ``MAX_NUMBERED_NAMES`` a digest of the exact key, which no other upload shares.
    """
    relative = relative_audio_name(source_key)
    plain = stem(source_key)
    label = relative[len(plain) + 1 :] if len(relative) > len(plain) else ""
    # ``x.timed``'s text (``x.timed.txt``) would be ``x``'s timed file: such a name is never
    # asked for, and every other candidate ends in ")".
    if has_audio_suffix(source_key) and not folded_name(plain).endswith(TIMED_STEM_SUFFIX):
        yield plain
    yield f"{plain} ({label})" if label else f"{plain} (1)"
    for number in range(2, MAX_NUMBERED_NAMES + 1):
        yield f"{plain} ({label} {number})" if label else f"{plain} ({number})"
    digest = hashlib.sha256(relative.encode("utf-8")).hexdigest()[:16]
    yield f"{plain} ({label} {digest})" if label else f"{plain} ({digest})"


def check_output_name(name: str) -> str:
    """``name`` if every key derived from it is a safe key of our layout."""
    _check_safe(name)
    for key in (TRANSCRIPT_PREFIX + name + TIMED_SUFFIX, FINAL_PREFIX + name + TIMED_SUFFIX):
        _check_safe(key)
    if name.endswith("/"):
        raise InvalidKeyError(f"the output name {name!r} names a folder")
    return name


@dataclass(frozen=True)
class TranscriptKeys:
    """What the worker writes for one audio file."""

    timed: str
    json: str
    srt: str
    vtt: str


def transcript_keys(output_name: str) -> TranscriptKeys:
    """The worker's files for the recording whose output name is ``output_name``."""
    base = TRANSCRIPT_PREFIX + output_name
    return TranscriptKeys(
        timed=base + OutputFormat.TIMED.suffix,
        json=base + OutputFormat.JSON.suffix,
        srt=base + OutputFormat.SRT.suffix,
        vtt=base + OutputFormat.VTT.suffix,
    )


def transcript_keys_of_timed(timed_key: str) -> TranscriptKeys:
    """The worker's other files beside a timed transcript (the LLM Caller reads the JSON)."""
    return transcript_keys(stem_from_timed_key(timed_key))


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
# What the LLM Caller writes under ``final-output/``, the text first (every Result names it).
FINAL_OUTPUT_FORMATS: Final = tuple(output for output in OutputFormat if not output.built_at_home)
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


def final_keys(output_name: str) -> FinalKeys:
    """The LLM Caller's files for the recording whose output name is ``output_name``."""
    base = FINAL_PREFIX + output_name
    return FinalKeys(
        text=base + OutputFormat.TXT.suffix,
        timed=base + OutputFormat.TIMED.suffix,
        json=base + OutputFormat.JSON.suffix,
        srt=base + OutputFormat.SRT.suffix,
        vtt=base + OutputFormat.VTT.suffix,
    )


def stem_from_final_text_key(text_key: str) -> str:
    """Inverse of ``final_keys(...).text``: ``final-output/x.txt`` -> ``x``, the output name
    (``final-output/lecture (wav).txt`` -> ``lecture (wav)``)."""
    _check_safe(text_key)
    suffix = OutputFormat.TXT.suffix
    if not text_key.startswith(FINAL_PREFIX) or not text_key.endswith(suffix):
        raise InvalidKeyError(f"the output key {text_key!r} is not {FINAL_PREFIX}<name>{suffix}")
    name = text_key[len(FINAL_PREFIX) : -len(suffix)]
    if not name or name.endswith("/"):
        raise InvalidKeyError(f"the output key {text_key!r} has no file name")
    return name


def llm_work_prefix(work_id: str) -> str:
    """The LLM Caller's chunk checkpoints of one job (its job id: never shared)."""
    return f"{LLM_WORK_PREFIX}{work_id}/"


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
    return _local_path(key[len(prefix) :])


def failure_report_relative_path(output_name: str) -> PurePosixPath:
    """Where the poller reports a failed recording, below its ``failed/`` folder: named
    after the recording's output name, so that two recordings' reports never meet either."""
    return _local_path(check_output_name(output_name) + FAILURE_REPORT_SUFFIX)


def _local_path(relative_key: str) -> PurePosixPath:
    relative = PurePosixPath(relative_key)
    if relative.is_absolute() or ".." in relative.parts or "\\" in relative_key:
        raise InvalidKeyError(f"the name {relative_key!r} would leave the output folder")
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
