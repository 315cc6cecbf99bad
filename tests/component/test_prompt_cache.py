"""Bedrock prompt caching through the LLM Caller's corrector and the Converse-protocol server:
a ``cachePoint`` after what every chunk shares, only for models that cache, and the cache
reads and writes the server reports summed per transcript."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from support.fake_llm import FakeModel, cached_prefix, running_model, tokens

from bench.correction import MemoryCheckpoints
from chalicelib.correction.correctors import BedrockCorrector
from chalicelib.correction.prompt import PromptContext
from chalicelib.correction.prompt_cache import min_cacheable_tokens
from chalicelib.correction.transcript import (
    CorrectionParams,
    CorrectionReport,
    Deadline,
    correct_transcript,
)
from pipeline_core.timed_text import parse

CACHING_MODEL = "us.anthropic.claude-sonnet-4-6"
UNCACHED_MODEL = "us.anthropic.claude-sonnet-5"  # not in the table: no cachePoint is sent
# A glossary long enough to put the shared prefix over Sonnet 4.6's minimum.
LONG_GLOSSARY = "\n".join(f"term{i} => Term{i} (a tractate's name spelled out)" for i in range(300))


@pytest.fixture
def model() -> Iterator[FakeModel]:
    with running_model() as fake:
        fake.script.replacements = {"on the camera": "Bava Kamma"}
        yield fake


def corrected(model: FakeModel, model_id: str, glossary: str, lines: int = 12) -> CorrectionReport:
    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=model.url,
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip
    text = "".join(
        f"[00:00:{i:02d}.000 --> 00:00:{i + 1:02d}.000] line {i} of the lecture on the camera\n"
        for i in range(lines)
    )
    return correct_transcript(
        parse(text),
        corrector=BedrockCorrector(client, model_id, 4096),
        context=PromptContext("en", "Bava Kamma 2a", glossary),
        checkpoints=MemoryCheckpoints(),
        deadline=Deadline(None),
        # One call at a time: which call is first (and writes the cache) is then known.
        params=CorrectionParams(chunk_max_chars=200, calls_in_flight=1, min_similarity=0.5),
    )


def test_the_shared_prefix_is_written_once_then_read(model: FakeModel) -> None:
    report = corrected(model, CACHING_MODEL, LONG_GLOSSARY)
    calls = model.converse_calls()
    assert len(calls) == report.model_calls > 2
    prefixes = {cached_prefix(call.body) for call in calls}
    [prefix] = prefixes  # every chunk shares it: tools, system, description, glossary
    assert prefix is not None
    assert "term299 => Term299" in prefix
    minimum = min_cacheable_tokens(CACHING_MODEL)
    assert minimum is not None
    assert tokens(prefix) >= minimum
    assert report.cache_write_tokens == tokens(prefix)
    assert report.cache_read_tokens == tokens(prefix) * (len(calls) - 1)
    assert report.lines_changed == 12  # caching changes nothing of the answers


def test_a_prefix_below_the_models_minimum_is_not_cached(model: FakeModel) -> None:
    report = corrected(model, CACHING_MODEL, glossary="")
    calls = model.converse_calls()
    assert all(cached_prefix(call.body) is not None for call in calls)  # asked for ...
    assert report.cache_write_tokens == report.cache_read_tokens == 0  # ... but too short
    assert report.input_tokens > 0


def test_a_model_without_prompt_caching_gets_no_cache_point(model: FakeModel) -> None:
    report = corrected(model, UNCACHED_MODEL, LONG_GLOSSARY)
    calls = model.converse_calls()
    assert calls
    assert all(cached_prefix(call.body) is None for call in calls)
    assert report.cache_write_tokens == report.cache_read_tokens == 0
    assert report.lines_changed == 12


@pytest.mark.parametrize(
    ("model_id", "minimum"),
    [
        ("us.anthropic.claude-sonnet-4-6", 2048),
        ("global.anthropic.claude-sonnet-4-6", 2048),
        ("anthropic.claude-haiku-4-5-20251001-v1:0", 4096),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", 1024),
        ("anthropic.claude-sonnet-4-20250514-v1:0", 1024),
        ("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-7-sonnet-20250219-v1:0",
         1024),
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", None),
        ("meta.llama3-70b-instruct-v1:0", None),
    ],
)  # fmt: skip
def test_the_cacheable_models_table(model_id: str, minimum: int | None) -> None:
    assert min_cacheable_tokens(model_id) == minimum
