"""The worker's systemd unit, read for the part of systemd that local mode plays.

On EC2 systemd restarts a failed worker (``Restart=on-failure``), never after a
configuration error (``RestartPreventExitStatus=``), gives up after ``StartLimitBurst=``
starts within ``StartLimitIntervalSec=``, and then starts the units of ``OnFailure=``. The
local scaler does the same from the same file (restarting at once rather than after
``RestartSec=``, so a test does not wait it out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import gpu_worker

SYSTEMD_DIR: Final = Path(gpu_worker.__file__).resolve().parent / "systemd"
WORKER_UNIT: Final = SYSTEMD_DIR / "transcription-worker.service"
GIVE_BACK_UNIT: Final = SYSTEMD_DIR / "transcription-worker-give-back.service"


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values (systemd allows a key more than once, e.g. Environment)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


@dataclass(frozen=True)
class RestartPolicy:
    """When a worker that exited is started again, and when its unit has failed for good."""

    prevent_exit_statuses: frozenset[int]
    start_limit_burst: int
    start_limit_interval_seconds: float
    on_failure: tuple[str, ...]

    @classmethod
    def from_unit(cls, path: Path = WORKER_UNIT) -> RestartPolicy:
        settings = unit_settings(path.read_text(encoding="utf-8"))

        def words(key: str) -> list[str]:
            return [word for value in settings.get(key, []) for word in value.split()]

        if settings.get("Service.Restart") != ["on-failure"]:
            raise ValueError(f"{path.name}: local mode plays Restart=on-failure only")
        return cls(
            prevent_exit_statuses=frozenset(
                int(word) for word in words("Service.RestartPreventExitStatus")
            ),
            start_limit_burst=int(settings["Unit.StartLimitBurst"][-1]),
            start_limit_interval_seconds=float(settings["Unit.StartLimitIntervalSec"][-1]),
            on_failure=tuple(words("Unit.OnFailure")),
        )

    def failed_for_good(self, exit_code: int, start_times: Sequence[float], now: float) -> bool:
        """After a worker that exited with ``exit_code`` (not 0): no restart, OnFailure= runs.

        ``start_times`` are the unit's starts (monotonic seconds); systemd refuses the start
        after ``start_limit_burst`` of them within the interval.
        """
        recent = [at for at in start_times if now - at <= self.start_limit_interval_seconds]
        return exit_code in self.prevent_exit_statuses or len(recent) >= self.start_limit_burst
