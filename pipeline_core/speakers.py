"""Who spoke when: the ``speakers`` request of a recording and the labels of its speakers.

A recording asks for speaker labels with ``speakers`` (sidecar, folder defaults, S3
metadata, the Audio Queue message, the worker's ``DEFAULT_SPEAKERS``): ``"auto"`` (the
diarizer finds how many), a number of speakers (``"2"`` or ``2``), or ``"off"`` (none,
whatever the deployment's default says). Absent means the deployment's default, which is
off unless the operator set one.

Labels are ``Speaker 1``, ``Speaker 2``... in order of first appearance. In the timed
transcript a labelled line carries its label after the timing, ``[start --> end] [Speaker 1]
text``: part of the line's prefix, which correction keeps byte for byte and never shows the
model (``pipeline_core.timed_text``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final, Literal

AUTO: Final = "auto"
OFF: Final = "off"
MAX_SPEAKERS: Final = 20
LABEL_PREFIX: Final = "Speaker "
LABEL: Final = re.compile(r"Speaker \d{1,3}")
# A label as the timed transcript writes it, after the timing: ``[Speaker 2]``.
TIMED_TAG: Final = re.compile(rf"\[(?P<speaker>{LABEL.pattern})\]")


class SpeakersRequestError(ValueError):
    """A ``speakers`` value that is neither ``auto``, ``off`` nor a number of speakers."""


def normalize_speakers(value: object) -> str:
    """``"auto"``, ``"off"`` or the number as text (``"3"``); raises ``SpeakersRequestError``."""
    text = str(value).strip().lower() if isinstance(value, str | int) else ""
    if isinstance(value, bool) or not text:
        raise SpeakersRequestError(_explain(value))
    if text in (AUTO, OFF):
        return text
    if text.isdigit() and 1 <= int(text) <= MAX_SPEAKERS:
        return str(int(text))
    raise SpeakersRequestError(_explain(value))


def _explain(value: object) -> str:
    return f"speakers must be {AUTO!r}, {OFF!r} or a number from 1 to {MAX_SPEAKERS}, not {value!r}"


SpeakerCount = int | Literal["auto"]


def requested_count(request: str | None, default: str | None) -> SpeakerCount | None:
    """What the diarizer is asked: a number of speakers, ``AUTO``, or None (no labels).

    ``request`` (the recording's) wins over ``default`` (the deployment's); neither: off."""
    chosen = normalize_speakers(request or default or OFF)
    if chosen == OFF:
        return None
    return AUTO if chosen == AUTO else int(chosen)


def label(number: int) -> str:
    """The label of the ``number``-th speaker to appear (1-based)."""
    return f"{LABEL_PREFIX}{number}"


def labels_in_order(speakers: Iterable[object]) -> dict[object, str]:
    """Each distinct speaker (any id a diarizer uses) -> its label, in order of appearance."""
    labels: dict[object, str] = {}
    for speaker in speakers:
        if speaker not in labels:
            labels[speaker] = label(len(labels) + 1)
    return labels


def timed_tag(speaker: str) -> str:
    return f"[{speaker}]"


def speaker_of_prefix(prefix: str) -> str | None:
    """The label a timed line's prefix carries, if any."""
    match = TIMED_TAG.search(prefix)
    return match.group("speaker") if match else None


def mentions_label(texts: Sequence[str]) -> bool:
    """Whether any of ``texts`` holds a speaker label (an edit may not add or remove one)."""
    return any(LABEL.search(text) for text in texts)
