#!/usr/bin/env bash
# The main job, locally: sets up what is missing on first use, then runs the whole pipeline
# (emulated AWS, real Whisper weights on the CPU) on AUDIO_DIR or on sample recordings.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec .venv/bin/python -m local_mode "$@"
