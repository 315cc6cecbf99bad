"""Configuration of every runtime, read from environment variables.

One settings class per runtime, each read at start-up by ``from_env``; a missing or
malformed variable stops the program at once with a message that names the variable.
The environment variable names are part of the deployment contract: the CloudFormation
user data, ``.chalice/config.json`` and the local mode all write these names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pipeline_core.glossary import UnknownGlossaryError, check_name
from pipeline_core.languages import UnknownLanguageError, normalize_language
from pipeline_core.speakers import SpeakersRequestError, normalize_speakers

ENV_BUCKET: Final = "PIPELINE_BUCKET"
ENV_JOB_TABLE: Final = "JOB_TABLE"
ENV_AUDIO_QUEUE_URL: Final = "AUDIO_QUEUE_URL"
ENV_LLM_QUEUE_URL: Final = "LLM_QUEUE_URL"
ENV_RESULTS_QUEUE_URL: Final = "RESULTS_QUEUE_URL"
ENV_ASG_NAME: Final = "GPU_ASG_NAME"
# The stack's notification topic: every Result sent is also published there (optional).
ENV_NOTIFICATION_TOPIC_ARN: Final = "NOTIFICATION_TOPIC_ARN"
ENV_LOG_LEVEL: Final = "LOG_LEVEL"
ENV_DISPATCHER_DLQ_URL: Final = "DISPATCHER_DLQ_URL"
ENV_IMDS_ENDPOINT: Final = "IMDS_ENDPOINT"
ENV_INSTANCE_ID: Final = "WORKER_INSTANCE_ID"


class ConfigError(RuntimeError):
    """A configuration variable that is missing or does not parse."""


_TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})


class Env:
    """Typed reads of environment variables; every error names the variable."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def required(self, name: str) -> str:
        value = self._raw(name)
        if value is None:
            raise ConfigError(f"environment variable {name} is required but not set")
        return value

    def text(self, name: str, default: str) -> str:
        value = self._raw(name)
        return default if value is None else value

    def optional(self, name: str) -> str | None:
        return self._raw(name)

    def glossary_name(self, name: str) -> str | None:
        """A shipped glossary's name (or ``none``), checked now rather than at the first job."""
        value = self._raw(name)
        try:
            return None if value is None else check_name(value)
        except UnknownGlossaryError as exc:
            raise ConfigError(f"environment variable {name}: {exc}") from None

    def integer(self, name: str, default: int, minimum: int | None = None) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None
        if minimum is not None and number < minimum:
            raise ConfigError(f"environment variable {name}={number} is below {minimum}")
        return number

    def integer_or_auto(self, name: str, minimum: int | None = None) -> int | None:
        """An integer, or None for ``auto`` (and when unset): the program works it out."""
        value = self._raw(name)
        if value is None or value.strip().lower() == "auto":
            return None
        try:
            return self.integer(name, 0, minimum)
        except ConfigError:
            raise ConfigError(
                f"environment variable {name}={value!r} is neither an integer of at least "
                f"{minimum} nor 'auto'"
            ) from None

    def number(self, name: str, default: float, minimum: float | None = None) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"environment variable {name}={value!r} is not a number") from None
        if minimum is not None and number < minimum:
            raise ConfigError(f"environment variable {name}={number} is below {minimum}")
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE_WORDS:
            return True
        if lowered in _FALSE_WORDS:
            return False
        raise ConfigError(f"environment variable {name}={value!r} is not a boolean (true/false)")

    def flag_or_languages(self, name: str, default: bool) -> tuple[bool, frozenset[str] | None]:
        """true or false for every language, or a comma-separated list of the languages (names
        or Whisper codes) it is on for: (on, None) or (True, their Whisper codes). A lone
        ``no`` is false: Norwegian alone is ``norwegian``."""
        value = self._raw(name)
        if value is None:
            return default, None
        lowered = value.strip().lower()
        if lowered in _TRUE_WORDS or lowered in _FALSE_WORDS:
            return lowered in _TRUE_WORDS, None
        try:
            codes = frozenset(normalize_language(v) for v in value.split(",") if v.strip())
        except UnknownLanguageError as exc:
            raise ConfigError(
                f"environment variable {name}={value!r} is neither true/false nor a list of "
                f"languages: {exc}"
            ) from None
        if not codes:
            raise ConfigError(f"environment variable {name}={value!r} names no language")
        return True, codes

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise ConfigError(
                f"environment variable {name}={value!r} is not one of {', '.join(choices)}"
            )
        return value

    def mapping(self, name: str) -> dict[str, str]:
        """``key=value,key=value`` -> dict (e.g. a per-language model map)."""
        value = self._raw(name)
        if value is None:
            return {}
        pairs: dict[str, str] = {}
        for item in value.split(","):
            key, sep, val = item.partition("=")
            if not sep or not key.strip() or not val.strip():
                raise ConfigError(
                    f"environment variable {name}: {item!r} is not key=value "
                    f"(expected e.g. he=/opt/models/ivrit,*=/opt/models/turbo)"
                )
            pairs[key.strip()] = val.strip()
        return pairs


