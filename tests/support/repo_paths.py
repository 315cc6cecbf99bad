"""Where the repository is, for tests that read or run its files."""

from __future__ import annotations

from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]


def repo_root() -> str:
    return str(REPO_ROOT)
