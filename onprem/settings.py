"""The on-prem client's settings: a TOML file, then environment variables, then flags.

Kept here rather than in ``pipeline_core/config.py`` because only this runtime has the file and
flag layers (a cron job on a workstation, not a Lambda or a daemon configured by user data);
the variable names the cloud side also uses (``PIPELINE_BUCKET``, ``RESULTS_QUEUE_URL``,
``JOB_TABLE``, ...) come from ``pipeline_core.config`` and are read with its ``Env``, so they
stay one contract. AWS credentials are never read or stored here: boto3's standard chain
(profile, environment, SSO, instance role) supplies them; ``profile`` only names one.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final, Literal

from pipeline_core import config as core
from pipeline_core.config import ConfigError, Env
from pipeline_core.keys import AUDIO_SUFFIXES, OutputFormat

ENV_CONFIG: Final = "ONPREM_CONFIG"
CONFIG_NAME: Final = "transcribe-onprem.toml"
DEFAULT_PATTERNS: Final = tuple(f"*{suffix}" for suffix in AUDIO_SUFFIXES)
# What the poller brings home unless told otherwise: the text, subtitles of it, and the reader
# page to check it against the recording (built here: no AWS call, no grant, a few kB).
DEFAULT_FORMATS: Final = (OutputFormat.TXT, OutputFormat.SRT, OutputFormat.HTML)

_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

Kind = Literal["str", "path", "int", "float", "patterns", "formats"]


@dataclass(frozen=True)
class _Spec:
    env: str
    kind: Kind
    minimum: float | None = None


# Config-file key (= dataclass field) -> environment variable and type.
_SPECS: Final[dict[str, _Spec]] = {
    "bucket": _Spec(core.ENV_BUCKET, "str"),
    "results_queue_url": _Spec(core.ENV_RESULTS_QUEUE_URL, "str"),
    "job_table": _Spec(core.ENV_JOB_TABLE, "str"),
    "audio_queue_url": _Spec(core.ENV_AUDIO_QUEUE_URL, "str"),
    "llm_queue_url": _Spec(core.ENV_LLM_QUEUE_URL, "str"),
    "audio_dlq_url": _Spec("AUDIO_DLQ_URL", "str"),
    "llm_dlq_url": _Spec("LLM_DLQ_URL", "str"),
    "results_dlq_url": _Spec("RESULTS_DLQ_URL", "str"),
    "dispatcher_dlq_url": _Spec(core.ENV_DISPATCHER_DLQ_URL, "str"),
    "input_dir": _Spec("ONPREM_INPUT_DIR", "path"),
    "output_dir": _Spec("ONPREM_OUTPUT_DIR", "path"),
    "state_file": _Spec("ONPREM_STATE_FILE", "path"),
    "language": _Spec("ONPREM_LANGUAGE", "str"),
    "patterns": _Spec("ONPREM_PATTERNS", "patterns"),
    "min_age_seconds": _Spec("ONPREM_MIN_AGE_SECONDS", "float", 0),
    "multipart_threshold_mb": _Spec("ONPREM_MULTIPART_THRESHOLD_MB", "int", 5),
    "multipart_chunksize_mb": _Spec("ONPREM_MULTIPART_CHUNKSIZE_MB", "int", 5),
    "max_concurrency": _Spec("ONPREM_MAX_CONCURRENCY", "int", 1),
    "max_attempts": _Spec("ONPREM_MAX_ATTEMPTS", "int", 1),
    "poll_wait_seconds": _Spec("ONPREM_POLL_WAIT_SECONDS", "int", 0),
    "formats": _Spec("ONPREM_FORMATS", "formats"),
    "region": _Spec("AWS_REGION", "str"),
    "profile": _Spec("AWS_PROFILE", "str"),
    "log_level": _Spec(core.ENV_LOG_LEVEL, "str"),
}

# Where each setting can be given, for error messages that tell the user how to fix them.
FLAGS: Final[dict[str, str]] = {
    "bucket": "--bucket",
    "results_queue_url": "--queue-url",
    "job_table": "--job-table",
    "input_dir": "the FOLDER argument",
    "output_dir": "--output-dir",
    "state_file": "--state-file",
}


def _state_home() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")


def default_config_path() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / CONFIG_NAME


@dataclass(frozen=True)
class OnpremSettings:
    bucket: str | None = None
    results_queue_url: str | None = None
    job_table: str | None = None
    # Source queues of the DLQs, for redrive; found with ListDeadLetterSourceQueues if unset.
    audio_queue_url: str | None = None
    llm_queue_url: str | None = None
    audio_dlq_url: str | None = None
    llm_dlq_url: str | None = None
    results_dlq_url: str | None = None
    # The Dispatcher's on-failure destination, where `status --reconcile` asks the reconciler.
    dispatcher_dlq_url: str | None = None
    input_dir: Path | None = None
    output_dir: Path | None = None
    state_file: Path | None = None
    # Run-wide default language; sidecars and folder defaults override it.
    language: str | None = None
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    # Files modified more recently than this may still be being copied in; skipped this run.
    min_age_seconds: float = 30.0
    multipart_threshold_mb: int = 16
    multipart_chunksize_mb: int = 16
    max_concurrency: int = 4
    max_attempts: int = 8
    poll_wait_seconds: int = 20
    # The deliverables the poller brings home for each transcript.
    formats: tuple[OutputFormat, ...] = DEFAULT_FORMATS
    region: str | None = None
    profile: str | None = None
    log_level: str = "INFO"
    config_path: Path | None = None

    @property
    def state_path(self) -> Path:
        return self.state_file or _state_home() / "transcribe-onprem" / "uploads.sqlite3"

    def need(self, name: str) -> Any:
        """The value of a setting this command cannot run without; else a ConfigError."""
        value = getattr(self, name)
        if value is None:
            where = [f"'{name}' in {self.config_path or default_config_path()}"]
            where.append(f"the environment variable {_SPECS[name].env}")
            if name in FLAGS:
                where.append(FLAGS[name])
            raise ConfigError(f"{name} is not set: give it as {', '.join(where)}")
        return value


def parse_formats(names: str | list[str] | tuple[str, ...]) -> tuple[OutputFormat, ...]:
    """``"txt,srt"`` or ``["txt", "srt"]`` -> the formats, in order, each once."""
    items = names.split(",") if isinstance(names, str) else list(names)
    wanted = [item.strip().lower().removeprefix(".") for item in items if item.strip()]
    known = {output.value: output for output in OutputFormat}
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        what = f"unknown format {', '.join(map(repr, unknown))}" if unknown else "no format"
        raise ConfigError(f"{what}; the formats are {', '.join(known)}")
    return tuple(dict.fromkeys(known[name] for name in wanted))


def formats_flag(value: str) -> tuple[OutputFormat, ...]:
    """``parse_formats`` as an argparse type: a bad list is a usage error naming the formats."""
    try:
        return parse_formats(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        spec = _SPECS.get(key)
        if spec is None:
            known = ", ".join(sorted(_SPECS))
            raise ConfigError(f"config file {path}: unknown setting {key!r} (known: {known})")
        values[key] = _check_file_value(path, key, spec, value)
    return values


def _check_file_value(path: Path, key: str, spec: _Spec, value: object) -> object:
    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"config file {path}: {key!r} must be {expected}, not {value!r}")

    if spec.kind in ("str", "path"):
        if not isinstance(value, str) or not value.strip():
            raise wrong("a non-empty string")
        return Path(value).expanduser() if spec.kind == "path" else value.strip()
    if spec.kind == "patterns":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise wrong('a list of glob patterns such as ["*.mp3", "*.wav"]')
        return tuple(value)
    if spec.kind == "formats":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong('a list of formats such as ["txt", "srt", "docx"]')
        try:
            return parse_formats(value)
        except ConfigError as exc:
            raise ConfigError(f"config file {path}: {key!r}: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong("a number")
    if spec.kind == "int" and not isinstance(value, int):
        raise wrong("an integer")
    if spec.minimum is not None and value < spec.minimum:
        raise wrong(f"at least {spec.minimum:g}")
    return value


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    env = Env(environ)
    values: dict[str, Any] = {}
    for key, spec in _SPECS.items():
        raw = env.optional(spec.env)
        if raw is None:
            continue
        if spec.kind == "str":
            values[key] = raw
        elif spec.kind == "path":
            values[key] = Path(raw).expanduser()
        elif spec.kind == "patterns":
            patterns = tuple(p.strip() for p in raw.split(",") if p.strip())
            if not patterns:
                raise ConfigError(f"environment variable {spec.env} names no glob pattern")
            values[key] = patterns
        elif spec.kind == "formats":
            try:
                values[key] = parse_formats(raw)
            except ConfigError as exc:
                raise ConfigError(f"environment variable {spec.env}: {exc}") from None
        elif spec.kind == "int":
            minimum = None if spec.minimum is None else int(spec.minimum)
            values[key] = env.integer(spec.env, 0, minimum=minimum)
        else:
            values[key] = env.number(spec.env, 0.0, minimum=spec.minimum)
    return values


def load_settings(
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> OnpremSettings:
    """Defaults < config file < environment < flags (``overrides``; None means "not given").

    The file is ``config``, else ``$ONPREM_CONFIG``, else ``~/.config/transcribe-onprem.toml``;
    only the last may be missing.
    """
    environ = os.environ if environ is None else environ
    explicit = config or (Path(environ[ENV_CONFIG]) if environ.get(ENV_CONFIG) else None)
    path = (explicit or default_config_path()).expanduser()
    if explicit is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    values: dict[str, Any] = _from_file(path) if path.is_file() else {}
    values.update(_from_env(environ))
    known = {f.name for f in fields(OnpremSettings)}
    for key, value in (overrides or {}).items():
        if key not in known:
            raise ValueError(f"unknown setting {key!r}")
        if value is None:
            continue
        spec = _SPECS.get(key)
        if spec is not None and spec.minimum is not None and value < spec.minimum:
            raise ConfigError(f"{key.replace('_', '-')} must be at least {spec.minimum:g}")
        values[key] = value
    values["config_path"] = path if path.is_file() else None
    settings = OnpremSettings(**values)
    if settings.log_level.upper() not in _LOG_LEVELS:
        raise ConfigError(
            f"log level {settings.log_level!r} is not one of {', '.join(_LOG_LEVELS)}"
        )
    if not settings.patterns:
        raise ConfigError("no file pattern to scan for")
    return settings