@dataclass(frozen=True)
class DispatcherSettings:
    bucket: str
    job_table: str
    audio_queue_url: str
    results_queue_url: str
    asg_name: str
    default_language: str | None
    log_level: str
    # A job left in "queued" without its Audio Queue message (the Lambda died between the
    # job-table put and the send) is re-sent by a later delivery once its claim is this old;
    # the Dispatcher's function timeout, so a live first attempt is never raced.
    enqueue_lease_seconds: int = 60
    notification_topic_arn: str | None = None  # None: refusals go to the Results Queue only
    # The glossary of a recording that names none and whose details mention none
    # (pipeline_core/glossary.py); None: no glossary.
    default_glossary: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DispatcherSettings:
        env = Env(environ)
        return cls(
            bucket=env.required(ENV_BUCKET),
            job_table=env.required(ENV_JOB_TABLE),
            audio_queue_url=env.required(ENV_AUDIO_QUEUE_URL),
            results_queue_url=env.required(ENV_RESULTS_QUEUE_URL),
            asg_name=env.required(ENV_ASG_NAME),
            default_language=env.optional("DEFAULT_LANGUAGE"),
            log_level=env.text(ENV_LOG_LEVEL, "INFO"),
            enqueue_lease_seconds=env.integer("ENQUEUE_LEASE_SECONDS", 60, minimum=0),
            notification_topic_arn=env.optional(ENV_NOTIFICATION_TOPIC_ARN),
            default_glossary=env.glossary_name("DEFAULT_GLOSSARY"),
        )


@dataclass(frozen=True)
class ReconcilerSettings:
    """The reconciler dispatches again what the Dispatcher did not finish, with its settings."""

    dispatcher: DispatcherSettings
    dispatcher_dlq_url: str  # the Dispatcher's on-failure destination
    # Uploads younger than this are left to Lambda, which may still deliver their S3 event.
    grace_seconds: int = 3600
    # On-failure records handled per run (the rest wait for the next run).
    max_records: int = 500

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReconcilerSettings:
        env = Env(environ)
        return cls(
            dispatcher=DispatcherSettings.from_env(environ),
            dispatcher_dlq_url=env.required(ENV_DISPATCHER_DLQ_URL),
            grace_seconds=env.integer("RECONCILE_GRACE_SECONDS", 3600, minimum=0),
            max_records=env.integer("RECONCILE_MAX_RECORDS", 500, minimum=1),
        )


LLM_CORRECTORS: Final = ("bedrock", "openai", "none")
# How the model answers: a list of edits through a forced tool call (the default: unchanged
# lines cost no output tokens), or every line echoed back corrected (kept to compare costs).
CORRECTION_FORMATS: Final = ("edits", "echo")
# Model calls one LLM Caller invocation has in flight at most (docs/design.md, "Load on the
# model": with 3 invocations at once, 6 calls, within a new account's Bedrock token quota).
MODEL_CALLS_IN_FLIGHT: Final = 2
# Read-only lines shown on each side of a chunk: a sentence cut by the chunk's edge reads whole.
CONTEXT_LINES: Final = 2
# A word Whisper gives less probability than this is marked for the corrector as a likely
# mishearing (bench/results: the share of words marked on the evaluation clips).
LOW_CONFIDENCE_PROBABILITY: Final = 0.5
# Whether the worker primes Whisper with the recording's glossary terms (WORKER_GLOSSARY_HOTWORDS):
# off, as measured (bench/results, "hotwords"): on speech that does not say the terms Whisper
# writes them into the text (Whisper base: Hebrew WER 22% -> 128%, English 7.5% -> 13%).
GLOSSARY_HOTWORDS: Final = False

