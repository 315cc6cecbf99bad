"""What the uploader has already sent: a small SQLite file on the on-prem machine.

An upload is remembered by bucket, absolute path, size and SHA-256 of the content, so a second
cron run sends nothing twice and a file whose content changed is sent again. Hashing every
recording on every run would read the whole archive each time, so a file's hash is cached
against its size, modification time and inode, and read again only when one of those moves.
A lock file keeps two overlapping cron runs from uploading the same files at once.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from pipeline_core.contracts import utc_timestamp

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS uploads (
    bucket TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    key TEXT NOT NULL,
    version_id TEXT,
    uploaded_at TEXT NOT NULL,
    PRIMARY KEY (bucket, path, size, sha256)
);
CREATE TABLE IF NOT EXISTS hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
"""


class AlreadyRunningError(RuntimeError):
    """Another upload run holds the lock on this state file."""


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class UploadState:
    """The uploads table and the hash cache; ``read_only`` for dry runs (writes nothing)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        if read_only:
            if path.exists():
                self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            else:
                self._db = sqlite3.connect(":memory:")
                self._db.executescript(_SCHEMA)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path)
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> UploadState:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def content_hash(self, path: Path, stat: os.stat_result) -> str:
        """SHA-256 of the file, from the cache while size, mtime and inode are unchanged."""
        name = str(path)
        row = self._db.execute(
            "SELECT sha256 FROM hashes WHERE path = ? AND size = ? AND mtime_ns = ? AND inode = ?",
            (name, stat.st_size, stat.st_mtime_ns, stat.st_ino),
        ).fetchone()
        if row is not None:
            return str(row[0])
        digest = sha256_file(path)
        if not self.read_only:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)",
                    (name, stat.st_size, stat.st_mtime_ns, stat.st_ino, digest),
                )
        return digest

    def uploaded_key(self, bucket: str, path: Path, size: int, sha256: str) -> str | None:
        row = self._db.execute(
            "SELECT key FROM uploads WHERE bucket = ? AND path = ? AND size = ? AND sha256 = ?",
            (bucket, str(path), size, sha256),
        ).fetchone()
        return None if row is None else str(row[0])

    def uploaded_path(self, bucket: str, key: str) -> Path | None:
        """The local file most recently uploaded as ``key``, if any."""
        row = self._db.execute(
            "SELECT path FROM uploads WHERE bucket = ? AND key = ? ORDER BY uploaded_at DESC",
            (bucket, key),
        ).fetchone()
        return None if row is None else Path(row[0])

    def record_upload(
        self,
        *,
        bucket: str,
        path: Path,
        size: int,
        sha256: str,
        key: str,
        version_id: str | None,
    ) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
                (bucket, str(path), size, sha256, key, version_id, utc_timestamp()),
            )


@contextmanager
def run_lock(state_path: Path) -> Iterator[None]:
    """Hold an exclusive lock next to the state file for the whole run (released on exit)."""
    state_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = state_path.with_name(state_path.name + ".lock")
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise AlreadyRunningError(
                    f"another upload run holds {lock_path}; this run does nothing"
                ) from None
            raise
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
