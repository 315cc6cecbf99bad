#!/usr/bin/env bash
# AMI build step 1 (as root on the build instance): Python 3.11, ffmpeg, a virtualenv with a
# CUDA build of torch and the worker package, the systemd units and the AMI drop-in, the
# CloudWatch agent (worker logs) and the SSM agent (Session Manager).
# Layout: /opt/transcription/{src,venv,models}; the unit runs /opt/transcription/venv/bin/gpu-worker.
set -euo pipefail
: "${TORCH_VERSION:?set by packer}" "${TORCH_INDEX_URL:?set by packer}"
PREFIX=/opt/transcription
UNIT=transcription-worker.service
GIVE_BACK_UNIT=transcription-worker-give-back.service
export DEBIAN_FRONTEND=noninteractive

# First boot: cloud-init may still hold the apt lock.
cloud-init status --wait >/dev/null 2>&1 || true
apt-get update -qq
# Ubuntu 22.04's python3.11 (the project needs >= 3.11; the image's default is 3.10).
apt-get install -y -qq python3.11 python3.11-venv ffmpeg libsndfile1 >/dev/null

id -u transcription >/dev/null 2>&1 ||
  useradd --system --home-dir "$PREFIX" --shell /usr/sbin/nologin transcription
install -d -m 0755 "$PREFIX" "$PREFIX/src" "$PREFIX/models"
tar -xzf /tmp/worker-src.tar.gz -C "$PREFIX/src"

python3.11 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install -q --upgrade pip
# torch first, from the CUDA index: the worker's requirement range then finds it satisfied.
"$PREFIX/venv/bin/python" -m pip install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
"$PREFIX/venv/bin/python" -m pip install -q "$PREFIX/src[worker,diarization]"
test -x "$PREFIX/venv/bin/gpu-worker"

# The worker's unit and the unit its OnFailure= starts (gives the instance back).
for unit in "$UNIT" "$GIVE_BACK_UNIT"; do
  unit_source="$PREFIX/src/gpu_worker/systemd/$unit"
  if [ ! -f "$unit_source" ]; then
    echo "install-worker: $unit_source is missing from the committed source" >&2
    exit 1
  fi
  install -m 0644 "$unit_source" "/etc/systemd/system/$unit"
done
test -x "$PREFIX/venv/bin/gpu-worker-give-back"
# Both units append their JSON log lines here; the CloudWatch agent ships them.
install -d -m 0755 -o transcription -g transcription /var/log/transcription-worker
install -d "/etc/systemd/system/$UNIT.d"
site_packages=$("$PREFIX/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
sed "s|@SITE_PACKAGES@|$site_packages|g" /tmp/transcription-worker-ami.conf \
  >"/etc/systemd/system/$UNIT.d/10-ami.conf"
systemctl daemon-reload
# Fails the build when the unit names a program or user this image does not have.
systemd-analyze verify "/etc/systemd/system/$UNIT" "/etc/systemd/system/$GIVE_BACK_UNIT"
systemctl enable "$UNIT"

# Logs that outlive the instance: the CloudWatch agent (Amazon's package, signed download
# over HTTPS) with the worker's collect list; the stack's user data names the log group and
# starts it. The agent runs as its own user, which may read the worker's log file.
curl -fsSL -o /tmp/amazon-cloudwatch-agent.deb \
  https://amazoncloudwatch-agent.s3.amazonaws.com/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb
dpkg -i -E /tmp/amazon-cloudwatch-agent.deb
install -m 0644 /tmp/amazon-cloudwatch-agent.json "$PREFIX/amazon-cloudwatch-agent.json"
grep -q '@WORKER_LOG_GROUP@' "$PREFIX/amazon-cloudwatch-agent.json"

# Session Manager instead of SSH: the SSM agent (a snap on Ubuntu images), always on.
snap list amazon-ssm-agent >/dev/null 2>&1 || snap install amazon-ssm-agent --classic
systemctl enable snap.amazon-ssm-agent.amazon-ssm-agent.service
