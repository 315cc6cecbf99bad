"""Where the repository, the evaluation audio and the results are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
RESULTS_DIR: Final = REPO_ROOT / "bench" / "results"
README: Final = REPO_ROOT / "README.md"
EVAL_DIR_ENV: Final = "BENCH_EVAL_DIR"
MANIFEST: Final = "manifest.jsonl"


def _main_checkout() -> Path | None:
    """The main checkout of a git worktree (``../shared`` sits beside it, not beside us)."""
    try:
        common = subprocess.run(
            [
                "git",
                "-C",
                str(REPO_ROOT),
                "rev-parse",
                "--path-format=absolute",
                "--git-common-dir",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(common).parent if common else None


def default_eval_dir() -> Path | None:
    """``$BENCH_EVAL_DIR``, else ``../shared/eval`` beside the repository (or beside the main
    checkout of a worktree); None where that has no manifest (generated speech is used)."""
    override = os.environ.get(EVAL_DIR_ENV)
    candidates = [Path(override)] if override else [REPO_ROOT.parent / "shared" / "eval"]
    main = _main_checkout()
    if not override and main is not None:
        candidates.append(main.parent / "shared" / "eval")
    return next((c for c in candidates if (c / MANIFEST).is_file()), None)


def ensure_chalicelib() -> None:
    """Make the Lambda's ``chalicelib`` importable, as Chalice packages it."""
    chalice_dir = str(REPO_ROOT / "chalice_app")
    if chalice_dir not in sys.path:
        sys.path.insert(0, chalice_dir)


def ensure_test_support() -> None:
    """Make ``tests/support`` importable: the scripted model server the suite uses is the
    one the correction figures run against."""
    ensure_chalicelib()
    tests_dir = str(REPO_ROOT / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
