"""The reader page's input and HTML (``onprem/reader.py``); the browser test is in system/."""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from support.reader_page import document_from_timed_text, parse_page

from onprem.reader import (
    ReaderDocument,
    ReaderLine,
    clock,
    document_from_segments,
    local_recording,
    page_from_transcript,
    recording_href,
    render_page,
    text_direction,
)
from onprem.state import UploadState

TIMED = (
    "[00:00:00.000 --> 00:00:01.500] first\n"
    "\n"
    "[00:00:01.500 --> 00:00:03.250] second\n"
    "a line someone typed without a timing\n"
    "[01:02:05.500 --> 01:02:07.000] last\n"
)


@dataclass(frozen=True)
class Segment:
    """Shaped like a segment of the corrected JSON."""

    start: float
    end: float
    text: str
    original_text: str | None = None
    speaker: str | None = None


def test_timed_lines_keep_their_timings_and_blank_lines_are_dropped() -> None:
    document = document_from_timed_text("a.mp3", TIMED)
    assert [(line.text, line.start, line.end) for line in document.lines] == [
        ("first", 0.0, 1.5),
        ("second", 1.5, 3.25),
        ("a line someone typed without a timing", None, None),
        ("last", 3725.5, 3727.0),
    ]
    assert not document.corrections_known
    assert not any(line.corrected for line in document.lines)


def test_corrected_segments_count_the_non_blank_lines() -> None:
    document = document_from_timed_text("a.mp3", TIMED, corrected_segments={1, 3})
    assert document.corrections_known
    assert [line.corrected for line in document.lines] == [False, True, False, True]
    assert document_from_timed_text("a.mp3", TIMED, corrected_segments=()).corrections_known


def test_segments_of_the_corrected_document_mark_what_changed() -> None:
    document = document_from_segments(
        "a.mp3",
        [Segment(0.0, 1.0, "kept"), Segment(1.0, 2.0, "fixed text", original_text="fixd txt")],
        language="he",
    )
    assert document.corrections_known
    assert [(line.corrected, line.original_text) for line in document.lines] == [
        (False, None),
        (True, "fixd txt"),
    ]
    parts = parse_page(render_page(document))
    assert parts.badge_titles == ["was: fixd txt"]
    assert parts.texts == ["kept", "fixed text"]


def test_the_speaker_label_opens_each_change_of_speaker() -> None:
    document = document_from_segments(
        "a.mp3",
        [
            Segment(0.0, 1.0, "Shall we begin?", speaker="Speaker 1"),
            Segment(1.0, 2.0, "Page two.", speaker="Speaker 1"),
            Segment(2.0, 3.0, "Which <line>?", speaker="Speaker 2"),
            Segment(3.0, 4.0, "The first.", speaker="Speaker 1"),
        ],
    )
    parts = parse_page(render_page(document))
    assert parts.speakers == [(0, "Speaker 1"), (2, "Speaker 2"), (3, "Speaker 1")]
    assert parts.texts == ["Shall we begin?", "Page two.", "Which <line>?", "The first."]
    assert not parse_page(
        render_page(document_from_segments("a.mp3", [Segment(0, 1, "x")]))
    ).speakers


@dataclass(frozen=True)
class Transcript:
    """Shaped like the corrected JSON document."""

    source_key: str
    language: str
    segments: tuple[Segment, ...]


def test_a_page_from_the_corrected_document_names_the_recording_and_its_language(
    tmp_path: Path,
) -> None:
    transcript = Transcript(
        "audio-input/גמרא/שיעור א.mp3",
        "he",
        (Segment(0.0, 1.0, "שלום"), Segment(1.0, 2.0, "עולם", original_text="עולמ")),
    )
    page = tmp_path / "out" / "גמרא" / "שיעור א.html"
    parts = parse_page(page_from_transcript(transcript, page, "bucket", None).decode())
    assert (parts.language, parts.direction) == ("he", "rtl")
    assert parts.title == "גמרא/שיעור א.mp3"
    assert parts.texts == ["שלום", "עולם"]
    assert parts.badge_titles == ["was: עולמ"]
    assert parts.audio_src is None, "no uploader state: no player"


@pytest.mark.parametrize(
    ("language", "texts", "expected"),
    [
        ("hebrew", ["hello"], "rtl"),  # the language decides when it is known
        ("he", ["שלום"], "rtl"),
        ("yi", ["שלום"], "rtl"),
        ("english", ["שלום"], "ltr"),
        (None, ["שלום עולם, ok"], "rtl"),  # unknown: most letters
        (None, ["Rashi says רש״י"], "ltr"),
        (None, ["مرحبا"], "rtl"),
        (None, [], "ltr"),
    ],
)
def test_direction(language: str | None, texts: list[str], expected: str) -> None:
    assert text_direction(language, texts) == expected


