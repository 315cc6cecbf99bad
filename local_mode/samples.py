"""Sample recordings for a first run: real synthetic speech (espeak-ng) encoded to MP3.

Each comes with the sidecar JSON the on-prem uploader reads (``<file>.json`` with
``language`` and ``details``), so the first run shows the whole on-prem experience.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final


@dataclass(frozen=True)
class Sample:
    file_name: str
    voice: str
    text: str
    language: str
    details: str


SAMPLES: Final = (
    Sample(
        file_name="lecture-en.mp3",
        voice="en-us",
        text=(
            "Good morning. Today we begin the tractate Bava Kamma, on page two. "
            "The quick brown fox jumps over the lazy dog."
        ),
        language="english",
        # The domain term the speech mentions; a corrector uses it to fix the spelling.
        details="Talmud lecture, tractate Bava Kamma 2a",
    ),
    Sample(
        file_name="שיעור-עברית.mp3",
        voice="he",
        text="שלום לכולם. היום נלמד את מסכת בבא קמא, דף ב.",
        language="hebrew",
        details="שיעור גמרא, מסכת בבא קמא דף ב",
    ),
    Sample(
        file_name="announcement.mp3",
        voice="en-us",
        text="This is a short announcement. The next lecture starts at eight in the evening.",
        language="en",
        details="Weekly announcements",
    ),
)


class SampleError(RuntimeError):
    """The tools to make the sample recordings are missing or failed."""


def make_samples(folder: Path, samples: tuple[Sample, ...] = SAMPLES) -> list[Path]:
    """Write each sample's MP3 and sidecar JSON into ``folder``; reuses existing files."""
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            raise SampleError(
                f"{tool} is needed to make sample recordings (apt-get install {tool})"
            )
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    for sample in samples:
        mp3 = folder / sample.file_name
        if not mp3.exists():
            wav = folder / f".{sample.file_name}.wav"
            try:
                subprocess.run(
                    ["espeak-ng", "-v", sample.voice, "-s", "140", "-w", str(wav), sample.text],
                    check=True,
                    capture_output=True,
                )
                partial = mp3.with_name(f".{mp3.name}.partial.mp3")
                subprocess.run(
                    ["ffmpeg", "-y", "-loglevel", "error", "-i", str(wav), "-ac", "1",
                     "-b:a", "64k", str(partial)],
                    check=True,
                    capture_output=True,
                )  # fmt: skip
                partial.replace(mp3)
            except subprocess.CalledProcessError as exc:
                raise SampleError(
                    f"making {mp3.name} failed: {exc.stderr.decode(errors='replace')}"
                ) from None
            finally:
                wav.unlink(missing_ok=True)
        sidecar = folder / f"{sample.file_name}.json"
        sidecar.write_text(
            json.dumps({"language": sample.language, "details": sample.details}, ensure_ascii=False)
            + "\n",
            encoding="utf-8",
        )
        made.append(mp3)
    return made
