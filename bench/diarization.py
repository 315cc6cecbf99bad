"""Who spoke when, measured: a test set built at run time from the evaluation clips.

The evaluation set (``../shared/eval``) has no multi-speaker recording with known turns, but
it has clips of different people. ``VOICES`` groups its clips by speaker (SASPEECH is one
speaker's corpus; each LibriVox chapter one reader); ``CASES`` joins them into recordings of
1 to 4 speakers whose turns (2-9 s, each cut at the quietest moment near its end, so a word
is rarely split) alternate with pauses of 0.2-1.5 s, drawn from a fixed seed. The true turns
are known, so the diarization error rate (missed speech, false alarm, speaker confusion;
``pyannote.metrics``, a 0.25 s collar each side of a boundary, as is usual) and the number of
speakers found are measured per recording, with the step's time per second of audio and the
memory it adds. Nothing is copied into the repository: recordings live in a temporary folder.
"""

from __future__ import annotations

import logging
import re
import time
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.latency import RssSampler
from gpu_worker.speakers import resemblyzer_diarizer
from gpu_worker.speakers.diarizer import Diarizer, SpeakerTurn
from gpu_worker.transcription.audio import SAMPLE_RATE, Samples, decode_audio, quiet_cut
from pipeline_core.speakers import AUTO, SpeakerCount

log = logging.getLogger(__name__)

# Each voice: the evaluation clips (``manifest.jsonl`` names) of one speaker.
VOICES: Final = {
    "saspeech (he)": (
        "audio/saspeech_CreditRating_0006.wav",
        "audio/saspeech_Electricity_0001.wav",
        "audio/saspeech_RoboShaul1_0065.wav",
        "audio/saspeech_Hungary1_0068.wav",
        "audio/saspeech_Hashlama112_0024.wav",
        "audio/saspeech_Meat_0089.wav",
        "audio/saspeech_Meat_0039.wav",
    ),
    "librivox de": ("audio/aeneas_simplicissimus_de.mp3",),
    "librivox es": ("audio/aeneas_capitanveneno_es.mp3",),
    "jfk (en)": ("audio/jfk.flac",),
    "ljspeech (en)": ("audio/ljspeech_LJ050-0131.wav",),
}


@dataclass(frozen=True)
class Case:
    name: str
    voices: tuple[str, ...]
    turns: int  # turns in all, taken from the voices in turn


CASES: Final = (
    Case("1 speaker (he)", ("saspeech (he)",), 6),
    Case("1 speaker (de)", ("librivox de",), 6),
    Case("2 speakers (he, es)", ("saspeech (he)", "librivox es"), 8),
    Case("2 speakers (de, en)", ("librivox de", "jfk (en)"), 5),
    Case("2 speakers (en)", ("jfk (en)", "ljspeech (en)"), 4),
    Case("3 speakers", ("saspeech (he)", "librivox de", "librivox es"), 9),
    Case("4 speakers", ("saspeech (he)", "librivox de", "librivox es", "ljspeech (en)"), 9),
)
QUICK_CASES: Final = (CASES[0], CASES[2])
TURN_SECONDS: Final = (2.0, 9.0)
PAUSE_SECONDS: Final = (0.2, 1.5)
COLLAR_SECONDS: Final = 0.5  # pyannote's collar is the total: 0.25 s each side
SEED: Final = 20


@dataclass(frozen=True)
class Recording:
    case: Case
    path: Path
    turns: tuple[SpeakerTurn, ...]  # the truth
    seconds: float


@dataclass(frozen=True)
class Scores:
    der: float
    missed: float
    false_alarm: float
    confusion: float


@dataclass(frozen=True)
class CaseResult:
    case: str
    true_speakers: int
    found_speakers: int
    audio_seconds: float
    der: float
    missed: float
    false_alarm: float
    confusion: float
    diarize_seconds: float
    rtf: float


class _Voice:
    """One speaker's audio, handed out turn by turn, from the start again when used up."""

    def __init__(self, samples: Samples) -> None:
        self.samples = samples
        self.position = 0

    def take(self, seconds: float) -> Samples:
        wanted = int(seconds * SAMPLE_RATE)
        if self.position + wanted > self.samples.size:
            self.position = 0
        end = min(self.samples.size, self.position + wanted)
        search = int(1.0 * SAMPLE_RATE)
        cut = quiet_cut(self.samples, end - search, end) if end < self.samples.size else end
        turn = self.samples[self.position : cut]
        self.position = cut
        return turn


def _voice_samples(eval_dir: Path, files: Sequence[str]) -> Samples:
    return np.concatenate([decode_audio(eval_dir / name) for name in files])


def _write_wav(path: Path, samples: Samples) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())


