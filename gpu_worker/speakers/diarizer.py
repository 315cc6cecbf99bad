"""The diarizer interface, and the one chosen by the worker's configuration.

``WORKER_DIARIZER`` names the implementation: ``resemblyzer`` (the default, offline: the
speaker encoder ships inside its wheel) or ``module:factory``, a callable importable on the
worker that takes the device (``cpu``/``cuda``/``auto``) and returns a ``Diarizer``, so that
a stronger model baked into the AMI (a pyannote pipeline, packer/README.md) replaces it
without a code change here. The diarizer is loaded when the first recording asks for
speakers, never before: a worker whose recordings do not ask pays nothing for it. One that
does not load is the deployment's fault, not the recording's: a ``ConfigurationError``, so
the worker keeps the job for after the fix instead of failing it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from pipeline_core.config import ConfigError
from pipeline_core.errors import ConfigurationError
from pipeline_core.speakers import SpeakerCount

BUILT_IN: Final = "resemblyzer"


@dataclass(frozen=True)
class SpeakerTurn:
    """A stretch of the recording one speaker holds; ``speaker`` is the diarizer's own id."""

    start: float
    end: float
    speaker: str


class Diarizer(Protocol):
    def diarize(self, path: Path, count: SpeakerCount) -> list[SpeakerTurn]:
        """The speaker turns of the recording at ``path``, in time order; ``count`` is the
        number of speakers, or ``"auto"`` to find it."""
        ...


def load_diarizer(name: str, device: str) -> Diarizer:
    if name == BUILT_IN:
        from gpu_worker.speakers.resemblyzer_diarizer import ResemblyzerDiarizer

        return ResemblyzerDiarizer(device)
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ConfigError(
            f"WORKER_DIARIZER={name!r}: give {BUILT_IN!r} or 'module:factory' (a callable "
            "that takes the device and returns a diarizer)"
        )
    factory: Callable[[str], Diarizer] = getattr(importlib.import_module(module_name), attribute)
    return factory(device)


class DiarizerCache:
    """The configured diarizer, loaded on first use and kept for the next recordings."""

    def __init__(
        self, name: str, device: str, loader: Callable[[str, str], Diarizer] = load_diarizer
    ) -> None:
        self.name = name
        self._device = device
        self._loader = loader
        self._loaded: Diarizer | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def get(self) -> Diarizer:
        with self._lock:
            if self._loaded is None:
                try:
                    self._loaded = self._loader(self.name, self._device)
                except (ImportError, AttributeError, ConfigError) as exc:
                    raise ConfigurationError(
                        f"the diarizer {self.name!r} (WORKER_DIARIZER) does not load: "
                        f"{type(exc).__name__}: {exc}",
                        f"set WORKER_DIARIZER (stack parameter WorkerDiarizer) to "
                        f"{BUILT_IN!r} or to module:factory of a diarizer on the AMI",
                    ) from exc
            return self._loaded
