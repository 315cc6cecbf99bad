"""The audio a benchmark runs on: the real-speech evaluation set, or generated speech."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.paths import MANIFEST

# Sentences with known text for when the evaluation set is absent (espeak-ng voices).
GENERATED: Final = (
    ("en", "en-us", "The quick brown fox jumps over the lazy dog."),
    ("en", "en-us", "We must find a new home in the stars before the sun grows old."),
    ("en", "en-us", "Please send the quarterly report to the finance team by Friday morning."),
    ("de", "de", "Der schnelle braune Fuchs springt über den faulen Hund."),
    ("es", "es", "El veloz murciélago hindú comía feliz cardillo y kiwi."),
)


@dataclass(frozen=True)
class Clip:
    clip_id: str
    path: Path
    language: str  # ISO 639-1, as the worker's jobs carry it
    reference: str
    duration_s: float
    source: str  # "eval" (real speech) or "generated" (espeak-ng)


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def eval_clips(eval_dir: Path) -> list[Clip]:
    """Every clip of ``manifest.jsonl``; Hebrew is scored against its no-niqqud text."""
    clips = []
    with (eval_dir / MANIFEST).open(encoding="utf-8") as manifest:
        for line in manifest:
            if not line.strip():
                continue
            entry = json.loads(line)
            path = eval_dir / entry["file"]
            clips.append(
                Clip(
                    clip_id=path.stem,
                    path=path,
                    language=entry["language"],
                    reference=entry.get("reference_no_niqqud") or entry["reference"],
                    duration_s=float(entry["duration_s"]),
                    source="eval",
                )
            )
    return clips


def speech_mp3(path: Path, text: str, voice: str) -> Path:
    """``text`` spoken by espeak-ng, as a 16 kHz mono MP3 (what an upload looks like)."""
    if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
        raise RuntimeError("generated speech needs espeak-ng and ffmpeg: run scripts/bootstrap.sh")
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = path.with_suffix(".speech.wav")
    _run("espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text)
    _run(
        "ffmpeg", "-y", "-loglevel", "error", "-i", str(wav),
        "-ac", "1", "-ar", "16000", "-b:a", "64k", str(path),
    )  # fmt: skip
    wav.unlink()
    return path


def generated_clips(work_dir: Path, count: int | None = None) -> list[Clip]:
    import librosa

    clips = []
    for index, (language, voice, text) in enumerate(GENERATED[:count]):
        path = speech_mp3(work_dir / f"generated-{index}-{language}.mp3", text, voice)
        clips.append(
            Clip(
                clip_id=path.stem,
                path=path,
                language=language,
                reference=text,
                duration_s=float(librosa.get_duration(path=str(path))),
                source="generated",
            )
        )
    return clips


def concatenated_mp3(clips: list[Clip], path: Path) -> Path:
    """The clips one after another, re-encoded as one 16 kHz mono MP3."""
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs: list[str] = []
    for clip in clips:
        inputs += ["-i", str(clip.path)]
    streams = "".join(f"[{i}:a]" for i in range(len(clips)))
    _run(
        "ffmpeg", "-y", "-loglevel", "error", *inputs,
        "-filter_complex", f"{streams}concat=n={len(clips)}:v=0:a=1[out]", "-map", "[out]",
        "-ac", "1", "-ar", "16000", "-b:a", "64k", str(path),
    )  # fmt: skip
    return path


def looped_mp3(source: Path, seconds: float, path: Path) -> Path:
    """``source`` repeated to ``seconds`` without re-encoding (fast even for hours)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(
        "ffmpeg", "-y", "-loglevel", "error", "-stream_loop", "-1", "-i", str(source),
        "-t", f"{seconds:.3f}", "-c", "copy", str(path),
    )  # fmt: skip
    return path


def padded_mp3(source: Path, seconds: float, path: Path) -> Path:
    """``source`` followed by silence to ``seconds``: longer than a window, no speech twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(
        "ffmpeg", "-y", "-loglevel", "error", "-i", str(source), "-af",
        f"apad=whole_dur={seconds:.3f}", "-ac", "1", "-ar", "16000", "-b:a", "64k", str(path),
    )  # fmt: skip
    return path


def by_language(clips: list[Clip], english_only: bool) -> dict[str, list[Clip]]:
    """``clips`` by language, in sorted order; only English for an English-only model."""
    grouped: dict[str, list[Clip]] = {}
    for clip in sorted(clips, key=lambda c: c.language):
        if clip.language == "en" or not english_only:
            grouped.setdefault(clip.language, []).append(clip)
    return grouped