def build_recording(case: Case, eval_dir: Path, work_dir: Path, seed: int = SEED) -> Recording:
    """``case`` as a 16 kHz WAV in ``work_dir``, with its true turns."""
    rng = np.random.default_rng(seed)
    voices = [_Voice(_voice_samples(eval_dir, VOICES[name])) for name in case.voices]
    pieces: list[Samples] = []
    turns: list[SpeakerTurn] = []
    at = 0
    for index in range(case.turns):
        voice_index = index % len(voices)
        if index and len(voices) > 2 and rng.random() < 0.3:  # not always round the table
            voice_index = int(rng.integers(len(voices)))
            if case.voices[voice_index] == turns[-1].speaker:
                voice_index = (voice_index + 1) % len(voices)
        pause = np.zeros(int(rng.uniform(*PAUSE_SECONDS) * SAMPLE_RATE), dtype=np.float32)
        turn = voices[voice_index].take(float(rng.uniform(*TURN_SECONDS)))
        pieces.extend([pause, turn])
        at += pause.size
        turns.append(
            SpeakerTurn(at / SAMPLE_RATE, (at + turn.size) / SAMPLE_RATE, case.voices[voice_index])
        )
        at += turn.size
    path = work_dir / f"diarization-{re.sub(r'[^a-z0-9]+', '-', case.name.lower())}.wav"
    _write_wav(path, np.concatenate(pieces))
    return Recording(case, path, tuple(turns), at / SAMPLE_RATE)


def _annotation(turns: Sequence[SpeakerTurn]) -> object:
    from pyannote.core import Annotation, Segment

    annotation = Annotation()
    for index, turn in enumerate(turns):
        annotation[Segment(turn.start, turn.end), index] = turn.speaker
    return annotation


def score(truth: Sequence[SpeakerTurn], found: Sequence[SpeakerTurn], seconds: float) -> Scores:
    """Diarization error rate and its parts over the recording's ``seconds``, each a fraction
    of the true speech."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=COLLAR_SECONDS)
    uem = Timeline([Segment(0.0, seconds)])
    parts = metric(_annotation(truth), _annotation(found), uem=uem, detailed=True)
    total = parts["total"] or 1.0
    return Scores(
        der=float(parts["diarization error rate"]),
        missed=parts["missed detection"] / total,
        false_alarm=parts["false alarm"] / total,
        confusion=parts["confusion"] / total,
    )


def measure_case(
    diarizer: Diarizer, recording: Recording, count: SpeakerCount = AUTO
) -> CaseResult:
    started = time.monotonic()
    found = diarizer.diarize(recording.path, count)
    elapsed = time.monotonic() - started
    scores = score(recording.turns, found, recording.seconds)
    return CaseResult(
        case=recording.case.name,
        true_speakers=len(recording.case.voices),
        found_speakers=len({turn.speaker for turn in found}),
        audio_seconds=round(recording.seconds, 1),
        der=round(scores.der, 4),
        missed=round(scores.missed, 4),
        false_alarm=round(scores.false_alarm, 4),
        confusion=round(scores.confusion, 4),
        diarize_seconds=round(elapsed, 3),
        rtf=round(elapsed / recording.seconds, 4),
    )


def _peak_gpu_mib(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def measure(eval_dir: Path, work_dir: Path, device: str, quick: bool) -> dict[str, Any]:
    """Every case (``QUICK_CASES`` with ``quick``) with an automatic speaker count, and the
    memory the step adds to the process: the encoder loaded and every case run."""
    recordings = [
        build_recording(case, eval_dir, work_dir) for case in (QUICK_CASES if quick else CASES)
    ]
    with RssSampler() as rss:
        started = time.monotonic()
        diarizer = resemblyzer_diarizer.ResemblyzerDiarizer(device)
        load_seconds = time.monotonic() - started
        log.info("diarization: %d recordings", len(recordings))
        rows = [measure_case(diarizer, recording) for recording in recordings]
    audio = sum(row.audio_seconds for row in rows)
    return {
        "diarizer": "resemblyzer (Silero VAD, Resemblyzer VoiceEncoder, agglomerative)",
        "device": device,
        "settings": {
            "auto_distance_threshold": resemblyzer_diarizer.AUTO_DISTANCE_THRESHOLD,
            "min_speaker_share": resemblyzer_diarizer.MIN_SPEAKER_SHARE,
            "embeddings_per_second": resemblyzer_diarizer.EMBEDDINGS_PER_SECOND,
            "collar_seconds": COLLAR_SECONDS,
            "turn_seconds": list(TURN_SECONDS),
            "pause_seconds": list(PAUSE_SECONDS),
            "seed": SEED,
        },
        "load_seconds": round(load_seconds, 2),
        "added_rss_mib": round((rss.peak - rss.before) / 2**20, 1),
        "peak_gpu_mib": _peak_gpu_mib(device),
        "count_accuracy": round(
            sum(row.found_speakers == row.true_speakers for row in rows) / len(rows), 4
        ),
        "rtf": round(sum(row.diarize_seconds for row in rows) / audio, 4),
        "cases": [asdict(row) for row in rows],
    }
