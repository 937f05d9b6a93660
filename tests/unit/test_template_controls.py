"""template.yaml: the operational controls a deployed stack is expected to have."""

from __future__ import annotations

import json
from typing import Any

from tests.unit.test_template_policy import FUNCTIONS, function, resources, template


def props(logical_id: str) -> dict[str, Any]:
    return dict(template()["Resources"][logical_id]["Properties"])


def test_every_function_logs_to_its_own_group_kept_for_the_retention_parameter() -> None:
    groups = resources("AWS::Logs::LogGroup")
    used = set()
    for module in FUNCTIONS:
        group = function(module)["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert groups[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        used.add(group)
    assert len(used) == len(FUNCTIONS)
    assert template()["Parameters"]["LogRetentionDays"]["Default"] == 30


def test_api_access_logs_are_json_in_a_group_with_retention() -> None:
    [api] = resources("AWS::Serverless::Api").values()
    setting = api["Properties"]["AccessLogSetting"]
    group = setting["DestinationArn"]["Fn::GetAtt"][0]
    assert props(group)["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    fields = json.loads(setting["Format"])
    assert {"requestId", "status", "integrationLatency", "apiKeyId", "xrayTraceId"} <= set(fields)
    assert fields["status"] == "$context.status"


def test_the_usage_plan_allows_a_caller_kisis_rate() -> None:
    [api] = resources("AWS::Serverless::Api").values()
    throttle = api["Properties"]["Auth"]["UsagePlan"]["Throttle"]
    assert throttle["RateLimit"] == 5  # Kisi: 5 requests per second per user (KISI_API.md)
    assert throttle["BurstLimit"] <= 10


def test_concurrency_is_bounded_for_every_function() -> None:
    for module, parameter in (("api_call", "ApiCallReservedConcurrency"),
                              ("metrics", "MetricsReservedConcurrency")):
        reserved = function(module)["Properties"]["ReservedConcurrentExecutions"]["Fn::If"]
        assert reserved[1] == {"Ref": parameter}, module
        assert template()["Parameters"][parameter]["Default"] > 0
    # retry_worker: the SQS event source caps it (no reservation needed).
    [source] = [e for e in function("retry_worker")["Properties"]["Events"].values()
                if e["Type"] == "SQS"]
    assert source["Properties"]["ScalingConfig"]["MaximumConcurrency"] <= 5


def test_every_topic_is_encrypted_with_a_key_cloudwatch_may_use() -> None:
    topics = resources("AWS::SNS::Topic")
    assert topics
    for name, topic in topics.items():
        assert topic["Properties"]["KmsMasterKeyId"] == {"Ref": "TopicKey"}, name
    statements = props("TopicKey")["KeyPolicy"]["Statement"]
    services = {s["Principal"].get("Service") for s in statements}
    assert "cloudwatch.amazonaws.com" in services  # alarms publish to AlarmTopic


def test_every_table_has_point_in_time_recovery() -> None:
    tables = resources("AWS::DynamoDB::Table")
    assert len(tables) >= 4
    for name, table in tables.items():
        pitr = table["Properties"]["PointInTimeRecoverySpecification"]
        assert pitr == {"PointInTimeRecoveryEnabled": True}, name


def test_tracing_is_active_for_the_functions_and_the_api() -> None:
    assert template()["Globals"]["Function"]["Tracing"] == "Active"
    [api] = resources("AWS::Serverless::Api").values()
    assert api["Properties"]["TracingEnabled"] is True
