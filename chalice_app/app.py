"""Chalice wiring only: each decorator hands its event to a function in chalicelib."""

from __future__ import annotations

import os
from typing import Any

from chalice.app import Chalice, CloudWatchEvent, Rate, S3Event, SQSEvent

from chalicelib import entrypoints
from pipeline_core.config import ENV_BUCKET, ENV_LOG_LEVEL
from pipeline_core.jsonlog import configure_logging
from pipeline_core.keys import AUDIO_PREFIX

app = Chalice(app_name="transcription-pipeline")
configure_logging(
    os.environ.get(ENV_LOG_LEVEL, "INFO"),
    service=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "transcription-pipeline"),
)

# Read when `chalice deploy`/`package` loads the app: the stage's environment_variables in
# .chalice/config.json (written by stage_config.py) name the real bucket and queue. The
# placeholders only let the app load where no stage is configured (tests, a first package).
BUCKET = os.environ.get(ENV_BUCKET, "transcription-pipeline-bucket")
LLM_QUEUE_NAME = os.environ.get("LLM_QUEUE_NAME", "transcription-pipeline-llm")
# The event source's own limit, equal to the reserved concurrency: without it Lambda would
# poll faster than the 3 reserved instances run, and each throttled invocation would count
# as a receive towards the DLQ.
LLM_MAX_CONCURRENCY = int(os.environ.get("LLM_MAX_CONCURRENCY", "3"))
# How often the reconciler looks for uploads whose dispatch failed (docs/design.md).
RECONCILE_EVERY_MINUTES = 15


# One notification takes one suffix only, so file types are checked in the Dispatcher.
@app.on_s3_event(bucket=BUCKET, events=["s3:ObjectCreated:*"], prefix=AUDIO_PREFIX)
def dispatcher(event: S3Event) -> None:
    entrypoints.dispatcher_handler(event.to_dict())


# Batch size 1: on_sqs_message has no partial-batch response, so a failure must return
# only its own message to the queue.
@app.on_sqs_message(queue=LLM_QUEUE_NAME, batch_size=1, maximum_concurrency=LLM_MAX_CONCURRENCY)
def llm_caller(event: SQSEvent) -> None:
    entrypoints.llm_caller_handler(event.to_dict(), event.context)


# Uploads whose Dispatcher invocation failed all its retries (the Dispatcher DLQ) or never
# finished (audio-input/ against the job table) are dispatched again.
@app.schedule(Rate(RECONCILE_EVERY_MINUTES, unit=Rate.MINUTES))
def reconciler(event: CloudWatchEvent) -> dict[str, Any]:
    return entrypoints.reconciler_handler().as_dict()
