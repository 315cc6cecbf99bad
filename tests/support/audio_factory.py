"""Real audio for tests: espeak-ng speech (WAV, or MP3 encoded by ffmpeg), plus bad files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def speech_wav(path: Path, text: str, voice: str = "en-us", speed: int = 150) -> Path:
    """Spoken ``text`` as a WAV at ``path`` (espeak-ng: 22.05 kHz mono PCM)."""
    if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
        raise RuntimeError("tests need espeak-ng and ffmpeg: run scripts/bootstrap.sh")
    path.parent.mkdir(parents=True, exist_ok=True)
    _run("espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text)
    return path


def speech_mp3(path: Path, text: str, voice: str = "en-us", speed: int = 150) -> Path:
    """Spoken ``text`` as an MP3 at ``path`` (espeak-ng -> WAV -> ffmpeg/lame)."""
    wav = speech_wav(path.with_suffix(".speech.wav"), text, voice, speed)
    _run("ffmpeg", "-y", "-loglevel", "error", "-i", str(wav), "-ac", "1", "-b:a", "64k", str(path))
    wav.unlink()
    return path


def silence_mp3(path: Path, seconds: float = 5.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(
        "ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
        "anullsrc=r=16000:cl=mono", "-t", str(seconds), "-b:a", "32k", str(path),
    )  # fmt: skip
    return path


def noise_mp3(path: Path, seconds: float = 5.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(
        "ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
        f"anoisesrc=d={seconds}:c=pink:r=16000:a=0.3", "-ac", "1", "-b:a", "32k", str(path),
    )  # fmt: skip
    return path


def corrupt_mp3(path: Path) -> Path:
    """Bytes that start like an MP3 frame header and then are garbage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xfb\x90\x00" + bytes(range(256)) * 40)
    return path


def text_as_mp3(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not audio, only text renamed to .mp3\n" * 50)
    return path


def empty_mp3(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path
