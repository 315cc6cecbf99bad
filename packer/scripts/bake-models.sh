#!/usr/bin/env bash
# AMI build step 2: download the configured models from the Hugging Face hub (build time
# only: the worker never downloads) into /opt/transcription/models/<owner>--<name> and record
# the matching WORKER_MODELS value in /opt/transcription/models/WORKER_MODELS.
# MODELS: "lang=owner/name[@revision],...", "*" for every other language.
# BAKE_MODELS_PLAN_ONLY=1 prints the WORKER_MODELS value and downloads nothing (tests).
set -euo pipefail
: "${MODELS:?set by packer, e.g. he=ivrit-ai/whisper-large-v3-turbo-ct2,*=owner/name}"
PREFIX=/opt/transcription
export HF_HUB_DISABLE_TELEMETRY=1

worker_models=()
IFS=',' read -r -a entries <<<"$MODELS"
for entry in "${entries[@]}"; do
  language=${entry%%=*}
  model=${entry#*=}
  repo=${model%%@*}
  revision=main
  if [[ "$model" == *@* ]]; then revision=${model#*@}; fi
  target="$PREFIX/models/${repo//\//--}"
  worker_models+=("$language=$target")
  if [ "${BAKE_MODELS_PLAN_ONLY:-0}" = 1 ]; then continue; fi
  echo "bake-models: $language -> $repo@$revision -> $target"
  "$PREFIX/venv/bin/python" - "$repo" "$revision" "$target" <<'PY'
import sys

from huggingface_hub import snapshot_download

repo, revision, target = sys.argv[1:4]
snapshot_download(
    repo_id=repo,
    revision=revision,
    local_dir=target,
    allow_patterns=["*.json", "*.txt", "*.bin", "*.safetensors", "*.model"],
)
PY
  if [ ! -s "$target/model.bin" ] && [ ! -s "$target/model.safetensors" ]; then
    echo "bake-models: $repo has no model.bin or model.safetensors" >&2
    exit 1
  fi
done
if [ "${BAKE_MODELS_PLAN_ONLY:-0}" = 1 ]; then
  (
    IFS=','
    echo "${worker_models[*]}"
  )
  exit 0
fi
(
  IFS=','
  echo "${worker_models[*]}"
) >"$PREFIX/models/WORKER_MODELS"
chmod -R a+rX "$PREFIX/models"
echo "bake-models: WORKER_MODELS=$(cat "$PREFIX/models/WORKER_MODELS")"
