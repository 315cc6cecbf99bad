"""Result notifications in moto: the stack's topic, SQS subscribers with raw and enveloped
delivery, filter policies (moto evaluates them as SNS does), a publish that fails, and each
publisher (LLM Caller, Dispatcher, worker) under its own role."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import stage_config
from component.test_llm_caller import LECTURE, invoke, transcribed
from moto.core import set_initial_no_auth_action_count
from support.chalice_deploy import Deployment, deploy, s3_event
from support.notifications import Notification, subscribe_queue
from support.worker_harness import Pipeline

from cloudformation.call_ledger import CallRecord, denied, ungranted
from cloudformation.emulated import WORKER
from gpu_worker.daemon import EXIT_OK
from pipeline_core.contracts import Result, ResultTopic, send_result

SOURCE = "audio-input/course-a/lesson-001.mp3"
OUTPUT = "s3://bucket/final-output/course-a/lesson-001.txt"


@pytest.fixture
def stack(tmp_path: Path, aws: None) -> Deployment:
    return deploy(tmp_path)


def topic_of(stack: Deployment) -> ResultTopic:
    return ResultTopic(stack.stack.client("sns"), stack.stack.notification_topic_arn)


def publishes(calls: list[CallRecord], component: str, topic_arn: str) -> bool:
    return CallRecord(component, "sns:Publish", topic_arn) in calls


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "enveloped"])
def test_a_result_reaches_a_subscriber_with_its_attributes(stack: Deployment, raw: bool) -> None:
    subscriber = subscribe_queue(stack.stack, "subscriber", raw=raw)
    result = Result.success(SOURCE, OUTPUT, status="success_uncorrected", job_id="j-1")

    send_result(
        stack.sqs, stack.stack.results_queue_url, result, topic=topic_of(stack), language="Hebrew"
    )

    [notification] = subscriber.notifications()
    assert notification.result == result
    assert notification.attributes == {
        "status": "success_uncorrected",
        "language": "he",
        "source_file": SOURCE,
    }
    assert notification.subject == (None if raw else "Transcription success_uncorrected")
    assert stack.results() == [result]  # the Results Queue has it too, once


def test_a_filter_policy_on_status_passes_only_failures(stack: Deployment) -> None:
    failures = subscribe_queue(
        stack.stack, "failures", raw=True, filter_policy={"status": ["failed"]}
    )
    course_b = subscribe_queue(
        stack.stack,
        "course-b",
        raw=True,
        filter_policy={"source_file": [{"prefix": "audio-input/course-b/"}]},
    )
    hebrew = subscribe_queue(stack.stack, "hebrew", raw=True, filter_policy={"language": ["he"]})
    succeeded = Result.success(SOURCE, OUTPUT)
    failed = Result.failure(SOURCE, "the recording is silent")
    other_course = Result.failure("audio-input/course-b/x.mp3", "the recording is silent")

    for result, language in ((succeeded, "he"), (failed, "en"), (other_course, None)):
        send_result(
            stack.sqs,
            stack.stack.results_queue_url,
            result,
            topic=topic_of(stack),
            language=language,
        )

    assert [n.result for n in failures.notifications()] == [failed, other_course]
    assert [n.result for n in course_b.notifications()] == [other_course]
    assert [n.result for n in hebrew.notifications()] == [succeeded]
    assert len(stack.results()) == 3


def test_a_publish_that_fails_leaves_the_result_on_the_queue_once(
    stack: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    arn = stack.stack.notification_topic_arn
    stack.stack.client("sns").delete_topic(TopicArn=arn)
    result = Result.failure(SOURCE, "the recording is silent", job_id="j-2")

    with caplog.at_level(logging.ERROR):
        message_id = send_result(
            stack.sqs, stack.stack.results_queue_url, result, topic=topic_of(stack)
        )

    assert message_id
    assert stack.results() == [result]
    [record] = [r for r in caplog.records if "notification was not published" in r.message]
    assert (record.topic_arn, record.job_id, record.status) == (arn, "j-2", "failed")  # type: ignore[attr-defined]
    assert record.exc_info is not None


def test_the_llm_caller_publishes_the_result_it_sends_with_only_its_role(
    stack: Deployment,
) -> None:
    subscriber = subscribe_queue(stack.stack, "subscriber", raw=False)
    options = stage_config.StageOptions(corrector="none")
    client = stack.client(options)
    job = transcribed(stack, LECTURE, language="english")
    policy = stage_config.llm_caller_policy(
        stage_config.StackOutputs.from_mapping(stack.outputs), "test", options
    )

    ledger, policies = stack.invoke_as_role(
        stage_config.LLM_CALLER, policy, lambda: invoke(client, job)
    )

    [result] = stack.results()
    assert result.status == "success_uncorrected"
    [notification] = subscriber.notifications()
    assert notification == Notification(
        result,
        {"status": "success_uncorrected", "language": "en", "source_file": result.source_file},
        "Transcription success_uncorrected",
    )
    calls = ledger.records()
    assert publishes(calls, stage_config.LLM_CALLER, stack.stack.notification_topic_arn)
    assert denied(calls) == []
    assert ungranted(calls, policies) == []


def test_the_dispatcher_publishes_a_refused_upload_with_only_its_role(
    stack: Deployment,
) -> None:
    subscriber = subscribe_queue(stack.stack, "subscriber", raw=True)
    client = stack.client()
    key = "audio-input/notes.txt"
    stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=b"not audio")
    policy = stage_config.dispatcher_policy(
        stage_config.StackOutputs.from_mapping(stack.outputs), "test"
    )

    ledger, policies = stack.invoke_as_role(
        stage_config.DISPATCHER,
        policy,
        lambda: client.lambda_.invoke("dispatcher", s3_event(client, stack, key)),
    )

    [result] = stack.results()
    assert (result.status, result.source_file) == ("failed", key)
    [notification] = subscriber.notifications()
    assert notification.result == result
    assert notification.attributes == {"status": "failed", "source_file": key}
    calls = ledger.records()
    assert publishes(calls, stage_config.DISPATCHER, stack.stack.notification_topic_arn)
    assert denied(calls) == []
    assert ungranted(calls, policies) == []


@pytest.mark.slow  # runs the worker on the real tiny.en weights
def test_the_worker_publishes_a_failed_job_with_only_its_instance_role(
    pipeline: Pipeline, fox_mp3: Path
) -> None:
    subscriber = subscribe_queue(pipeline.stack, "subscriber", raw=True)
    key = pipeline.upload("shiur.mp3", fox_mp3)
    job_id = pipeline.dispatch(key, language="hebrew")  # tiny.en cannot do Hebrew
    aws, ledger, policies = pipeline.instance_role()
    worker = pipeline.worker(aws=aws, notification_topic_arn=pipeline.stack.notification_topic_arn)

    @set_initial_no_auth_action_count(0)
    def run_as_the_instance() -> int:
        return worker.run()

    assert run_as_the_instance() == EXIT_OK

    [result] = pipeline.results()
    assert (result.status, result.job_id) == ("failed", job_id)
    [notification] = subscriber.notifications()
    assert notification.result == result
    assert notification.attributes == {"status": "failed", "language": "he", "source_file": key}
    calls = ledger.records()
    assert publishes(calls, WORKER, pipeline.stack.notification_topic_arn)
    assert denied(calls) == []
    assert ungranted(calls, policies) == []