# The correction model: Claude Sonnet 4.6 through the cross-region inference profile of the
# deployment's geography (docs/design.md, "The correction model": the choice and its prices).
BEDROCK_BASE_MODEL: Final = "anthropic.claude-sonnet-4-6"
# Region prefix -> the geography of the profile. Sonnet 4.6 has us., eu., jp. and global.
# profiles; a region of another geography uses global. (requests may leave the geography).
_PROFILE_GEOGRAPHIES: Final = (
    ("us-gov-", "global."),  # no geography profile there: preflight says whether global works
    ("us-", "us."),
    ("eu-", "eu."),
    ("ap-northeast-1", "jp."),
    ("ap-northeast-3", "jp."),
)


# Cross-region inference profile ids start with their geography (``us.anthropic...``).
INFERENCE_PROFILE_PREFIXES: Final = (
    "us.", "eu.", "apac.", "us-gov.", "ca.", "jp.", "au.", "global."
)  # fmt: skip


def foundation_model_id(model_id: str) -> str:
    """The model behind an inference profile id: ``us.anthropic.x`` -> ``anthropic.x``
    (any other id as it is)."""
    if model_id.startswith(INFERENCE_PROFILE_PREFIXES):
        return model_id.split(".", 1)[1]
    return model_id


def default_bedrock_model_id(region: str) -> str:
    """The inference profile id of ``BEDROCK_BASE_MODEL`` for a deployment in ``region``."""
    prefix = next((geo for start, geo in _PROFILE_GEOGRAPHIES if region.startswith(start)), None)
    return f"{prefix or 'global.'}{BEDROCK_BASE_MODEL}"


@dataclass(frozen=True)
class LlmCallerSettings:
    bucket: str
    job_table: str
    results_queue_url: str
    corrector: str
    bedrock_model_id: str
    openai_base_url: str | None
    openai_model: str
    glossary_key: str | None
    log_level: str
    # The LLM Queue itself: a long transcript that needs more than one invocation continues
    # in a fresh message, and a throttled one comes back after retry_delay_seconds.
    llm_queue_url: str | None = None
    bedrock_endpoint_url: str | None = None  # a VPC endpoint, or a local server in tests
    retry_mode: str = "adaptive"  # botocore's retry mode for Bedrock
    max_attempts: int = 6  # per model call, first try included (Bedrock and OpenAI-compatible)
    read_timeout_seconds: int = 180  # one model call
    max_output_tokens: int = 4096  # the model's output limit; chunks are sized to fit in it
    chunk_max_chars: int = 3000  # transcript characters per model call
    # Model calls in flight in one invocation, at most; x the LLM Caller's reserved
    # concurrency = the peak on the model (docs/design.md, "Load on the model").
    model_calls_in_flight: int = MODEL_CALLS_IN_FLIGHT
    min_line_similarity: float = 0.5  # a corrected line this unlike its original is refused
    correction_format: str = "edits"  # one of CORRECTION_FORMATS
    context_lines: int = CONTEXT_LINES
    # Words the recogniser gave a probability under this are marked for the model as the
    # likely mistakes (0: none marked).
    low_confidence_probability: float = LOW_CONFIDENCE_PROBABILITY
    time_reserve_seconds: int = 240  # no new model call when less is left of the invocation
    max_passes: int = 8  # invocations one transcript may take before it is failed
    retry_delay_seconds: int = 300  # how soon a throttled message is received again
    lease_seconds: int = 960  # a crashed invocation's hold on its job lapses after this
    max_receives: int = 3  # the LLM Queue's maxReceiveCount: the last try before its DLQ
    openai_api_key: str | None = None
    notification_topic_arn: str | None = None  # None: Results go to the Results Queue only

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LlmCallerSettings:
        env = Env(environ)
        corrector = env.choice("CORRECTOR", "bedrock", LLM_CORRECTORS)
        return cls(
            bucket=env.required(ENV_BUCKET),
            job_table=env.required(ENV_JOB_TABLE),
            results_queue_url=env.required(ENV_RESULTS_QUEUE_URL),
            corrector=corrector,
            bedrock_model_id=env.text(
                "BEDROCK_MODEL_ID", default_bedrock_model_id(env.text("AWS_REGION", "us-east-1"))
            ),
            openai_base_url=(env.required("OPENAI_BASE_URL") if corrector == "openai" else None),
            openai_model=env.text("OPENAI_MODEL", "local-model"),
            glossary_key=env.optional("GLOSSARY_KEY"),
            log_level=env.text(ENV_LOG_LEVEL, "INFO"),
            llm_queue_url=env.optional(ENV_LLM_QUEUE_URL),
            bedrock_endpoint_url=env.optional("BEDROCK_ENDPOINT_URL"),
            retry_mode=env.choice("LLM_RETRY_MODE", "adaptive", ("standard", "adaptive")),
            max_attempts=env.integer("LLM_MAX_ATTEMPTS", 6, minimum=1),
            read_timeout_seconds=env.integer("LLM_READ_TIMEOUT_SECONDS", 180, minimum=1),
            max_output_tokens=env.integer("MAX_OUTPUT_TOKENS", 4096, minimum=256),
            chunk_max_chars=env.integer("CHUNK_MAX_CHARS", 3000, minimum=200),
            model_calls_in_flight=env.integer(
                "MODEL_CALLS_IN_FLIGHT", MODEL_CALLS_IN_FLIGHT, minimum=1
            ),
            min_line_similarity=env.number("MIN_LINE_SIMILARITY", 0.5, minimum=0.0),
            correction_format=env.choice("CORRECTION_FORMAT", "edits", CORRECTION_FORMATS),
            context_lines=env.integer("CONTEXT_LINES", CONTEXT_LINES, minimum=0),
            low_confidence_probability=env.number(
                "LOW_CONFIDENCE_PROBABILITY", LOW_CONFIDENCE_PROBABILITY, minimum=0.0
            ),
            time_reserve_seconds=env.integer("TIME_RESERVE_SECONDS", 240, minimum=0),
            max_passes=env.integer("MAX_CORRECTION_PASSES", 8, minimum=1),
            retry_delay_seconds=env.integer("RETRY_DELAY_SECONDS", 300, minimum=0),
            lease_seconds=env.integer("CORRECTION_LEASE_SECONDS", 960, minimum=1),
            max_receives=env.integer("MAX_RECEIVES", 3, minimum=1),
            openai_api_key=env.optional("OPENAI_API_KEY"),
            notification_topic_arn=env.optional(ENV_NOTIFICATION_TOPIC_ARN),
        )


