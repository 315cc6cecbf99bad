"""Offline diarization: Silero voice activity, Resemblyzer speaker embeddings, clustering.

1. Speech regions: faster-whisper's Silero VAD on the recording, streamed in the worker's
   bounded windows (``transcription.audio.stream_audio``), with shorter pauses than the
   recogniser uses, since speakers often change after a short pause.
2. Embeddings: Resemblyzer's ``VoiceEncoder`` (a GE2E speaker encoder; the weights ship in
   the wheel) on 1.6 s windows every ``1 / EMBEDDINGS_PER_SECOND`` s inside each region.
3. Clustering: agglomerative, average linkage on cosine distance (scikit-learn). Given a
   number of speakers, into that many clusters; otherwise clusters closer than
   ``AUTO_DISTANCE_THRESHOLD`` are merged, then a cluster holding less than
   ``MIN_SPEAKER_SHARE`` of the speech joins the nearest other (a cough or a laugh is not a
   speaker). The threshold was chosen on the benchmark's diarization set
   (``bench/diarization.py``, bench/README.md): every threshold from 0.38 to 0.5 counts 6
   of its 7 recordings right, below that voices split and above it different voices merge;
   0.44 is the middle of that range.
4. Turns: each window speaks for the time nearest its centre inside its region; neighbours
   with one speaker are one turn. A long recording's windows are clustered in pools of
   neighbours (``MAX_CLUSTERED``), so that memory stays bounded.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from gpu_worker.speakers.diarizer import SpeakerTurn
from gpu_worker.transcription.audio import SAMPLE_RATE, Samples, stream_audio
from pipeline_core.speakers import AUTO, SpeakerCount

EMBEDDINGS_PER_SECOND: Final = 2.0
AUTO_DISTANCE_THRESHOLD: Final = 0.44
MIN_SPEAKER_SHARE: Final = 0.05
# Windows clustered one by one up to this many (a 40-minute recording's speech); beyond,
# neighbours in a region are averaged first: the distance matrix of 3000 is 72 MB, while a
# 3-hour lecture's 21,600 windows would need 3.7 GB.
MAX_CLUSTERED: Final = 3000
# The recogniser's VAD waits 2 s of silence to end a region; a turn can end sooner.
MIN_SILENCE_MS: Final = 300
SPEECH_PAD_MS: Final = 100
# Resemblyzer's level normalisation (its own preprocess_wav), without its silence trimming,
# which would move the times.
TARGET_DBFS: Final = -30

Embeddings = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SpeechRegion:
    """One stretch of speech and its embedding windows' centres (seconds) and embeddings."""

    start: float
    end: float
    centres: tuple[float, ...]
    embeddings: Embeddings


