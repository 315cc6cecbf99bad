"""Decoding uploaded audio to what Whisper takes: 16 kHz mono float32."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import librosa
import numpy as np
import numpy.typing as npt

SAMPLE_RATE: Final = 16_000


class AudioDecodeError(ValueError):
    """The file is empty, corrupt, truncated or not audio: retrying will not help."""


def decode_audio(path: str | Path) -> npt.NDArray[np.float32]:
    """Decode ``path`` to 16 kHz mono float32, or raise ``AudioDecodeError`` saying why."""
    file = Path(path)
    if file.stat().st_size == 0:
        raise AudioDecodeError("the file is empty (0 bytes)")
    try:
        samples, _ = librosa.load(file, sr=SAMPLE_RATE, mono=True)
    except Exception as exc:  # librosa raises many types (soundfile, audioread, EOFError)
        # Some decoders raise with an empty message (audioread's NoBackendError): name the type.
        detail = str(exc).strip() or type(exc).__name__
        raise AudioDecodeError(f"the file could not be decoded as audio: {detail}") from None
    if samples.size == 0:
        raise AudioDecodeError("the file decodes to no audio samples")
    return samples.astype(np.float32, copy=False)
