"""What the Chalice handlers call: settings from the environment, clients, then the work."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from chalicelib import aws
from chalicelib.correction.correctors import BedrockCorrector, Corrector, OpenAICompatibleCorrector
from chalicelib.correction.llm_caller import (
    CorrectionOutcome,
    Delivery,
    LlmCallerClients,
    handle_llm_message,
)
from chalicelib.dispatch.dispatcher import Dispatched, DispatcherClients, handle_s3_event
from chalicelib.dispatch.reconciler import ReconcileReport, reconcile
from pipeline_core.config import DispatcherSettings, LlmCallerSettings, ReconcilerSettings


def _dispatcher_clients() -> DispatcherClients:
    return DispatcherClients(aws.s3(), aws.sqs(), aws.dynamodb(), aws.autoscaling(), aws.sns())


def dispatcher_handler(event: Mapping[str, Any]) -> list[Dispatched]:
    """One S3 event: every uploaded object it announces."""
    return handle_s3_event(event, _dispatcher_clients(), DispatcherSettings.from_env())


def reconciler_handler() -> ReconcileReport:
    """One scheduled run: what the Dispatcher did not finish is dispatched again."""
    return reconcile(_dispatcher_clients(), ReconcilerSettings.from_env())


def llm_caller_handler(event: Mapping[str, Any], context: Any) -> list[CorrectionOutcome]:
    """One LLM Queue batch (one message: batch size 1, so a failure returns only it)."""
    settings = LlmCallerSettings.from_env()
    clients = LlmCallerClients(aws.s3(), aws.sqs(), aws.dynamodb(), aws.sns())
    corrector = make_corrector(settings)
    outcomes = []
    for record in event.get("Records", []):
        outcomes.append(
            handle_llm_message(
                Delivery.from_record(record), clients, settings, corrector, _remaining(context)
            )
        )
    return outcomes


def _remaining(context: Any) -> float | None:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return None if remaining is None else float(remaining()) / 1000


@functools.cache
def make_corrector(settings: LlmCallerSettings) -> Corrector | None:
    """The configured corrector, made once per container (it holds connection pools)."""
    if settings.corrector == "none":
        return None
    if settings.corrector == "openai":
        assert settings.openai_base_url is not None  # required by the settings for "openai"
        return OpenAICompatibleCorrector(
            settings.openai_base_url,
            settings.openai_model,
            settings.max_output_tokens,
            api_key=settings.openai_api_key,
            max_attempts=settings.max_attempts,
            read_timeout=settings.read_timeout_seconds,
        )
    client = aws.bedrock_runtime(
        settings.bedrock_endpoint_url,
        settings.retry_mode,
        settings.max_attempts,
        settings.read_timeout_seconds,
    )
    return BedrockCorrector(client, settings.bedrock_model_id, settings.max_output_tokens)


def forget_container_state() -> None:
    """What a fresh Lambda container starts without: clients and the corrector (made once per
    container). For in-process runs that load the app again, or against another endpoint."""
    aws.clear()
    make_corrector.cache_clear()
