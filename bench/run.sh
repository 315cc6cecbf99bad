#!/usr/bin/env bash
# One command for the published figures: set up what is missing, run every benchmark on this
# machine, write bench/results/ (JSON, Markdown, PNG) and README.md's generated table.
# Extra arguments go to `python -m bench` (e.g. --price g5.xlarge=0.42:cuda, --eval-dir DIR).
# BENCH_PYTHON=/path/to/python skips the bootstrap and uses that interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BENCH_PYTHON:-}" ]; then
  scripts/bootstrap.sh
  BENCH_PYTHON=.venv/bin/python
fi
exec "$BENCH_PYTHON" -m bench --update-readme "$@"