def test_the_page_names_its_language_only_when_known() -> None:
    hebrew = document_from_timed_text("a.mp3", "[00:00:00.000 --> 00:00:01.000] שלום\n")
    parts = parse_page(render_page(hebrew))
    assert (parts.language, parts.direction) == (None, "rtl")
    named = ReaderDocument("a.mp3", hebrew.lines, False, language="Hebrew")
    named_parts = parse_page(render_page(named))
    assert (named_parts.language, named_parts.direction) == ("he", "rtl")
    unknown = ReaderDocument("a.mp3", hebrew.lines, False, language="klingon")
    assert parse_page(render_page(unknown)).language is None


def test_text_is_escaped_and_the_only_script_is_the_pages_own() -> None:
    hostile = "</span><script>alert(1)</script>&amp; \"quoted\" 'single'"
    document = ReaderDocument(
        title=hostile,
        lines=(ReaderLine(hostile, 0.0, 1.0, corrected=True, original_text=hostile),),
        corrections_known=True,
        recording_href='x.mp3" onerror="alert(1)',
    )
    html = render_page(document)
    parts = parse_page(html)
    assert parts.texts == [hostile]
    assert parts.badge_titles == [f"was: {hostile}"]
    assert parts.audio_src == 'x.mp3" onerror="alert(1)'
    assert len(parts.scripts) == 1
    assert "alert" not in parts.scripts[0]
    assert html.count("<script>") == 1


def test_the_security_policy_allows_the_pages_script_and_nothing_from_outside() -> None:
    parts = parse_page(render_page(document_from_timed_text("a.mp3", TIMED)))
    digest = hashlib.sha256(parts.scripts[0].encode()).digest()
    policy = parts.content_security_policy or ""
    assert f"script-src 'sha256-{base64.b64encode(digest).decode()}'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy


def test_recording_href_is_relative_and_percent_encoded(tmp_path: Path) -> None:
    page = tmp_path / "out" / "lectures" / "a.html"
    recording = tmp_path / "in" / "גמרא" / "שיעור #1 ?100% (a+b).mp3"
    href = recording_href(recording, page)
    assert href == (
        "../../in/%D7%92%D7%9E%D7%A8%D7%90/"
        "%D7%A9%D7%99%D7%A2%D7%95%D7%A8%20%231%20%3F100%25%20%28a%2Bb%29.mp3"
    )
    assert Path(os.path.normpath(page.parent / unquote_to_bytes(href).decode())) == recording


def test_recording_href_of_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    recording = tmp_path / os.fsdecode(b"lecture-\xe9t\xe9.mp3")  # Latin-1 bytes on disk
    href = recording_href(recording, tmp_path / "a.html")
    assert href == "lecture-%E9t%E9.mp3"


def test_clock() -> None:
    assert [clock(s) for s in (0, 59.9, 75.2, 3725.0, 36000)] == [
        "0:00",
        "0:59",
        "1:15",
        "1:02:05",
        "10:00:00",
    ]


def test_the_local_recording_comes_from_the_uploaders_state(tmp_path: Path) -> None:
    state_file = tmp_path / "state" / "uploads.sqlite3"
    recording = tmp_path / "in" / "a.mp3"
    recording.parent.mkdir()
    recording.write_bytes(b"ID3")
    with UploadState(state_file) as state:
        state.record_upload(
            bucket="b", path=recording, size=3, sha256="0" * 64, key="audio-input/a.mp3",
            version_id=None,
        )  # fmt: skip
    assert local_recording(state_file, "b", "audio-input/a.mp3") == recording
    assert local_recording(state_file, "other-bucket", "audio-input/a.mp3") is None
    assert local_recording(state_file, "b", "audio-input/b.mp3") is None
    assert local_recording(None, "b", "audio-input/a.mp3") is None
    assert local_recording(tmp_path / "nowhere.sqlite3", "b", "audio-input/a.mp3") is None
    recording.unlink()
    assert local_recording(state_file, "b", "audio-input/a.mp3") is None


def test_an_unreadable_state_means_no_player_not_a_failure(tmp_path: Path) -> None:
    state_file = tmp_path / "uploads.sqlite3"
    state_file.write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError), UploadState(state_file, read_only=True) as state:
        state.uploaded_path("b", "audio-input/a.mp3")
    assert local_recording(state_file, "b", "audio-input/a.mp3") is None
