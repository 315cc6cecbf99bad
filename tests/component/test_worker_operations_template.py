"""Issue 16's worker operations in the template, the AMI and the units, held to each other:
the give-back's alarm and grants, logs that outlive the instance, Session Manager, and the
group's health alarms and notifications. (cfn-lint and checkov run on the whole template in
test_cloudformation_template.py; the give-back itself runs in test_worker_give_back.py.)
"""

from __future__ import annotations

import json
import re
from typing import Any

import stage_config
from support.repo_paths import REPO_ROOT

from cloudformation.stack import load_template
from gpu_worker.lifecycle import give_back
from local_mode.systemd_unit import GIVE_BACK_UNIT, WORKER_UNIT, unit_settings

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
AGENT_CONFIG = REPO_ROOT / "packer" / "files" / "amazon-cloudwatch-agent.json"
INSTALL_SCRIPT = (REPO_ROOT / "packer" / "scripts" / "install-worker.sh").read_text()
OWN_GROUP_ARN = (
    "arn:${AWS::Partition}:autoscaling:${AWS::Region}:${AWS::AccountId}:autoScalingGroup:*:"
    "autoScalingGroupName/${AWS::StackName}-gpu-workers"
)


def worker_statements() -> dict[str, dict[str, Any]]:
    document = RESOURCES["WorkerPolicy"]["Properties"]["PolicyDocument"]
    return {statement["Sid"]: statement for statement in document["Statement"]}


def user_data() -> str:
    launch = RESOURCES["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    return str(launch["UserData"]["Fn::Base64"]["Fn::Sub"])


def log_file(unit_text: str) -> str:
    (output,) = unit_settings(unit_text)["Service.StandardOutput"]
    return output.removeprefix("append:")


# ---- a worker that cannot work gives its instance back ------------------------------------


def test_the_fatal_exit_alarm_watches_what_the_give_back_puts() -> None:
    alarm = RESOURCES["WorkerFatalExitAlarm"]["Properties"]
    assert alarm["Namespace"] == give_back.FATAL_EXIT_NAMESPACE
    assert alarm["MetricName"] == give_back.FATAL_EXIT_METRIC
    assert alarm["Dimensions"] == [
        {"Name": give_back.FATAL_EXIT_DIMENSION, "Value": {"Ref": "GpuAsg"}}
    ]
    assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "Sum",
        "GreaterThanOrEqualToThreshold",
        1,
    )
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_the_give_back_may_count_suspend_and_leave_only_in_its_own_group() -> None:
    statements = worker_statements()
    count = statements["CountFatalExits"]
    assert count["Action"] == "cloudwatch:PutMetricData"
    namespace = count["Condition"]["StringEquals"]["cloudwatch:namespace"]
    assert namespace == give_back.FATAL_EXIT_NAMESPACE
    suspend = statements["SuspendAlarmScalingOfOwnGroup"]
    assert suspend["Action"] == "autoscaling:SuspendProcesses"
    assert suspend["Resource"] == {"Fn::Sub": OWN_GROUP_ARN}
    assert statements["TerminateSelfInOwnGroup"]["Resource"] == {"Fn::Sub": OWN_GROUP_ARN}
    # ResumeProcesses stays with the operator: a broken worker cannot undo the stop.
    actions = json.dumps(list(statements.values()))
    assert "autoscaling:ResumeProcesses" not in actions


# ---- logs that outlive the instance ---------------------------------------------------------


def test_the_agent_ships_the_file_both_units_write_to_the_stacks_worker_log_group() -> None:
    config = json.loads(AGENT_CONFIG.read_text())
    (collected,) = config["logs"]["logs_collected"]["files"]["collect_list"]
    worker_log = log_file(WORKER_UNIT.read_text())
    assert collected["file_path"] == worker_log == log_file(GIVE_BACK_UNIT.read_text())
    assert collected["log_stream_name"] == "{instance_id}"
    assert "retention_in_days" not in collected  # the template's, with no PutRetentionPolicy
    placeholder = collected["log_group_name"]
    assert placeholder == "@WORKER_LOG_GROUP@"
    # The AMI installs the config where the user data reads it, and makes the log folder.
    installed = re.search(
        r'install -m 0644 /tmp/amazon-cloudwatch-agent.json "\$PREFIX/(\S+)"', INSTALL_SCRIPT
    )
    assert installed is not None
    assert (
        f"install -d -m 0755 -o transcription -g transcription {worker_log.rsplit('/', 1)[0]}"
        in INSTALL_SCRIPT
    )
    packer = (REPO_ROOT / "packer" / "worker.pkr.hcl").read_text()
    assert 'source      = "${path.root}/files/amazon-cloudwatch-agent.json"' in packer
    # The user data fills in the stack's group and starts the agent with that config.
    script = user_data()
    assert f"s|{placeholder}|${{WorkerLogGroup}}|" in script
    assert f"/opt/transcription/{installed.group(1)}" in script
    assert "amazon-cloudwatch-agent-ctl -a fetch-config" in script
    # A log line that cannot be shipped must not keep the worker from starting.
    agent_start = script.index("amazon-cloudwatch-agent-ctl")
    assert "|| echo" in script[agent_start:]
    assert script.index("systemctl restart --no-block transcription-worker.service") > agent_start


