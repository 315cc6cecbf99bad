"""The .docx deliverable's speaker labels, read back with python-docx."""

from __future__ import annotations

import io

import docx
import pytest

from onprem.docx_writer import transcript_docx
from pipeline_core.transcript_document import SegmentRecord, TranscriptDocument

pytestmark = pytest.mark.unit


def test_a_bold_label_opens_each_change_of_speaker() -> None:
    document = TranscriptDocument(
        source_key="audio-input/panel.mp3", job_id="j", language="en", model="m",
        audio_seconds=9.0, transcribe_seconds=1.0, real_time_factor=0.1,
        segments=(
            SegmentRecord(start=0.0, end=2.0, text="Welcome.", speaker="Speaker 1"),
            SegmentRecord(start=2.0, end=4.0, text="Our guest:", speaker="Speaker 1"),
            SegmentRecord(start=4.5, end=6.0, text="Thank you.", speaker="Speaker 2"),
        ),
    )  # fmt: skip
    word = docx.Document(io.BytesIO(transcript_docx(document)))
    paragraphs = word.paragraphs[1:]  # after the heading
    assert [p.text for p in paragraphs] == [
        "Speaker 1",
        "00:00:00  Welcome.",
        "00:00:02  Our guest:",
        "Speaker 2",
        "00:00:04  Thank you.",
    ]
    assert all(run.bold for run in paragraphs[0].runs)
