#!/usr/bin/env bash
# The test command: sets up what is missing, then lints, type-checks and runs the suite.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy .
echo "== pytest"
.venv/bin/python -m pytest "$@"