ASR_ENGINES: Final = ("faster-whisper", "transformers")


@dataclass(frozen=True)
class WorkerSettings:
    bucket: str
    job_table: str
    audio_queue_url: str
    llm_queue_url: str
    results_queue_url: str
    asg_name: str | None  # None: never terminate the instance (local runs, tests)
    engine: str
    # Whisper language code (or "*" for the rest) -> local model directory.
    models: Mapping[str, str]
    device: str
    poll_wait_seconds: int
    visibility_timeout_seconds: int
    heartbeat_seconds: int
    idle_shutdown_seconds: int
    imds_endpoint: str | None  # None: not on EC2, no Spot interruption watch
    log_level: str
    # How long a message the worker could not finish (malformed, transient error) stays
    # hidden before its next delivery; short, so that bad messages reach the DLQ soon.
    retry_delay_seconds: int = 10
    # The Audio Queue's maxReceiveCount: on that delivery a job that still fails is failed
    # with its reason (a Result the user reads) rather than left to reach the DLQ unseen.
    max_receives: int = 3
    # After a configuration error (a missing IAM grant) the worker takes no message for this
    # long: the next job would fail the same way, and the queue keeps it for after the fix.
    misconfiguration_pause_seconds: int = 300
    spot_poll_seconds: float = 5.0
    progress_log_seconds: float = 30.0
    # Decoding: beams per search, and 30 s chunks decoded together (transformers engine;
    # faster-whisper too with batched_inference, on audio longer than one window); None:
    # from the device's free memory once the model is loaded.
    beam_size: int = 5
    batch_size: int | None = None
    batched_inference: bool = False
    batched_languages: frozenset[str] | None = None  # with batched_inference: only these
    # One job ahead and one behind (gpu_worker/delivery/prefetch.py): the next message is
    # prepared and the last job handed off while the engine transcribes.
    prefetch: bool = True
    # The recording's glossary terms as Whisper's hotwords (faster-whisper); the default
    # follows bench/results (the "hotwords" part: WER with and without them).
    glossary_hotwords: bool = GLOSSARY_HOTWORDS
    # Fault injection for the reliability tests: log and sleep after this named step.
    pause_after_step: str | None = None
    # The own instance id where there is no IMDS to ask (local mode's stand-in instances).
    instance_id: str | None = None
    notification_topic_arn: str | None = None  # None: failure Results go to the queue only
    # Speaker labels for recordings that do not say ("auto", a number; None: off), and the
    # diarizer that makes them ("resemblyzer" or "module:factory": gpu_worker.speakers).
    default_speakers: str | None = None
    diarizer: str = "resemblyzer"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        env = Env(environ)
        models = env.mapping("WORKER_MODELS")
        if "*" not in models:
            raise ConfigError(
                "environment variable WORKER_MODELS needs a default entry '*=<model dir>'"
            )
        batched, batched_languages = env.flag_or_languages("WORKER_BATCHED_INFERENCE", False)
        settings = cls(
            bucket=env.required(ENV_BUCKET),
            job_table=env.required(ENV_JOB_TABLE),
            audio_queue_url=env.required(ENV_AUDIO_QUEUE_URL),
            llm_queue_url=env.required(ENV_LLM_QUEUE_URL),
            results_queue_url=env.required(ENV_RESULTS_QUEUE_URL),
            asg_name=env.optional(ENV_ASG_NAME),
            engine=env.choice("WORKER_ENGINE", "faster-whisper", ASR_ENGINES),
            models=models,
            device=env.choice("WORKER_DEVICE", "auto", ("auto", "cuda", "cpu")),
            poll_wait_seconds=env.integer("POLL_WAIT_SECONDS", 20, minimum=0),
            # The floor only keeps a heartbeat inside the timeout; the tests use a few seconds.
            visibility_timeout_seconds=env.integer("VISIBILITY_TIMEOUT_SECONDS", 600, minimum=6),
            heartbeat_seconds=env.integer("HEARTBEAT_SECONDS", 120, minimum=1),
            idle_shutdown_seconds=env.integer("IDLE_SHUTDOWN_SECONDS", 300, minimum=0),
            imds_endpoint=env.optional(ENV_IMDS_ENDPOINT),
            log_level=env.text(ENV_LOG_LEVEL, "INFO"),
            retry_delay_seconds=env.integer("RETRY_DELAY_SECONDS", 10, minimum=0),
            max_receives=env.integer("MAX_RECEIVES", 3, minimum=1),
            misconfiguration_pause_seconds=env.integer(
                "MISCONFIGURATION_PAUSE_SECONDS", 300, minimum=0
            ),
            spot_poll_seconds=env.number("SPOT_POLL_SECONDS", 5.0, minimum=0.1),
            progress_log_seconds=env.number("PROGRESS_LOG_SECONDS", 30.0, minimum=0),
            beam_size=env.integer("WORKER_BEAM_SIZE", 5, minimum=1),
            batch_size=env.integer_or_auto("WORKER_BATCH_SIZE", minimum=1),
            batched_inference=batched,
            batched_languages=batched_languages,
            prefetch=env.flag("WORKER_PREFETCH", True),
            glossary_hotwords=env.flag("WORKER_GLOSSARY_HOTWORDS", GLOSSARY_HOTWORDS),
            pause_after_step=env.optional("WORKER_PAUSE_AFTER_STEP"),
            instance_id=env.optional(ENV_INSTANCE_ID),
            notification_topic_arn=env.optional(ENV_NOTIFICATION_TOPIC_ARN),
            default_speakers=_speakers_setting(env.optional("DEFAULT_SPEAKERS")),
            diarizer=env.text("WORKER_DIARIZER", "resemblyzer"),
        )
        if settings.heartbeat_seconds >= settings.visibility_timeout_seconds:
            raise ConfigError(
                f"environment variable HEARTBEAT_SECONDS={settings.heartbeat_seconds} must be "
                f"below VISIBILITY_TIMEOUT_SECONDS={settings.visibility_timeout_seconds}"
            )
        return settings


def _speakers_setting(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalize_speakers(value)
    except SpeakersRequestError as exc:
        raise ConfigError(f"environment variable DEFAULT_SPEAKERS: {exc}") from None
