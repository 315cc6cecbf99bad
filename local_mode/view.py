"""What the user watches: each file's stage while it runs, a summary table at the end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from local_mode.scaler import ScalingEvent


@dataclass(frozen=True)
class FileStatus:
    """One uploaded file as the job table and the poller see it."""

    name: str
    stage: str  # uploaded, queued, transcribing, transcribed, correcting, done, failed
    percent: float | None = None
    audio_seconds: float | None = None
    transcribe_seconds: float | None = None
    result_status: str | None = None
    error: str | None = None
    output_name: str | None = None  # its files' name (pipeline_core.keys), once dispatched
    worker: str | None = None  # the worker (instance) that claimed it
    outputs: tuple[str, ...] = ()

    @property
    def real_time_factor(self) -> float | None:
        if not self.audio_seconds or self.transcribe_seconds is None:
            return None
        return self.transcribe_seconds / self.audio_seconds

    @property
    def finished(self) -> bool:
        return self.stage in ("done", "failed")


_STAGE_STYLE = {"done": "green", "failed": "red", "transcribing": "yellow", "correcting": "cyan"}


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


def progress_table(files: Sequence[FileStatus], title: str = "Pipeline") -> Table:
    table = Table(title=title)
    table.add_column("file")
    table.add_column("stage")
    table.add_column("audio", justify="right")
    table.add_column("worker")
    for file in files:
        stage = file.stage
        if stage == "transcribing" and file.percent is not None:
            stage = f"transcribing {file.percent:.0f}%"
        if file.error:
            stage = f"{stage}: {file.error}"
        style = _STAGE_STYLE.get(file.stage, "")
        table.add_row(
            file.name,
            f"[{style}]{stage}[/]" if style else stage,
            _seconds(file.audio_seconds),
            file.worker or "",
        )
    return table


def workers_table(workers: Mapping[str, int], files: Sequence[FileStatus]) -> Table:
    """Each running worker (instance -> process id) and the file it is transcribing."""
    table = Table(title=f"GPU workers ({len(workers)})")
    table.add_column("instance")
    table.add_column("pid", justify="right")
    table.add_column("doing")
    for instance, pid in sorted(workers.items()):
        doing = [
            f"{file.name} {file.percent:.0f}%" if file.percent is not None else file.name
            for file in files
            if file.worker == instance and file.stage == "transcribing"
        ]
        table.add_row(instance, str(pid), ", ".join(doing) or "[dim]idle[/]")
    return table


def live_view(workers: Mapping[str, int], files: Sequence[FileStatus]) -> Group:
    """The files' progress and, in local mode, the workers."""
    if not workers:
        return Group(progress_table(files))
    return Group(progress_table(files), workers_table(workers, files))


def summary_table(files: Sequence[FileStatus], relative_to: Path | None = None) -> Table:
    table = Table(title="Results")
    for column in ("file", "duration", "transcription", "RTF", "status", "outputs"):
        table.add_column(
            column, justify="right" if column in ("duration", "transcription", "RTF") else "left"
        )
    for file in files:
        rtf = file.real_time_factor
        status = file.result_status or file.stage
        if file.error:
            status = f"{status}: {file.error}"
        table.add_row(
            file.name,
            _seconds(file.audio_seconds),
            _seconds(file.transcribe_seconds),
            "" if rtf is None else f"{rtf:.3f}",
            status,
            "\n".join(_shown(path, relative_to) for path in file.outputs),
        )
    return table


def _shown(path: str, folder: Path | None) -> str:
    if folder is None:
        return path
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return path


def scaling_table(events: Sequence[ScalingEvent], started_at: float) -> Table:
    table = Table(title="Auto Scaling")
    table.add_column("at", justify="right")
    table.add_column("event")
    for event in events:
        table.add_row(f"+{event.at - started_at:.1f} s", event.what)
    return table
