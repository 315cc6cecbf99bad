"""Reading back a reader page (``onprem/reader.py``) in tests, with the standard parser."""

from __future__ import annotations

from collections.abc import Collection
from html.parser import HTMLParser
from pathlib import Path

from onprem.reader import ReaderDocument, ReaderLine
from pipeline_core.timed_text import TIMED_PREFIX, parse, parse_timestamp


class PageParts(HTMLParser):
    """What tests check in a page: title, language and direction, the player's source, the
    timed lines, the speaker labels shown (with the index of the line each opens), the
    corrected marks' tooltips, the scripts and the security policy."""

    def __init__(self) -> None:
        super().__init__()
        self.language: str | None = None
        self.direction: str | None = None
        self.content_security_policy: str | None = None
        self.audio_src: str | None = None
        self.starts: list[str] = []
        self.texts: list[str] = []
        self.badge_titles: list[str] = []
        self.speakers: list[tuple[int, str]] = []
        self.scripts: list[str] = []
        self.title = ""
        self._in_text = self._in_script = self._in_title = self._in_speaker = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "html":
            self.language, self.direction = values.get("lang"), values.get("dir")
        elif tag == "meta" and values.get("http-equiv") == "Content-Security-Policy":
            self.content_security_policy = values.get("content")
        elif tag == "audio":
            self.audio_src = values.get("src")
        elif tag == "li" and "data-start" in values:
            self.starts.append(values["data-start"] or "")
        elif tag == "span" and values.get("class") == "badge" and "title" in values:
            self.badge_titles.append(values["title"] or "")
        self._in_script = tag == "script"
        self._in_title = tag == "title"
        self._in_text = tag == "span" and values.get("class") == "text"
        self._in_speaker = tag == "span" and values.get("class") == "speaker"
        if self._in_speaker:
            self.speakers.append((len(self.texts), ""))
        if self._in_text:
            self.texts.append("")
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_text = self._in_script = self._in_title = self._in_speaker = False

    def handle_data(self, data: str) -> None:
        if self._in_speaker:
            line, shown = self.speakers[-1]
            self.speakers[-1] = (line, shown + data)
        if self._in_text:
            self.texts[-1] += data
        if self._in_script:
            self.scripts[-1] += data
        if self._in_title:
            self.title += data


def parse_page(html: str) -> PageParts:
    parts = PageParts()
    parts.feed(html)
    parts.close()
    return parts


def page_parts(page: Path) -> PageParts:
    return parse_page(page.read_text(encoding="utf-8"))


def document_from_timed_text(
    title: str,
    timed_text: str,
    *,
    corrected_segments: Collection[int] | None = None,
    language: str | None = None,
    recording_href: str | None = None,
) -> ReaderDocument:
    """The reader's input from a (corrected) timed transcript.

    ``corrected_segments`` holds 0-based segment indices, a segment being each line with text
    in order (the worker writes one segment a line, never an empty one); None when which
    lines were corrected is not known.
    """
    marked = frozenset(corrected_segments or ())
    lines = []
    for index, line in enumerate(parse(timed_text).correctable):
        timing = TIMED_PREFIX.match(line.prefix)
        start, end = (
            (parse_timestamp(timing["start"]), parse_timestamp(timing["end"]))
            if timing
            else (None, None)
        )
        lines.append(ReaderLine(line.text.strip(), start, end, corrected=index in marked))
    return ReaderDocument(
        title=title,
        lines=tuple(lines),
        corrections_known=corrected_segments is not None,
        language=language,
        recording_href=recording_href,
    )
