"""Output for a person at a terminal (rich) or for cron and systemd (JSON lines).

Interactive when stderr is a terminal: log lines through rich and a progress bar for uploads.
Otherwise every log line is one JSON object (``pipeline_core.jsonlog``) carrying the object
key, which is what a cron mail or the journal should hold.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import IO, Protocol

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from pipeline_core.jsonlog import configure_logging

SERVICE = "onprem"


def is_interactive(stream: IO[str] | None = None) -> bool:
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


def setup_logging(level: str, interactive: bool) -> Console | None:
    """Configure the root logger; returns the rich console when interactive."""
    if not interactive:
        configure_logging(level, SERVICE)
        return None
    console = Console(stderr=True)
    handler = RichHandler(console=console, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return console


def stdout_console() -> Console:
    """For tables on stdout; piped to a file or a mail, rows are not squeezed to 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=240)


class UploadProgress(Protocol):
    def begin(self, files: int, total_bytes: int) -> None: ...

    def file(self, name: str, size: int) -> Callable[[int], None]:
        """Start a file; the returned callback takes byte counts (any thread)."""
        ...

    def file_done(self) -> None: ...

    def end(self) -> None: ...


class NoProgress:
    """Cron: the per-file log line is the progress."""

    def begin(self, files: int, total_bytes: int) -> None:
        pass

    def file(self, name: str, size: int) -> Callable[[int], None]:
        return lambda _: None

    def file_done(self) -> None:
        pass

    def end(self) -> None:
        pass


class RichUploadProgress:
    """A bar for the whole run and one for the current file."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._lock = threading.Lock()
        self._total: TaskID | None = None
        self._current: TaskID | None = None

    def begin(self, files: int, total_bytes: int) -> None:
        self._progress.start()
        self._total = self._progress.add_task(f"{files} file(s)", total=total_bytes)

    def file(self, name: str, size: int) -> Callable[[int], None]:
        current = self._progress.add_task(name, total=size)
        self._current = current

        def advance(amount: int) -> None:
            with self._lock:
                self._progress.advance(current, amount)
                if self._total is not None:
                    self._progress.advance(self._total, amount)

        return advance

    def file_done(self) -> None:
        if self._current is not None:
            self._progress.remove_task(self._current)
            self._current = None

    def end(self) -> None:
        self._progress.stop()
