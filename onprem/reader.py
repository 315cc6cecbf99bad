"""The reader page: one self-contained HTML file to check a transcript against its recording.

The on-prem poller writes ``<name>.html`` beside ``<name>.txt``. It shows the recording in an
``<audio>`` player (a relative link to the local file the uploader sent, when this machine
still has it), the transcript as timed lines (a click plays from the line's start, the line
being played is highlighted), right to left for Hebrew and the other RTL languages, with the
lines the LLM correction changed marked and, where speakers were labelled, the speaker's
label at each change of speaker. Everything is inline: no server, no network, no
build step; opened straight from the folder (``file://``).

The transcript is untrusted text (speech recognition and an LLM wrote it), so the page is
rendered by Jinja2 with autoescaping on: every value is escaped for where it lands unless it
is marked safe, and the only things marked safe are this module's constant script and style.
The script reads the timings from ``data-`` attributes, so nothing is ever interpolated into
JavaScript. A Content-Security-Policy allows only that script and style (by hash) and media
from local files, as a second line of defence and a guarantee that the page never reaches
the network.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import sqlite3
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol
from urllib.parse import quote

# Jinja2 with autoescaping rather than a format string escaped by hand: no insertion point
# can forget to escape, and the template stays readable HTML.
import jinja2
from markupsafe import Markup

from onprem.atomic import write_bytes_atomic
from onprem.state import UploadState
from pipeline_core import keys
from pipeline_core.languages import UnknownLanguageError, is_right_to_left, normalize_language
from pipeline_core.timed_text import TimedSegment

log = logging.getLogger(__name__)


Direction = Literal["ltr", "rtl"]


@dataclass(frozen=True)
class ReaderLine:
    text: str
    start: float | None  # seconds; None for a line without a timing (not playable)
    end: float | None
    corrected: bool = False  # the correction changed this line's text
    original_text: str | None = None  # what was recognised, where the correction changed it
    speaker: str | None = None  # "Speaker 1"..., where the recording asked for speakers


@dataclass(frozen=True)
class ReaderDocument:
    """What the page shows; ``corrections_known`` is False when no marks were given."""

    title: str
    lines: tuple[ReaderLine, ...]
    corrections_known: bool
    language: str | None = None  # any name or code; None: the direction comes from the text
    recording_href: str | None = None  # relative URL of the local recording


class CorrectedSegment(TimedSegment, Protocol):
    """A segment of the corrected transcript document (the LLM Caller's ``.json``)."""

    @property
    def original_text(self) -> str | None: ...  # set where the correction changed the text


class CorrectedTranscript(Protocol):
    """The corrected document (the LLM Caller's ``.json``), as far as the page needs it."""

    @property
    def source_key(self) -> str: ...  # the recording's object key, ``audio-input/...``

    @property
    def language(self) -> str: ...

    @property
    def segments(self) -> Sequence[CorrectedSegment]: ...


def document_from_segments(
    title: str,
    segments: Iterable[CorrectedSegment],
    *,
    language: str | None = None,
    recording_href: str | None = None,
) -> ReaderDocument:
    """The reader's input from the corrected document's segments (which say what changed)."""
    lines = tuple(
        ReaderLine(
            segment.text.strip(),
            segment.start,
            segment.end,
            corrected=segment.original_text is not None,
            original_text=segment.original_text,
            speaker=segment.speaker,
        )
        for segment in segments
    )
    return ReaderDocument(title, lines, True, language, recording_href)


def recording_href(recording: Path, page: Path) -> str:
    """The recording's URL relative to the page, percent-encoded (any file name works)."""
    relative = os.path.relpath(recording, page.parent)
    return quote(os.fsencode(Path(relative).as_posix()))


def local_recording(state_file: Path | None, bucket: str, key: str) -> Path | None:
    """The file the uploader sent as ``key``, if the uploader's state names one still here."""
    if state_file is None or not state_file.is_file():
        return None
    try:
        with UploadState(state_file, read_only=True) as state:
            recorded = state.uploaded_path(bucket, key)
    except sqlite3.Error as exc:  # the page is still useful without the player
        log.warning("cannot read the upload state %s: %s", state_file, exc)
        return None
    return recorded if recorded is not None and recorded.is_file() else None


def local_recording_href(
    state_file: Path | None, bucket: str, source_key: str, page: Path
) -> str | None:
    """The page's link to the local copy of the recording ``source_key``; None if none."""
    recording = local_recording(state_file, bucket, source_key)
    return None if recording is None else recording_href(recording, page)


def text_direction(language: str | None, texts: Iterable[str]) -> Direction:
    """RTL for an RTL language; with no language, the direction most letters are written in."""
    if language is not None:
        return "rtl" if is_right_to_left(language) else "ltr"
    right_to_left = left_to_right = 0
    for text in texts:
        for character in text:
            kind = unicodedata.bidirectional(character)
            right_to_left += kind in ("R", "AL")
            left_to_right += kind == "L"
    return "rtl" if right_to_left > left_to_right else "ltr"


def clock(seconds: float) -> str:
    """``75.2`` -> ``1:15``, ``3725`` -> ``1:02:05``: the time a player shows."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


_STYLE: Final = """
:root { color-scheme: light dark; --mark: #c2410c; --playing: #fde68a; }
body { font: 18px/1.6 system-ui, sans-serif; max-width: 52rem; margin: 0 auto;
  padding: 0 1rem 4rem; }
header { position: sticky; top: 0; background: Canvas; padding: .75rem 0;
  border-bottom: 1px solid #8886; }
h1 { font-size: 1.15rem; margin: 0 0 .5rem; overflow-wrap: anywhere; }
audio { width: 100%; }
.notes p { font-size: .85rem; color: GrayText; margin: .25rem 0 0; }
/* The notes are English: left to right inside, but on the page's side. */
[dir="rtl"] .notes { text-align: right; }
.notes .badge { margin: 0 .2em; }
ol { list-style: none; padding: 0; margin: 1rem 0; }
.line { display: flex; gap: .75rem; align-items: baseline; padding: .3rem .5rem;
  border-inline-start: 4px solid transparent; border-radius: 4px; }
.playable .line[data-start] { cursor: pointer; }
.playable .line[data-start]:hover { background: #8882; }
.line.corrected { border-inline-start-color: var(--mark); }
.line.playing, .playable .line.playing:hover { background: var(--playing); color: #000; }
.time { flex: none; min-width: 4.5em; font: .8rem ui-monospace, monospace; color: inherit;
  opacity: .7; background: none; border: 0; padding: 0; direction: ltr;
  unicode-bidi: isolate; text-align: start; }
button.time { cursor: pointer; }
.speaker { flex: none; font-weight: 600; font-size: .85rem; }
.badge { flex: none; font-size: .7rem; color: var(--mark); border: 1px solid currentColor;
  border-radius: 3px; padding: 0 .3em; }
"""

_SCRIPT: Final = """
"use strict";
(() => {
  const player = document.getElementById("player");
  const lines = Array.from(document.querySelectorAll("#transcript li[data-start]"));
  if (!player || lines.length === 0) return;
  const timings = lines.map((line) => [Number(line.dataset.start), Number(line.dataset.end)]);
  // Timings have millisecond resolution; a seek may land a hair before the time asked for.
  const slack = 0.0005;
  let current = null;
  const lineAt = (time) => {
    let found = null;
    let foundStart = -Infinity;
    timings.forEach(([start, end], index) => {
      if (start <= time + slack && time < end && start >= foundStart) {
        found = lines[index];
        foundStart = start;
      }
    });
    return found;
  };
  const highlight = () => {
    const line = lineAt(player.currentTime);
    if (line === current) return;
    if (current) {
      current.classList.remove("playing");
      current.removeAttribute("aria-current");
    }
    if (line) {
      line.classList.add("playing");
      line.setAttribute("aria-current", "true");
      if (!player.paused) line.scrollIntoView({ block: "nearest" });
    }
    current = line;
  };
  // Fired while playing and after every seek.
  player.addEventListener("timeupdate", highlight);
  document.getElementById("transcript").addEventListener("click", (event) => {
    const line = event.target.closest("li[data-start]");
    if (!line) return;
    player.currentTime = Number(line.dataset.start);
    // A missing or unreadable file: the player itself shows the error.
    player.play().catch(() => {});
  });
})();
"""


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


# Only this page's own script and style, and media from local files (``file:``: browsers
# differ on whether 'self' covers a page opened from disk); nothing else, so the page
# cannot load or send anything.
_CONTENT_SECURITY_POLICY: Final = (
    f"default-src 'none'; script-src {_csp_hash(_SCRIPT)}; style-src {_csp_hash(_STYLE)}; "
    "media-src 'self' file:"
)

_PAGE: Final = """\
<!DOCTYPE html>
<html dir="{{ direction }}"{% if language %} lang="{{ language }}"{% endif %}>
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ style }}</style>
</head>
<body{% if playable %} class="playable"{% endif %}>
<header>
<h1>{{ title }}</h1>
{% if recording_href %}
<audio id="player" controls preload="metadata" src="{{ recording_href }}"></audio>
{% endif %}
<div class="notes" lang="en" dir="ltr">
{% if recording_href %}
<p>Click a line to play the recording from there.</p>
{% else %}
<p>No copy of the recording was found on this machine, so there is no player; the \
transcript follows.</p>
{% endif %}
{% if corrections_known %}
<p>{{ corrected_count }} of {{ lines | length }} lines were changed by the correction; \
they are marked <span class="badge">corrected</span>.</p>
{% else %}
<p>Which lines the correction changed is not known for this transcript.</p>
{% endif %}
</div>
</header>
<ol id="transcript">
{% for line in lines %}
<li class="line{% if line.corrected %} corrected{% endif %}"\
{% if line.start is not none %} data-start="{{ '%.3f' % line.start }}" \
data-end="{{ '%.3f' % line.end }}"{% endif %}>
{%- if line.start is none %}<span class="time"></span>
{%- elif playable %}<button type="button" class="time">{{ clock(line.start) }}</button>
{%- else %}<span class="time">{{ clock(line.start) }}</span>{% endif -%}
{%- if line.speaker and (loop.first or loop.previtem.speaker != line.speaker) %}\
<span class="speaker" lang="en">{{ line.speaker }}</span>{% endif -%}
<span class="text">{{ line.text }}</span>
{%- if line.corrected %}<span class="badge" lang="en"\
{% if line.original_text is not none %} title="was: {{ line.original_text }}"{% endif %}\
>corrected</span>{% endif -%}
</li>
{% endfor %}
</ol>
<script>{{ script }}</script>
</body>
</html>
"""

_ENVIRONMENT: Final = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
)
_TEMPLATE: Final = _ENVIRONMENT.from_string(_PAGE)


def render_page(document: ReaderDocument) -> str:
    try:
        language = normalize_language(document.language) if document.language else None
    except UnknownLanguageError:  # shown without a lang attribute rather than not at all
        language = None
    return _TEMPLATE.render(
        title=document.title,
        language=language,
        direction=text_direction(language, (line.text for line in document.lines)),
        csp=_CONTENT_SECURITY_POLICY,
        style=Markup(_STYLE),
        script=Markup(_SCRIPT),
        recording_href=document.recording_href,
        playable=document.recording_href is not None,
        corrections_known=document.corrections_known,
        corrected_count=sum(line.corrected for line in document.lines),
        lines=document.lines,
        clock=clock,
    )


def write_page(target: Path, document: ReaderDocument) -> bool:
    """Write the page atomically; False when it already held exactly this page."""
    return write_bytes_atomic(target, render_page(document).encode("utf-8"))


def page_from_transcript(
    transcript: CorrectedTranscript, page: Path, bucket: str, state_file: Path | None
) -> bytes:
    """The page for ``page`` from the corrected document: its language, what changed."""
    document = document_from_segments(
        keys.relative_audio_name(transcript.source_key),
        transcript.segments,
        language=transcript.language,
        recording_href=local_recording_href(state_file, bucket, transcript.source_key, page),
    )
    return render_page(document).encode("utf-8")
