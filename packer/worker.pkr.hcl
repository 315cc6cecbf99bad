# The GPU worker AMI: NVIDIA-driver base image + the worker virtualenv (CUDA torch,
# faster-whisper, transformers, librosa, ffmpeg) + the model weights baked in + the
# transcription-worker systemd unit. Build: see README "Deploy" (packer init/build packer/).

variable "region" {
  type        = string
  default     = "us-east-1"
  description = "Region to build in; the stack must be deployed in the same region (or copy the AMI)."
}

variable "instance_type" {
  type        = string
  default     = "g4dn.xlarge"
  description = "A GPU instance, so the smoke test loads the models on CUDA."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet for the build instance (empty: the default VPC)."
}

variable "source_ami_name" {
  type        = string
  default     = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
  description = "Name filter of the base image (owner amazon, newest match): NVIDIA driver and CUDA preinstalled."
}

variable "volume_size_gib" {
  type        = number
  default     = 100
  description = "Root volume; the stack's RootVolumeGiB accepts nothing smaller (its MinValue is this default)."
}

# Language code (or "*" for every other language) -> Hugging Face model id, optionally
# "@revision" to pin a commit. Downloaded at build time only; the worker never downloads.
# Both are real CTranslate2 (faster-whisper) conversions of Whisper large-v3-turbo:
# ivrit.ai's Hebrew fine-tune, and the multilingual one that faster-whisper's own
# "large-v3-turbo" alias resolves to (Systran publishes no turbo conversion).
variable "models" {
  type = map(string)
  default = {
    "he" = "ivrit-ai/whisper-large-v3-turbo-ct2"
    "*"  = "mobiuslabsgmbh/faster-whisper-large-v3-turbo"
  }
}

variable "torch_version" {
  type        = string
  default     = "2.6.0"
  description = "torch for the transformers engine, from the CUDA wheel index below (within pyproject's range)."
}

variable "torch_index_url" {
  type    = string
  default = "https://download.pytorch.org/whl/cu124"
}

locals {
  build_time = formatdate("YYYYMMDD-hhmmss", timestamp())
  # "he=ivrit-ai/whisper-large-v3-turbo-ct2,*=mobiuslabsgmbh/faster-whisper-large-v3-turbo"
  models_spec = join(",", [for language, model in var.models : "${language}=${model}"])
}

source "amazon-ebs" "gpu_worker" {
  region          = var.region
  instance_type   = var.instance_type
  subnet_id       = var.subnet_id
  ssh_username    = "ubuntu"
  ami_name        = "transcription-worker-${local.build_time}"
  ami_description = "Scale-to-zero transcription GPU worker (faster-whisper, CUDA)"
  encrypt_boot    = true

  source_ami_filter {
    filters = {
      name                = var.source_ami_name
      architecture        = "x86_64"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = var.volume_size_gib
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 125
    delete_on_termination = true
  }


  # IMDSv2-only is enforced where it matters, on the workers (the stack's launch template);
  # the short-lived build instance keeps the default so Packer 1.6 can validate this file.
  tags = {
    Name    = "transcription-worker-${local.build_time}"
    project = "transcription-pipeline"
  }
}

build {
  sources = ["source.amazon-ebs.gpu_worker"]

  # The worker's source as committed (git archive: no virtualenvs, caches or local edits).
  provisioner "shell-local" {
    inline = [
      "mkdir -p '${path.root}/build'",
      "git -C '${path.root}/..' archive --format=tar.gz -o '${path.root}/build/worker-src.tar.gz' HEAD pyproject.toml README.md pipeline_core gpu_worker",
    ]
  }

  provisioner "file" {
    source      = "${path.root}/build/worker-src.tar.gz"
    destination = "/tmp/worker-src.tar.gz"
    generated   = true # made by the shell-local step above, not there at validate time
  }

  provisioner "file" {
    source      = "${path.root}/files/transcription-worker-ami.conf"
    destination = "/tmp/transcription-worker-ami.conf"
  }

  # The worker's log lines -> the stack's log group (its name is filled in by the user data).
  provisioner "file" {
    source      = "${path.root}/files/amazon-cloudwatch-agent.json"
    destination = "/tmp/amazon-cloudwatch-agent.json"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo -E env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "TORCH_VERSION=${var.torch_version}",
      "TORCH_INDEX_URL=${var.torch_index_url}",
    ]
    script = "${path.root}/scripts/install-worker.sh"
  }

  provisioner "shell" {
    execute_command  = "chmod +x {{ .Path }}; sudo -E env {{ .Vars }} {{ .Path }}"
    environment_vars = ["MODELS=${local.models_spec}"]
    script           = "${path.root}/scripts/bake-models.sh"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo -E env {{ .Vars }} {{ .Path }}"
    script          = "${path.root}/scripts/smoke-test.sh"
  }
}