def test_the_worker_may_write_only_streams_of_its_log_group() -> None:
    ship = worker_statements()["ShipLogLines"]
    assert sorted(ship["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert ship["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
        "${WorkerLogGroup}:*"
    }
    group = RESOURCES["WorkerLogGroup"]["Properties"]
    assert group["LogGroupName"] == {"Fn::Sub": "/transcription-pipeline/${AWS::StackName}/worker"}
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert TEMPLATE["Parameters"]["LogRetentionDays"]["Default"] == 30


def test_the_lambdas_log_groups_are_the_stacks_and_expire() -> None:
    for logical, function in (
        ("DispatcherLogGroup", stage_config.DISPATCHER),
        ("LlmCallerLogGroup", stage_config.LLM_CALLER),
    ):
        props = RESOURCES[logical]["Properties"]
        assert props["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        pattern, names = props["LogGroupName"]["Fn::Sub"]
        assert pattern == "/aws/lambda/${Function}"
        _, chosen, default = names["Function"]["Fn::If"]
        # As the error alarms name the function, and as Chalice deploys it.
        alarm = (
            "DispatcherErrorsAlarm" if logical == "DispatcherLogGroup" else "LlmCallerErrorsAlarm"
        )
        assert names["Function"] == RESOURCES[alarm]["Properties"]["Dimensions"][0]["Value"]
        assert default == {"Fn::Sub": stage_config.function_name("${Stage}", function)}
        assert chosen["Ref"].endswith("FunctionName")


def test_session_manager_replaces_ssh() -> None:
    session = worker_statements()["SessionManager"]
    assert sorted(session["Action"]) == [
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
    ]
    launch = RESOURCES["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert "KeyName" not in launch
    group = RESOURCES["WorkerSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group
    assert [rule["FromPort"] for rule in group["SecurityGroupEgress"]] == [443]
    assert "snap install amazon-ssm-agent" in INSTALL_SCRIPT
    assert RESOURCES["WorkerRole"]["Properties"].get("ManagedPolicyArns") is None


# ---- the group's health --------------------------------------------------------------------


def test_group_metrics_and_launch_errors_reach_the_alarm_topic() -> None:
    group = RESOURCES["GpuAsg"]["Properties"]
    (collection,) = group["MetricsCollection"]
    assert collection["Granularity"] == "1Minute"
    assert "GroupInServiceInstances" in collection["Metrics"]
    (notifications,) = group["NotificationConfigurations"]
    assert notifications["TopicARN"] == {"Ref": "AlarmTopic"}
    assert "autoscaling:EC2_INSTANCE_LAUNCH_ERROR" in notifications["NotificationTypes"]
    # The topic is encrypted: Auto Scaling's service-linked role may use its key, through SNS.
    key = {s["Sid"]: s for s in RESOURCES["AlarmKey"]["Properties"]["KeyPolicy"]["Statement"]}
    publish = key["AutoScalingNotificationsPublish"]
    assert sorted(publish["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    condition = publish["Condition"]["StringEquals"]
    assert condition["aws:PrincipalArn"]["Fn::Sub"].endswith(
        ":role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
    )
    assert condition["kms:ViaService"] == {"Fn::Sub": "sns.${AWS::Region}.amazonaws.com"}


def test_an_instance_in_service_for_an_hour_with_an_empty_queue_alarms() -> None:
    alarm = RESOURCES["WorkerIdleInServiceAlarm"]["Properties"]
    metrics = {metric["Id"]: metric for metric in alarm["Metrics"]}
    (returned,) = [metric for metric in metrics.values() if metric["ReturnData"]]
    expression = returned["Expression"]
    stats = {id_: m["MetricStat"] for id_, m in metrics.items() if "MetricStat" in m}
    in_service = [
        i for i, s in stats.items() if s["Metric"]["MetricName"] == "GroupInServiceInstances"
    ]
    assert stats[in_service[0]]["Metric"]["Dimensions"][0]["Value"] == {"Ref": "GpuAsg"}
    queue = {
        s["Metric"]["MetricName"]: i
        for i, s in stats.items()
        if s["Metric"]["Namespace"] == "AWS/SQS"
    }
    assert set(queue) == {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
    }
    for id_ in queue.values():
        assert stats[id_]["Metric"]["Dimensions"][0]["Value"] == {
            "Fn::GetAtt": ["AudioQueue", "QueueName"]
        }
        assert f"FILL({id_}, 0)" in expression  # a queue with nothing to say is empty
    assert f"{in_service[0]} > 0" in expression
    # An hour: every period of it breaching.
    periods = {s["Period"] for s in stats.values()}
    assert len(periods) == 1
    assert periods.pop() * alarm["EvaluationPeriods"] == 3600
    assert alarm["DatapointsToAlarm"] == alarm["EvaluationPeriods"]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    # Longer than a healthy worker stays idle.
    idle_default = TEMPLATE["Parameters"]["IdleShutdownSeconds"]["Default"]
    assert idle_default < 3600
