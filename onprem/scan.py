"""Finding the recordings to upload below a folder."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from pipeline_core import keys


def find_audio(root: Path, patterns: Sequence[str]) -> Iterator[Path]:
    """Files below ``root`` whose path relative to it matches a glob, in a stable order.

    Matching is case-insensitive (``LECTURE.MP3`` is audio too). Hidden files and folders are
    skipped: copy tools write partial files as ``.name.XXXX`` (rsync) and users keep
    ``.Trash`` and ``.git`` folders. Symbolic links to folders are not followed (no loops).
    """
    lowered = [pattern.lower() for pattern in patterns]
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            relative = PurePosixPath(path.relative_to(root).as_posix().lower())
            if any(relative.match(pattern) for pattern in lowered) and path.is_file():
                yield path


def object_key(root: Path, path: Path) -> str:
    """``audio-input/<path relative to root>``; raises ``InvalidKeyError`` for unsafe names.

    Names are normalised to NFC so that a Hebrew name typed on macOS (NFD) and on Linux
    (NFC) is the same key, and so the same output name comes back.
    """
    relative = unicodedata.normalize("NFC", path.relative_to(root).as_posix())
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        raise keys.InvalidKeyError(
            f"the name {relative!r} is not valid UTF-8; rename the file"
        ) from None
    if "\\" in relative:
        raise keys.InvalidKeyError(
            f"the name {relative!r} contains a backslash, which the results poller refuses; "
            f"rename the file"
        )
    key = keys.audio_key(relative)
    if not keys.has_audio_suffix(key):
        raise keys.InvalidKeyError(
            f"the name {relative!r} does not end in an audio suffix the pipeline accepts "
            f"({', '.join(keys.AUDIO_SUFFIXES)})"
        )
    return key
