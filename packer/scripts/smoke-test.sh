#!/usr/bin/env bash
# AMI build step 3: fail the build unless the GPU is visible and every baked model loads on
# it through the worker's own engine and transcribes two seconds of audio.
set -euo pipefail
PREFIX=/opt/transcription
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
site_packages=$("$PREFIX/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export LD_LIBRARY_PATH="$site_packages/nvidia/cublas/lib:$site_packages/nvidia/cudnn/lib"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PREFIX/venv/bin/python" - "$(cat "$PREFIX/models/WORKER_MODELS")" <<'PY'
import sys
import time

import numpy as np
import torch

from gpu_worker.transcription.engines import load_engine

assert torch.cuda.is_available(), "torch sees no CUDA device"
seconds = np.arange(2 * 16000, dtype=np.float32) / 16000
tone = (0.1 * np.sin(2 * np.pi * 440.0 * seconds)).astype(np.float32)
for entry in sys.argv[1].split(","):
    language, model_dir = entry.split("=", 1)
    started = time.monotonic()
    engine = load_engine("faster-whisper", model_dir, "cuda")
    segments = list(engine.transcribe(tone, "en" if language == "*" else language))
    print(f"smoke-test: {model_dir} on cuda: {len(segments)} segment(s), "
          f"{time.monotonic() - started:.1f} s")
PY
echo "smoke-test: passed"
