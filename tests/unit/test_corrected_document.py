"""The corrected JSON: corrected text on the recognised timings, word timings kept where the
words did not change, and which segments were corrected."""

from __future__ import annotations

import json

from chalicelib.correction.corrected_document import (
    CorrectionSource,
    corrected_document,
    corrected_words,
)
from pipeline_core.timed_text import parse
from pipeline_core.transcript_document import (
    SCHEMA_VERSION,
    SegmentRecord,
    TranscriptDocument,
    WordRecord,
)

SOURCE = CorrectionSource(
    job_id="j1", source_key="audio-input/lesson.mp3", language="en", corrector="bedrock:model"
)
TIMED = (
    "[00:00:00.000 --> 00:00:02.000] we learn on the camera\n"
    "\n"
    "[00:00:02.000 --> 00:00:04.000] the mishna says\n"
    "[00:00:04.000 --> 00:00:05.000] ok\n"
)


def _words(*timed: tuple[str, float, float]) -> tuple[WordRecord, ...]:
    return tuple(
        WordRecord(start=start, end=end, text=f" {text}", probability=0.9)
        for text, start, end in timed
    )


def _recognised(job_id: str = "j1") -> TranscriptDocument:
    return TranscriptDocument(
        source_key="audio-input/lesson.mp3", job_id=job_id, language="en", model="whisper",
        audio_seconds=5.0, transcribe_seconds=0.5, real_time_factor=0.1,
        segments=(
            SegmentRecord(
                start=0.0, end=2.0, text="we learn on the camera",
                words=_words(("we", 0.0, 0.3), ("learn", 0.3, 0.8), ("on", 0.8, 1.0),
                             ("the", 1.0, 1.2), ("camera", 1.2, 2.0)),
            ),
            SegmentRecord(
                start=2.0, end=4.0, text="the mishna says",
                words=_words(("the", 2.0, 2.4), ("mishna", 2.4, 3.2), ("says", 3.2, 4.0)),
            ),
            SegmentRecord(start=4.0, end=5.0, text="ok", words=_words(("ok", 4.0, 5.0))),
        ),
    )  # fmt: skip


def test_unchanged_words_keep_their_timings_and_changed_ones_share_the_span() -> None:
    words = _recognised().segments[0].words
    result = corrected_words(words, "we learn Bava Kamma")
    assert result[:2] == words[:2]  # measured timings and probability kept
    replaced = result[2:]
    assert [w.text for w in replaced] == [" Bava", " Kamma"]
    assert all(w.estimated and w.probability is None for w in replaced)
    assert replaced[0].start == 0.8
    assert replaced[-1].end == 2.0
    assert replaced[0].end == replaced[1].start

    inserted = corrected_words(words, "we learn today on the camera")
    assert [w.text for w in inserted] == [" we", " learn", " today", " on", " the", " camera"]
    assert inserted[2].estimated
    assert (inserted[2].start, inserted[2].end) == (0.8, 0.8)
    assert [w.text for w in corrected_words(words, "we learn camera")] == [
        " we",
        " learn",
        " camera",
    ]
    assert corrected_words((), "anything") == ()


def test_the_document_marks_corrected_and_changed_segments_on_the_recognised_timings() -> None:
    transcript = parse(TIMED)
    texts = {1: "we learn Bava Kamma", 3: "the Mishnah says"}  # line 4 was not corrected

    document = corrected_document(transcript, texts, _recognised(), SOURCE)

    assert document.schema_version == SCHEMA_VERSION
    assert document.corrector == "bedrock:model"
    assert (document.model, document.audio_seconds) == ("whisper", 5.0)
    first, second, third = document.segments
    assert (first.start, first.end, first.text) == (0.0, 2.0, "we learn Bava Kamma")
    assert first.corrected
    assert first.changed
    assert first.original_text == "we learn on the camera"
    assert second.text == "the Mishnah says"
    assert second.words[0] == _recognised().segments[1].words[0]
    assert second.words[1].estimated
    assert not third.corrected
    assert not third.changed
    assert third.words == _recognised().segments[2].words

    data = json.loads(document.to_json())
    assert [s["corrected"] for s in data["segments"]] == [True, True, False]
    assert "original_text" not in data["segments"][2]
    assert "estimated" not in data["segments"][2]["words"][0]
    assert TranscriptDocument.from_json(document.to_json()) == document


def test_a_checked_segment_the_corrector_left_alone_is_corrected_but_not_changed() -> None:
    document = corrected_document(parse(TIMED), {4: "ok"}, _recognised(), SOURCE)
    assert document.segments[2].corrected
    assert not document.segments[2].changed


def test_without_a_usable_json_the_timings_come_from_the_timed_lines() -> None:
    transcript = parse(TIMED)
    for recognised in (None, _recognised(job_id="another-job")):
        document = corrected_document(transcript, {1: "we learn Bava Kamma"}, recognised, SOURCE)
        assert [(s.start, s.end) for s in document.segments] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]
        assert all(s.words == () for s in document.segments)
        assert (document.job_id, document.model, document.audio_seconds) == ("j1", "unknown", 5.0)
        assert document.segments[0].original_text == "we learn on the camera"

    by_hand = parse("00:00:01,500 --> 00:00:03,000 hello\nno timing here\n")
    document = corrected_document(by_hand, {}, None, SOURCE)
    assert [(s.start, s.end, s.text) for s in document.segments] == [
        (1.5, 3.0, "hello"),
        (3.0, 3.0, "no timing here"),
    ]


def test_speakers_stay_on_their_segments_and_reach_the_words_the_correction_brought_in() -> None:
    labelled = _recognised().model_copy(
        update={
            "segments": tuple(
                segment.model_copy(
                    update={
                        "speaker": speaker,
                        "words": tuple(
                            w.model_copy(update={"speaker": speaker}) for w in segment.words
                        ),
                    }
                )
                for segment, speaker in zip(
                    _recognised().segments, ("Speaker 1", "Speaker 2", "Speaker 1"), strict=True
                )
            )
        }
    )
    timed = TIMED.replace("] ", "] [Speaker 1] ", 1)
    texts = {1: "we learn Bava Kamma"}
    document = corrected_document(parse(timed), texts, labelled, SOURCE)
    assert [s.speaker for s in document.segments] == ["Speaker 1", "Speaker 2", "Speaker 1"]
    assert {w.speaker for w in document.segments[0].words} == {"Speaker 1"}
    assert document.segments[0].words[-1].estimated

    from_lines = corrected_document(parse(timed), texts, None, SOURCE)
    assert [s.speaker for s in from_lines.segments] == ["Speaker 1", None, None]
