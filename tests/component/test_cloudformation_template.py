"""The template's linters and the rules moto cannot show (alarms, lifecycle, bucket policy)."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import stage_config

from cloudformation.stack import OUTPUT_NAMES, TEMPLATE_PATH, load_template
from local_mode.scaler import workers_for_backlog
from local_mode.template import referenced_id
from pipeline_core import contracts, keys

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"  # the dev group's, beside this Python
TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]


def _of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in RESOURCES.items() if res["Type"] == kind}


@pytest.mark.slow  # waits out retries or runs an external tool; not in the fast loop
def test_cfn_lint_is_clean() -> None:
    run = subprocess.run(
        [str(CFN_LINT), "--regions", "us-east-1", "eu-west-1", "--", str(TEMPLATE_PATH)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (run.returncode, run.stdout) == (0, ""), run.stdout + run.stderr


@pytest.mark.slow  # waits out retries or runs an external tool; not in the fast loop
def test_checkov_is_clean_and_every_skip_says_why() -> None:
    assert CHECKOV.exists(), "checkov lives in .venv-tools: run scripts/bootstrap.sh"
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}  # offline: no guideline download
    run = subprocess.run(
        [
            str(CHECKOV),
            *("-f", str(TEMPLATE_PATH), "--framework", "cloudformation"),
            *("--skip-download", "--output", "json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    report = json.loads(run.stdout)
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert run.returncode == 0, run.stderr[-2000:]
    assert report["summary"]["passed"] >= 30
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped["check_id"]


def test_bucket_encryption_lifecycle_and_tls_only() -> None:
    props = RESOURCES["PipelineBucket"]["Properties"]
    assert RESOURCES["PipelineBucket"]["DeletionPolicy"] == "Retain"
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    # chalice deploy owns the bucket notification; the template must never define one.
    assert "NotificationConfiguration" not in props

    rules = {rule["Id"]: rule for rule in props["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-audio-input"]["Prefix"] == "audio-input/"
    assert rules["expire-audio-input"]["ExpirationInDays"] == {"Ref": "AudioRetentionDays"}
    for rule_id, prefix in (
        ("expire-transcriptions", "transcriptions/"),
        ("expire-final-output", "final-output/"),
    ):
        assert rules[rule_id]["Prefix"] == prefix
        assert rules[rule_id]["ExpirationInDays"] == {"Ref": "OutputRetentionDays"}
    housekeeping = rules["housekeeping"]
    assert "Prefix" not in housekeeping
    assert housekeeping["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    assert housekeeping["NoncurrentVersionExpiration"]["NoncurrentDays"] == {
        "Ref": "NoncurrentVersionDays"
    }
    assert all(rule["Status"] == "Enabled" for rule in rules.values())

    (policy,) = _of_type("AWS::S3::BucketPolicy").values()
    assert referenced_id(policy["Properties"]["Bucket"]) == "PipelineBucket"
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_every_prefix_the_pipeline_writes_expires() -> None:
    """Each prefix of pipeline_core/keys.py has its expiry rule, the LLM Caller's checkpoints
    (full transcript text) included, kept longer than the LLM DLQ keeps a message so that a
    redriven job still resumes from them."""
    rules = RESOURCES["PipelineBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    expiring = {rule["Prefix"]: rule["ExpirationInDays"] for rule in rules if "Prefix" in rule}
    prefixes = {keys.AUDIO_PREFIX, keys.TRANSCRIPT_PREFIX, keys.FINAL_PREFIX, keys.LLM_WORK_PREFIX}
    assert set(expiring) == prefixes
    dlq_days = RESOURCES["LlmDlq"]["Properties"]["MessageRetentionPeriod"] / 86400
    assert expiring[keys.LLM_WORK_PREFIX] > dlq_days


def test_notification_topic_is_encrypted_tls_only_and_subscribed_only_when_asked() -> None:
    topic = RESOURCES["NotificationTopic"]["Properties"]
    # The AWS managed key: its key policy admits the account's SNS publishers, no grants.
    assert topic["KmsMasterKeyId"] == "alias/aws/sns"
    (policy,) = _of_type("AWS::SNS::TopicPolicy").values()
    assert [referenced_id(t) for t in policy["Properties"]["Topics"]] == ["NotificationTopic"]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Principal"]) == ("Deny", "*")
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert referenced_id(statement["Resource"]) == "NotificationTopic"

    subscriptions = {
        props["Protocol"]: (resource["Condition"], props)
        for resource in _of_type("AWS::SNS::Subscription").values()
        for props in [resource["Properties"]]
        if referenced_id(props["TopicArn"]) == "NotificationTopic"
    }
    assert set(subscriptions) == {"email", "https"}
    for protocol, parameter in (("email", "NotificationEmail"), ("https", "NotificationHttpsUrl")):
        condition, props = subscriptions[protocol]
        assert TEMPLATE["Conditions"][condition] == {
            "Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]
        }
        assert TEMPLATE["Parameters"][parameter]["Default"] == ""
        assert props["FilterPolicy"] == {"status": {"Ref": "NotificationStatuses"}}
    default_statuses = TEMPLATE["Parameters"]["NotificationStatuses"]["Default"].split(",")
    assert tuple(default_statuses) == contracts.RESULT_STATUSES


def test_llm_queue_visibility_is_six_times_the_timeout_the_stage_config_deploys() -> None:
    """The LLM Caller's timeout is the stage config's (chalice deploy sets it); the template
    has no parameter for it, which nothing would read and which could only disagree."""
    visibility = RESOURCES["LlmQueue"]["Properties"]["VisibilityTimeout"]
    assert visibility == stage_config.LLM_QUEUE_VISIBILITY_S
    assert visibility == 6 * stage_config.LLM_CALLER_TIMEOUT_S
    assert "LlmCallerTimeoutSeconds" not in TEMPLATE["Parameters"]


def test_queues_are_encrypted_and_dead_letter_after_three_receives() -> None:
    queues = _of_type("AWS::SQS::Queue")
    assert len(queues) == 7  # three queues, their DLQs, the Dispatcher's on-failure destination
    for name, queue in queues.items():
        props = queue["Properties"]
        assert props["SqsManagedSseEnabled"] is True, name
        if name.endswith("Dlq"):
            assert props["MessageRetentionPeriod"] == 14 * 86400
        else:
            assert props["RedrivePolicy"]["maxReceiveCount"] == 3
            assert referenced_id(props["RedrivePolicy"]["deadLetterTargetArn"]) == name.replace(
                "Queue", "Dlq"
            )


def _alarms() -> dict[str, dict[str, Any]]:
    return {name: res["Properties"] for name, res in _of_type("AWS::CloudWatch::Alarm").items()}


def _scaling_alarm() -> dict[str, Any]:
    (alarm,) = [
        props
        for props in _alarms().values()
        if any(
            RESOURCES.get(referenced_id(action) or "", {}).get("Type")
            == "AWS::AutoScaling::ScalingPolicy"
            for action in props["AlarmActions"]
        )
    ]
    return alarm


def test_the_backlog_alarm_only_ever_adds_workers_up_to_max_workers() -> None:
    """Step scaling on what the backlog lacks: ChangeInCapacity steps of +1 .. +20 (the
    shortfall), never a negative step, so no policy scales in; MaxSize is MaxWorkers."""
    alarm = _scaling_alarm()
    metrics = {metric["Id"]: metric for metric in alarm["Metrics"]}
    (returned,) = [metric for metric in alarm["Metrics"] if metric["ReturnData"]]
    assert "Expression" in returned
    sources = {
        (stat["Metric"]["Namespace"], stat["Metric"]["MetricName"]): [
            referenced_id(d["Value"]) for d in stat["Metric"]["Dimensions"]
        ]
        for stat in (m["MetricStat"] for m in metrics.values() if "MetricStat" in m)
    }
    assert sources == {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"): ["AudioQueue"],
        ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible"): ["AudioQueue"],
        ("AWS/AutoScaling", "GroupDesiredCapacity"): ["GpuAsg"],
    }
    assert (
        "GroupDesiredCapacity"
        in RESOURCES["GpuAsg"]["Properties"]["MetricsCollection"][0]["Metrics"]
    )
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    policy = RESOURCES[referenced_id(alarm["AlarmActions"][0]) or ""]["Properties"]
    assert referenced_id(policy["AutoScalingGroupName"]) == "GpuAsg"
    assert (policy["PolicyType"], policy["AdjustmentType"]) == ("StepScaling", "ChangeInCapacity")
    steps = policy["StepAdjustments"]
    assert [step["ScalingAdjustment"] for step in steps] == list(range(1, 21))
    assert all(step["MetricIntervalLowerBound"] == n for n, step in enumerate(steps))
    assert "MetricIntervalUpperBound" not in steps[-1]
    assert TEMPLATE["Parameters"]["MaxWorkers"]["MaxValue"] == len(steps)


@pytest.mark.parametrize("target", [1, 2, 5])
def test_the_alarm_expression_is_the_local_scalers_arithmetic(target: int) -> None:
    """One formula: the template's metric-math expression, evaluated as CloudWatch would,
    equals ``workers_for_backlog`` minus the desired capacity for every backlog."""
    (returned,) = [metric for metric in _scaling_alarm()["Metrics"] if metric["ReturnData"]]
    expression = returned["Expression"]["Fn::Sub"].replace("${TargetBacklogPerWorker}", str(target))
    functions = {"CEIL": math.ceil, "FILL": lambda value, default: value}
    for visible, in_flight, desired in itertools.product(range(12), range(6), range(4)):
        names = {"visible": visible, "inFlight": in_flight, "desired": desired}
        value = eval(expression, {"__builtins__": {}}, {**functions, **names})
        assert value == workers_for_backlog(visible + in_flight, target) - desired, names


def test_failures_and_stuck_work_alarm_the_encrypted_topic() -> None:
    alarms = _alarms()
    to_topic = {
        name: props
        for name, props in alarms.items()
        if [referenced_id(a) for a in props["AlarmActions"]] == ["AlarmTopic"]
    }
    watched_queues = {
        referenced_id(props["Dimensions"][0]["Value"])
        for props in to_topic.values()
        if props.get("Namespace") == "AWS/SQS"
        and props["MetricName"] == "ApproximateNumberOfMessagesVisible"
    }
    assert watched_queues == {"AudioDlq", "LlmDlq", "ResultsDlq", "DispatcherDlq"}
    for props in to_topic.values():
        if props.get("MetricName") == "ApproximateNumberOfMessagesVisible":
            assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanThreshold", 0)

    lambda_names = [
        # A name the stack may be told (Fn::If on its parameter), else Chalice's by default.
        props["Dimensions"][0]["Value"].get(
            "Fn::If", [None, None, props["Dimensions"][0]["Value"]]
        )[2]["Fn::Sub"]
        for props in to_topic.values()
        if props.get("Namespace") == "AWS/Lambda"
    ]
    # Chalice names a function <app_name>-<stage>-<handler>: the alarms must watch those.
    chalice_config = json.loads(
        (Path(__file__).parents[2] / "chalice_app" / ".chalice" / "config.json").read_text()
    )
    handlers = chalice_config["stages"]["dev"]["lambda_functions"]
    assert sorted(lambda_names) == sorted(
        f"{chalice_config['app_name']}-${{Stage}}-{handler}" for handler in handlers
    )
    (stuck,) = [
        p for p in to_topic.values() if p.get("MetricName") == "ApproximateAgeOfOldestMessage"
    ]
    assert referenced_id(stuck["Dimensions"][0]["Value"]) == "AudioQueue"
    assert stuck["Threshold"] == {"Ref": "WorkerStartAlarmSeconds"}

    topic = RESOURCES["AlarmTopic"]["Properties"]
    assert referenced_id(topic["KmsMasterKeyId"]) == "AlarmKey"
    key_policy = RESOURCES["AlarmKey"]["Properties"]["KeyPolicy"]["Statement"]
    assert any(s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} for s in key_policy)
    subscription = RESOURCES["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"


def test_gpu_group_is_spot_only_and_never_resets_desired() -> None:
    props = RESOURCES["GpuAsg"]["Properties"]
    assert props["MinSize"] == "0"
    assert props["MaxSize"] == {"Ref": "MaxWorkers"}
    assert "DesiredCapacity" not in props  # a stack update must not kill a running job
    # Off (docs/design.md "Capacity Rebalancing"): the worker drains on the advice itself.
    assert props["CapacityRebalance"] is False
    distribution = props["MixedInstancesPolicy"]["InstancesDistribution"]
    assert distribution == {
        "OnDemandBaseCapacity": 0,
        "OnDemandPercentageAboveBaseCapacity": 0,
        "SpotAllocationStrategy": "capacity-optimized",
    }


def test_worker_policy_scopes_every_write_to_its_own_resources() -> None:
    (policy,) = [
        res["Properties"]
        for res in _of_type("AWS::IAM::ManagedPolicy").values()
        if [referenced_id(r) for r in res["Properties"].get("Roles", [])] == ["WorkerRole"]
    ]
    # Only actions without resource-level permissions take "*" (reasons: the template's
    # IamWildcards); tests/component/test_worker_operations_template.py holds the last two.
    wildcards = {
        statement["Sid"]
        for statement in policy["PolicyDocument"]["Statement"]
        if statement["Resource"] == "*"
    }
    assert wildcards == {stage_config.WILDCARD_SID, "CountFatalExits", "SessionManager"}
    (terminate,) = [
        s
        for s in policy["PolicyDocument"]["Statement"]
        if "autoscaling:TerminateInstanceInAutoScalingGroup" in s["Action"]
    ]
    asg_name = RESOURCES["GpuAsg"]["Properties"]["AutoScalingGroupName"]["Fn::Sub"]
    assert terminate["Resource"]["Fn::Sub"].endswith(f":autoScalingGroupName/{asg_name}")
    publishing = [
        s for s in policy["PolicyDocument"]["Statement"] if "sns:Publish" in str(s["Action"])
    ]
    assert [(s["Action"], referenced_id(s["Resource"])) for s in publishing] == [
        ("sns:Publish", "NotificationTopic")
    ]


@pytest.mark.parametrize("name", OUTPUT_NAMES)
def test_every_output_is_exported_under_the_stack_name(name: str) -> None:
    output = TEMPLATE["Outputs"][name]
    assert output["Export"]["Name"] == {"Fn::Sub": f"${{AWS::StackName}}-{name}"}


def test_the_docs_count_and_time_the_alarms_as_the_template_does() -> None:
    """docs/design.md prices the idle stack by its alarms, and the README promises when the
    "worker not starting" alarm fires: both as the template has them."""
    design, readme = (
        " ".join((ROOT / name).read_text(encoding="utf-8").split())
        for name in ("docs/design.md", "README.md")
    )
    alarms = _of_type("AWS::CloudWatch::Alarm")
    assert f"{len(alarms)} alarms (about {len(alarms) * 0.10:.2f} USD)" in design
    minutes = TEMPLATE["Parameters"]["WorkerStartAlarmSeconds"]["Default"] // 60
    assert f'"worker not starting" alarm fires after {minutes} minutes' in readme


def test_the_dispatchers_on_failure_destination_is_a_tls_only_encrypted_queue_with_an_alarm() -> (
    None
):
    """The queue scripts/deploy.sh names as the Dispatcher's on-failure destination."""
    props = RESOURCES["DispatcherDlq"]["Properties"]
    assert props["SqsManagedSseEnabled"] is True
    assert "RedrivePolicy" not in props  # Lambda writes to it; the reconciler reads it
    assert props["MessageRetentionPeriod"] == 14 * 86400
    # A record in hand is not received again by the next run while this one works on it.
    assert props["VisibilityTimeout"] > stage_config.RECONCILER_TIMEOUT_S
    (policy,) = [
        p["Properties"]
        for p in _of_type("AWS::SQS::QueuePolicy").values()
        if [referenced_id(q) for q in p["Properties"]["Queues"]] == ["DispatcherDlq"]
    ]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Deny", "sqs:*")
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    (alarm,) = [
        a
        for a in _alarms().values()
        if "Dimensions" in a  # not a metric-math alarm
        and referenced_id(a["Dimensions"][0]["Value"]) == "DispatcherDlq"
    ]
    assert (alarm["MetricName"], alarm["Threshold"]) == ("ApproximateNumberOfMessagesVisible", 0)
    assert [referenced_id(action) for action in alarm["AlarmActions"]] == ["AlarmTopic"]
    assert referenced_id(TEMPLATE["Outputs"]["DispatcherDlqArn"]["Value"]) == "DispatcherDlq"
