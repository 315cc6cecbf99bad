"""The ``.docx`` deliverable: the corrected transcript for people who edit in a word processor.

Built at home by the poller from the corrected ``.json`` (python-docx needs lxml, which is
kept out of the Lambda). One paragraph per segment: its start time, then its text; where
speakers were labelled, a bold paragraph with the speaker's label opens each change of
speaker. For a
right-to-left language every paragraph is a bidi paragraph (``w:bidi``: Word lays it out
right to left, aligned right, with punctuation on the correct side) and its runs are marked
right-to-left (``w:rtl``) and tagged with the language for complex-script proofing.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath

from docx import Document
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import RGBColor
from docx.text.paragraph import Paragraph

from pipeline_core.languages import is_right_to_left, normalize_language
from pipeline_core.timed_text import format_timestamp
from pipeline_core.transcript_document import TranscriptDocument

TIME_COLOUR = RGBColor(0x80, 0x80, 0x80)


def _right_to_left(paragraph: Paragraph, language: str) -> None:
    paragraph_properties = paragraph._p.get_or_add_pPr()  # python-docx has no API for direction
    paragraph_properties.append(OxmlElement("w:bidi"))
    for run in paragraph.runs:
        run.font.rtl = True
        run_properties = run._r.get_or_add_rPr()
        lang = OxmlElement("w:lang")
        lang.set(qn("w:bidi"), language)
        run_properties.append(lang)


def transcript_docx(document: TranscriptDocument) -> bytes:
    """The document's segments as a Word file (bytes of a ``.docx``)."""
    rtl = is_right_to_left(document.language)
    try:
        language = normalize_language(document.language)
    except ValueError:
        language = document.language
    word = Document()
    word.core_properties.title = PurePosixPath(document.source_key).name
    word.core_properties.language = language
    heading = word.add_heading(PurePosixPath(document.source_key).name, level=1)
    if rtl:
        _right_to_left(heading, language)
    speaker = None
    for segment in document.segments:
        if segment.speaker is not None and segment.speaker != speaker:
            speaker = segment.speaker
            label = word.add_paragraph()
            label.add_run(speaker).bold = True
            if rtl:
                _right_to_left(label, language)
        paragraph = word.add_paragraph()
        stamp = paragraph.add_run(format_timestamp(segment.start).rsplit(".", 1)[0] + "  ")
        stamp.font.color.rgb = TIME_COLOUR
        paragraph.add_run(segment.text)
        if rtl:
            _right_to_left(paragraph, language)
    buffer = io.BytesIO()
    word.save(buffer)
    return buffer.getvalue()
