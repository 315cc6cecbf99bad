"""The speakers request, the labels, and how turns become labelled segments and words."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_worker.speakers.diarizer import DiarizerCache, SpeakerTurn
from gpu_worker.speakers.labelling import label_segments
from gpu_worker.speakers.resemblyzer_diarizer import (
    SpeechRegion,
    cluster,
    pool_windows,
    region_turns,
)
from gpu_worker.transcription.transcript import Segment, Word
from pipeline_core.config import ConfigError, WorkerSettings
from pipeline_core.contracts import AudioJob, ContractError
from pipeline_core.errors import ConfigurationError
from pipeline_core.speakers import (
    AUTO,
    SpeakersRequestError,
    labels_in_order,
    normalize_speakers,
    requested_count,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "normal"),
    [("auto", "auto"), (" AUTO ", "auto"), (3, "3"), ("02", "2"), ("off", "off")],
)
def test_speakers_requests_that_are_understood(value: object, normal: str) -> None:
    assert normalize_speakers(value) == normal


@pytest.mark.parametrize("value", ["", "some", 0, 21, "-1", True, 2.5, None])
def test_speakers_requests_that_are_refused(value: object) -> None:
    with pytest.raises(SpeakersRequestError, match="speakers must be"):
        normalize_speakers(value)


def test_the_recording_wins_over_the_deployment_and_nothing_means_off() -> None:
    assert requested_count(None, None) is None
    assert requested_count(None, "auto") == AUTO
    assert requested_count("2", "auto") == 2
    assert requested_count("off", "auto") is None


def test_the_audio_job_carries_the_request_and_older_messages_have_none() -> None:
    job = AudioJob.from_dict({"s3_key": "a.mp3", "language": "he", "speakers": "Auto"})
    assert job.speakers == "auto"
    assert AudioJob.from_dict({"s3_key": "a.mp3", "language": "he"}).speakers is None
    with pytest.raises(ContractError):
        AudioJob.from_dict({"s3_key": "a.mp3", "language": "he", "speakers": "many"})


def _env(**extra: str) -> dict[str, str]:
    return {
        "PIPELINE_BUCKET": "b",
        "JOB_TABLE": "t",
        "AUDIO_QUEUE_URL": "q",
        "LLM_QUEUE_URL": "l",
        "RESULTS_QUEUE_URL": "r",
        "WORKER_MODELS": "*=/m",
        **extra,
    }


def test_the_deployment_default_is_off_unless_set_and_checked() -> None:
    assert WorkerSettings.from_env(_env()).default_speakers is None
    assert WorkerSettings.from_env(_env(DEFAULT_SPEAKERS="auto")).default_speakers == "auto"
    with pytest.raises(ConfigError, match="DEFAULT_SPEAKERS"):
        WorkerSettings.from_env(_env(DEFAULT_SPEAKERS="everyone"))


def test_labels_follow_the_order_of_first_appearance() -> None:
    assert labels_in_order(["c7", "c2", "c7", "c0"]) == {
        "c7": "Speaker 1",
        "c2": "Speaker 2",
        "c0": "Speaker 3",
    }


def _words(*spec: tuple[float, float, str]) -> tuple[Word, ...]:
    return tuple(Word(start, end, text) for start, end, text in spec)


def test_a_segment_spanning_a_change_is_split_at_its_words() -> None:
    turns = [SpeakerTurn(0.0, 2.1, "b"), SpeakerTurn(2.3, 5.0, "a"), SpeakerTurn(6.0, 8.0, "b")]
    segments = [
        Segment(
            0.0,
            4.0,
            "Is it raining? Yes, since noon.",
            _words(
                (0.0, 0.4, " Is"),
                (0.4, 0.6, " it"),
                (0.6, 2.0, " raining?"),
                (2.4, 2.8, " Yes,"),
                (2.8, 3.3, " since"),
                (3.3, 4.0, " noon."),
            ),
        ),
        Segment(5.5, 7.0, "Thanks.", _words((5.6, 6.9, " Thanks."))),  # starts in a pause
    ]
    labelled = label_segments(segments, turns)
    assert [(s.start, s.end, s.text, s.speaker) for s in labelled] == [
        (0.0, 2.0, "Is it raining?", "Speaker 1"),
        (2.4, 4.0, "Yes, since noon.", "Speaker 2"),
        (5.5, 7.0, "Thanks.", "Speaker 1"),
    ]
    assert [w.speaker for w in labelled[1].words] == ["Speaker 2"] * 3
    assert "".join(w.text for w in labelled[0].words).strip() == labelled[0].text


def test_wordless_segments_take_the_speaker_they_overlap_most_and_no_turns_change_nothing() -> None:
    segments = [Segment(0.0, 3.0, "one"), Segment(3.0, 4.0, "two")]
    labelled = label_segments(segments, [SpeakerTurn(0, 1, "x"), SpeakerTurn(1, 4, "y")])
    assert [s.speaker for s in labelled] == ["Speaker 1", "Speaker 1"]
    assert label_segments(segments, []) == segments


def _unit(vector: list[float]) -> list[float]:
    array = np.asarray(vector, dtype=np.float64)
    return list(array / np.linalg.norm(array))


def test_clustering_counts_voices_merges_a_lone_blip_and_obeys_a_given_count() -> None:
    rng = np.random.default_rng(1)
    one, two = np.eye(8)[0], np.eye(8)[1]
    rows = [_unit(list(one + rng.normal(0, 0.05, 8))) for _ in range(20)]
    rows += [_unit(list(two + rng.normal(0, 0.05, 8))) for _ in range(20)]
    rows.append(_unit(list(np.eye(8)[2])))  # a cough: one window, far from both voices
    embeddings = np.abs(np.asarray(rows, dtype=np.float32))
    weights = np.full(len(rows), 0.5)
    found = cluster(embeddings, weights, AUTO)
    assert len(set(found[:20])) == len(set(found[20:40])) == 1
    assert found[0] != found[20]
    assert len(set(found)) == 2
    assert len(set(cluster(embeddings[:20], weights[:20], AUTO))) == 1
    assert len(set(cluster(embeddings, weights, 3))) == 3
    assert len(set(cluster(embeddings[:1], weights[:1], 4))) == 1


def test_a_region_is_cut_halfway_between_windows_of_different_speakers() -> None:
    region = SpeechRegion(1.0, 5.0, (1.8, 2.3, 2.8, 3.3), np.zeros((4, 2), dtype=np.float32))
    assert region_turns(region, ["a", "a", "b", "b"]) == [
        SpeakerTurn(1.0, 2.55, "a"),
        SpeakerTurn(2.55, 5.0, "b"),
    ]


def test_windows_are_pooled_with_their_neighbours_only_when_there_are_too_many() -> None:
    assert list(pool_windows([3, 2], limit=10)) == [0, 1, 2, 3, 4]
    assert list(pool_windows([5, 3], limit=4)) == [0, 0, 1, 1, 2, 3, 3, 4]
    assert max(pool_windows([7000, 14000], limit=3000)) < 3000


@pytest.mark.parametrize("name", ["no.such.module:load", "pipeline_core.speakers:nothing", "x"])
def test_a_diarizer_that_does_not_load_is_the_deployments_fault(name: str) -> None:
    diarizers = DiarizerCache(name, "cpu")
    with pytest.raises(ConfigurationError, match="WORKER_DIARIZER"):
        diarizers.get()
    assert not diarizers.loaded
