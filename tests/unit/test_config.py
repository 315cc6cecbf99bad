from __future__ import annotations

import pytest

from pipeline_core.config import ConfigError, DispatcherSettings, Env, WorkerSettings

WORKER_ENV = {
    "PIPELINE_BUCKET": "b",
    "JOB_TABLE": "t",
    "AUDIO_QUEUE_URL": "a",
    "LLM_QUEUE_URL": "l",
    "RESULTS_QUEUE_URL": "r",
    "WORKER_MODELS": "he=/m/ivrit,*=/m/turbo",
}


def test_missing_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="AUDIO_QUEUE_URL"):
        DispatcherSettings.from_env({"PIPELINE_BUCKET": "b", "JOB_TABLE": "t"})


def test_typed_defaults_and_overrides() -> None:
    settings = WorkerSettings.from_env(WORKER_ENV)
    assert settings.models == {"he": "/m/ivrit", "*": "/m/turbo"}
    assert settings.poll_wait_seconds == 20
    assert settings.engine == "faster-whisper"
    assert settings.asg_name is None
    tuned = WorkerSettings.from_env({**WORKER_ENV, "POLL_WAIT_SECONDS": "1", "GPU_ASG_NAME": "g"})
    assert tuned.poll_wait_seconds == 1
    assert tuned.asg_name == "g"
    assert (settings.beam_size, settings.batch_size) == (5, None)  # None: from the memory
    decoding = WorkerSettings.from_env(
        {**WORKER_ENV, "WORKER_BATCH_SIZE": "16", "WORKER_BATCHED_INFERENCE": "true"}
    )
    assert decoding.batch_size == 16
    assert WorkerSettings.from_env({**WORKER_ENV, "WORKER_BATCH_SIZE": "Auto"}).batch_size is None
    assert (decoding.batched_languages, settings.batched_languages) == (None, None)  # all
    some = WorkerSettings.from_env({**WORKER_ENV, "WORKER_BATCHED_INFERENCE": "en, German,es"})
    assert (some.batched_inference, some.batched_languages) == (True, frozenset({"en", "de", "es"}))
    lone_no = WorkerSettings.from_env({**WORKER_ENV, "WORKER_BATCHED_INFERENCE": "no"})
    assert (lone_no.batched_inference, lone_no.batched_languages) == (False, None)
    assert (settings.batched_inference, decoding.batched_inference) == (False, True)
    assert settings.misconfiguration_pause_seconds == 300
    paused = WorkerSettings.from_env({**WORKER_ENV, "MISCONFIGURATION_PAUSE_SECONDS": "60"})
    assert paused.misconfiguration_pause_seconds == 60


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"POLL_WAIT_SECONDS": "soon"}, "POLL_WAIT_SECONDS"),
        ({"WORKER_ENGINE": "whisper.cpp"}, "WORKER_ENGINE"),
        ({"WORKER_MODELS": "he=/m/ivrit"}, "WORKER_MODELS"),
        ({"WORKER_MODELS": "he"}, "WORKER_MODELS"),
        ({"VISIBILITY_TIMEOUT_SECONDS": "5"}, "VISIBILITY_TIMEOUT_SECONDS"),
        ({"WORKER_BATCH_SIZE": "0"}, "WORKER_BATCH_SIZE"),
        ({"WORKER_BATCH_SIZE": "lots"}, "WORKER_BATCH_SIZE='lots' is neither an integer"),
        ({"WORKER_BATCHED_INFERENCE": "en,klingon"}, "unknown language 'klingon'"),
        ({"WORKER_BATCHED_INFERENCE": " , "}, "WORKER_BATCHED_INFERENCE=',' names no language"),
    ],
)
def test_malformed_values_name_the_variable(extra: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        WorkerSettings.from_env({**WORKER_ENV, **extra})


def test_flags() -> None:
    env = Env({"A": "yes", "B": "0", "C": "maybe"})
    assert env.flag("A", False) is True
    assert env.flag("B", True) is False
    assert env.flag("D", True) is True
    with pytest.raises(ConfigError, match="C"):
        env.flag("C", False)


def test_the_default_glossary_must_be_a_shipped_one() -> None:
    dispatcher_env = {
        "PIPELINE_BUCKET": "b", "JOB_TABLE": "t", "AUDIO_QUEUE_URL": "a",
        "RESULTS_QUEUE_URL": "r", "GPU_ASG_NAME": "g",
    }  # fmt: skip
    assert DispatcherSettings.from_env(dispatcher_env).default_glossary is None
    chosen = DispatcherSettings.from_env({**dispatcher_env, "DEFAULT_GLOSSARY": "talmud"})
    assert chosen.default_glossary == "talmud"
    with pytest.raises(ConfigError, match="DEFAULT_GLOSSARY: unknown glossary 'talmus'"):
        DispatcherSettings.from_env({**dispatcher_env, "DEFAULT_GLOSSARY": "talmus"})