def speech_spans(samples: Samples) -> list[tuple[int, int]]:
    """The (start, end) sample indices of speech in ``samples`` (16 kHz mono)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=MIN_SILENCE_MS, speech_pad_ms=SPEECH_PAD_MS)
    return [(int(s["start"]), int(s["end"])) for s in get_speech_timestamps(samples, options)]


def cluster(embeddings: Embeddings, weights: npt.NDArray[np.float64], count: SpeakerCount) -> Any:
    """A cluster number per embedding (rows L2-normalised); ``weights``: the seconds each
    stands for, so that a minor cluster is judged by its share of the speech."""
    from sklearn.cluster import AgglomerativeClustering

    rows = len(embeddings)
    wanted = rows if count == AUTO else min(int(count), rows)
    if rows < 2 or wanted < 2:
        return np.zeros(rows, dtype=np.int64)
    if count == AUTO:
        model = AgglomerativeClustering(
            n_clusters=None,
            distance_threshold=AUTO_DISTANCE_THRESHOLD,
            metric="cosine",
            linkage="average",
        )
        return _absorb_minor(embeddings, model.fit_predict(embeddings), weights)
    model = AgglomerativeClustering(n_clusters=wanted, metric="cosine", linkage="average")
    return model.fit_predict(embeddings)


def _absorb_minor(embeddings: Embeddings, labels: Any, weights: npt.NDArray[np.float64]) -> Any:
    """Each cluster below ``MIN_SPEAKER_SHARE`` of the weight joins the nearest major one."""
    total = float(weights.sum())
    shares = {int(c): float(weights[labels == c].sum()) / total for c in np.unique(labels)}
    major = [c for c, share in shares.items() if share >= MIN_SPEAKER_SHARE]
    if not major:
        major = [max(shares, key=lambda c: shares[c])]
    centroids = np.stack([embeddings[labels == c].mean(axis=0) for c in major])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    result = labels.copy()
    for index, label in enumerate(labels):
        if int(label) not in major:
            result[index] = major[int(np.argmax(centroids @ embeddings[index]))]
    return result


def pool_windows(windows_per_region: list[int], limit: int) -> npt.NDArray[np.int64]:
    """The pool of each window: consecutive windows of one region, as few to a pool as keep
    the pools at most ``limit`` (clustering's distance matrix grows with the square)."""
    size = max(1, -(-sum(windows_per_region) // limit))
    pools: list[int] = []
    for count in windows_per_region:
        first = pools[-1] + 1 if pools else 0
        pools.extend(first + index // size for index in range(count))
    return np.asarray(pools, dtype=np.int64)


def region_turns(region: SpeechRegion, speakers: list[str]) -> list[SpeakerTurn]:
    """The region cut at the midpoints between windows of different speakers."""
    turns: list[SpeakerTurn] = []
    start = region.start
    for index, speaker in enumerate(speakers):
        last = index == len(speakers) - 1
        end = region.end if last else float(region.centres[index] + region.centres[index + 1]) / 2
        if turns and turns[-1].speaker == speaker:
            turns[-1] = SpeakerTurn(turns[-1].start, end, speaker)
        else:
            turns.append(SpeakerTurn(start, end, speaker))
        start = end
    return turns


class ResemblyzerDiarizer:
    def __init__(self, device: str) -> None:
        with warnings.catch_warnings():
            # Resemblyzer 0.1.4's imports, harmless and not ours to fix: webrtcvad's
            # pkg_resources (hence setuptools<81) and an old scipy.ndimage path.
            warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
            warnings.filterwarnings("ignore", "Please import `binary_dilation`", DeprecationWarning)
            from resemblyzer import VoiceEncoder

        self._encoder = VoiceEncoder(device=None if device == "auto" else device, verbose=False)

    def regions(self, path: Path) -> Iterator[SpeechRegion]:
        from resemblyzer.audio import normalize_volume

        for window in stream_audio(path):
            for first, last in speech_spans(window.samples):
                wav = normalize_volume(window.samples[first:last], TARGET_DBFS, increase_only=True)
                _, partials, slices = self._encoder.embed_utterance(
                    wav, return_partials=True, rate=EMBEDDINGS_PER_SECOND, min_coverage=0.5
                )
                offset = window.start + first / SAMPLE_RATE
                centres = tuple(
                    float(offset + (s.start + min(s.stop, wav.size)) / 2 / SAMPLE_RATE)
                    for s in slices
                )
                yield SpeechRegion(
                    start=offset,
                    end=window.start + last / SAMPLE_RATE,
                    centres=centres,
                    embeddings=np.asarray(partials, dtype=np.float32),
                )

    def diarize(self, path: Path, count: SpeakerCount) -> list[SpeakerTurn]:
        regions = list(self.regions(path))
        if not regions:
            return []
        embeddings = np.concatenate([r.embeddings for r in regions])
        weights = np.concatenate(
            [np.full(len(r.centres), (r.end - r.start) / len(r.centres)) for r in regions]
        )
        pools = pool_windows([len(r.centres) for r in regions], MAX_CLUSTERED)
        pooled = np.zeros((int(pools.max()) + 1, embeddings.shape[1]), dtype=np.float32)
        np.add.at(pooled, pools, embeddings)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        pooled_weights = np.bincount(pools, weights=weights).astype(np.float64)
        labels = iter(cluster(pooled, pooled_weights, count)[pools])
        turns: list[SpeakerTurn] = []
        for region in regions:
            speakers = [f"cluster-{next(labels)}" for _ in region.centres]
            turns.extend(region_turns(region, speakers))
        return turns
