"""Writing a file so that it is either wholly there or not there at all.

The content goes to a temporary file in the target's own folder (same file system, so the
rename is atomic), is flushed and fsync'ed, and only then renamed over the target; the
folder is fsync'ed too so that the rename survives a power cut. A target that already holds
the same bytes is left as it is, which makes a duplicate delivery a no-op.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final

TEMP_SUFFIX: Final = ".onprem-tmp"


class OutputWriteError(OSError):
    """The output folder refused a write (read-only, full, no permission...)."""

    def __init__(self, path: Path, cause: OSError) -> None:
        self.path = path
        self.reason = cause.strerror or str(cause)
        super().__init__(cause.errno, f"cannot write {path}: {self.reason}")

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(target: Path, fill: Callable[[IO[bytes]], None]) -> bool:
    """Write what ``fill`` writes into ``target`` atomically; False when it was unchanged.

    Exceptions from ``fill`` (a failed download, a size check) propagate and leave no trace;
    file-system errors come out as ``OutputWriteError`` naming the path.
    """
    temp: Path | None = None
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed, not deleted
                dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX, delete=False
            )
        except OSError as exc:
            raise OutputWriteError(target, exc) from exc
        temp = Path(handle.name)
        with handle:
            fill(handle)
            try:
                # mkstemp makes 0600 files; outputs get the usual permissions.
                os.fchmod(handle.fileno(), 0o666 & ~_umask())
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as exc:
                raise OutputWriteError(target, exc) from exc
        if target.is_file() and filecmp.cmp(temp, target, shallow=False):
            return False
        try:
            os.replace(temp, target)
            temp = None
            _fsync_folder(target.parent)
        except OSError as exc:
            raise OutputWriteError(target, exc) from exc
        return True
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                temp.unlink()


def write_bytes_atomic(target: Path, data: bytes) -> bool:
    return write_atomic(target, lambda handle: _write_all(target, handle, data))


def _write_all(target: Path, handle: IO[bytes], data: bytes) -> None:
    try:
        handle.write(data)
    except OSError as exc:
        raise OutputWriteError(target, exc) from exc
