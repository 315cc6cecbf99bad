"""Processes a test started, or that started under it, looked up as the kernel sees them."""

from __future__ import annotations

from pathlib import Path


def process_gone(pid: int) -> bool:
    """No process ``pid``, or only its zombie (exited, not yet reaped: the container's init
    may never reap an orphan)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # the name in parentheses may hold spaces
