"""Cost per audio hour from a measured real-time factor and an instance price.

An instance that works at RTF r (seconds of work per second of audio) spends r hours per
audio hour, so cost per audio hour = price per hour x r (the issue's "price / speed-up").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

TRANSCRIBE_USD_PER_MINUTE: Final = 0.024  # Amazon Transcribe standard batch, list price
TRANSCRIBE_USD_PER_AUDIO_HOUR: Final = TRANSCRIBE_USD_PER_MINUTE * 60


@dataclass(frozen=True)
class Price:
    instance: str
    usd_per_hour: float
    device: str  # the RTF this price applies to was measured on "cpu" or "cuda"


# Assumed Spot prices (USD per hour, us-east-1, they move daily): override with --price.
DEFAULT_PRICES: Final = (
    Price("c7i.large (2 vCPU) Spot, assumed", 0.045, "cpu"),
    Price("g4dn.xlarge (T4) Spot, assumed", 0.22, "cuda"),
    Price("g5.xlarge (A10G) Spot, assumed", 0.42, "cuda"),
)


def parse_price(text: str) -> Price:
    """``NAME=USD_PER_HOUR[:cpu|cuda]`` (device defaults to cuda)."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise ValueError(f"{text!r}: expected NAME=USD_PER_HOUR[:cpu|cuda]")
    value, _, device = rest.partition(":")
    device = device or "cuda"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"{text!r}: device must be cpu or cuda")
    return Price(name, float(value), device)


def cost_per_audio_hour(usd_per_hour: float, rtf: float) -> float:
    if rtf <= 0:
        raise ValueError("the real-time factor must be positive")
    return usd_per_hour * rtf


@dataclass(frozen=True)
class BatchCost:
    """One daily batch: the instance starts, works through the audio, idles, scales to zero."""

    audio_hours: float
    files: int
    startup_seconds: float  # boot, daemon start, model load: billed, no work done
    idle_tail_seconds: float  # the queue is empty; the worker waits this long, then leaves
    busy_usd: float
    overhead_usd: float  # start-up and idle tail, once per batch
    overhead_usd_per_file: float
    usd_per_audio_hour: float  # everything included


def daily_batch(
    usd_per_hour: float,
    rtf: float,
    *,
    audio_hours: float,
    files: int,
    startup_seconds: float,
    idle_tail_seconds: float,
) -> BatchCost:
    busy = cost_per_audio_hour(usd_per_hour, rtf) * audio_hours
    overhead = usd_per_hour * (startup_seconds + idle_tail_seconds) / 3600
    return BatchCost(
        audio_hours=audio_hours,
        files=files,
        startup_seconds=startup_seconds,
        idle_tail_seconds=idle_tail_seconds,
        busy_usd=busy,
        overhead_usd=overhead,
        overhead_usd_per_file=overhead / files if files else overhead,
        usd_per_audio_hour=(busy + overhead) / audio_hours,
    )


@dataclass(frozen=True)
class CostRow:
    system: str  # what ran: engine, model, compute type, or "Amazon Transcribe"
    instance: str
    usd_per_hour: float | None
    rtf: float | None
    rtf_source: str  # which measurement the RTF comes from
    usd_per_audio_hour: float
    daily_batch_usd_per_audio_hour: float
    overhead_usd_per_file: float
    idle_usd_per_hour: float  # scale to zero: no instance while the queue is empty
    vs_transcribe: float  # cost / Amazon Transcribe's


@dataclass(frozen=True)
class BatchAssumptions:
    audio_hours_per_day: float
    files_per_day: int
    startup_seconds: float
    idle_tail_seconds: float


def rows(
    measured: list[tuple[str, float, str, str]],
    prices: list[Price],
    batch: BatchAssumptions,
) -> list[CostRow]:
    """``measured``: (system, rtf, device, rtf source). Prices apply to RTFs of their device."""
    out = []
    for system, rtf, device, source in measured:
        for price in prices:
            if price.device != device:
                continue
            day = daily_batch(
                price.usd_per_hour,
                rtf,
                audio_hours=batch.audio_hours_per_day,
                files=batch.files_per_day,
                startup_seconds=batch.startup_seconds,
                idle_tail_seconds=batch.idle_tail_seconds,
            )
            per_hour = cost_per_audio_hour(price.usd_per_hour, rtf)
            out.append(
                CostRow(
                    system=system,
                    instance=price.instance,
                    usd_per_hour=price.usd_per_hour,
                    rtf=rtf,
                    rtf_source=source,
                    usd_per_audio_hour=round(per_hour, 4),
                    daily_batch_usd_per_audio_hour=round(day.usd_per_audio_hour, 4),
                    overhead_usd_per_file=round(day.overhead_usd_per_file, 5),
                    idle_usd_per_hour=0.0,
                    vs_transcribe=round(per_hour / TRANSCRIBE_USD_PER_AUDIO_HOUR, 4),
                )
            )
    out.append(
        CostRow(
            system="Amazon Transcribe (list price, $0.024/min)",
            instance="managed",
            usd_per_hour=None,
            rtf=None,
            rtf_source="n/a",
            usd_per_audio_hour=TRANSCRIBE_USD_PER_AUDIO_HOUR,
            daily_batch_usd_per_audio_hour=TRANSCRIBE_USD_PER_AUDIO_HOUR,
            overhead_usd_per_file=0.0,
            idle_usd_per_hour=0.0,
            vs_transcribe=1.0,
        )
    )
    return out


# -- the correction model ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPrice:
    """List prices of a Bedrock model, USD per million tokens."""

    model: str
    model_id: str  # as the LLM Caller calls it (a geographic inference profile)
    input_usd_per_mtok: float
    output_usd_per_mtok: float


MODEL_PRICES_AS_OF: Final = "2026-11-30"
MODEL_PRICES_SOURCE: Final = (
    "aws.amazon.com/bedrock/pricing, Anthropic models, on-demand through a geographic "
    "cross-region inference profile (the global. profile is about 10% cheaper); prompt cache "
    "writes 1.25x and reads 0.1x the input price (5-minute cache)"
)
CACHE_WRITE_PRICE_FACTOR: Final = 1.25
CACHE_READ_PRICE_FACTOR: Final = 0.10
MODEL_PRICES: Final = (
    ModelPrice("Claude Sonnet 4.6", "us.anthropic.claude-sonnet-4-6", 3.30, 16.50),
    ModelPrice("Claude Haiku 4.5", "us.anthropic.claude-haiku-4-5-20251001-v1:0", 1.10, 5.50),
)


@dataclass(frozen=True)
class TokenUsage:
    """What a model server reported for a run: input billed at the full price (cache reads
    and writes excluded, as Bedrock counts them), output, and the cache's reads and writes."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


def model_usd(price: ModelPrice, usage: TokenUsage) -> float:
    full_price_input = (
        usage.input_tokens
        + usage.cache_write_tokens * CACHE_WRITE_PRICE_FACTOR
        + usage.cache_read_tokens * CACHE_READ_PRICE_FACTOR
    )
    return (
        full_price_input * price.input_usd_per_mtok
        + usage.output_tokens * price.output_usd_per_mtok
    ) / 1_000_000
