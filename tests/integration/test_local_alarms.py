"""The alarm evaluator: moto stores alarms, this evaluates them and notifies like CloudWatch."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from aws_lambda_powertools.utilities.parser.models import SnsModel

from local.alarms import decide
from local.moto_server import aws_client
from tests.fixtures.local_stack.harness import (
    eventually,
    quiet_runtime,
    recorded,
)

STACK = "alarms"
NOW = datetime(2024, 3, 4, 7, 8, 30, tzinfo=UTC)
SERVICE = [{"Name": "service", "Value": "fixture"}]


@pytest.fixture(scope="module")
def runtime():
    with quiet_runtime(STACK, now=lambda: NOW) as runtime:
        yield runtime


@pytest.fixture
def cloudwatch(runtime):
    return aws_client("cloudwatch", runtime.endpoint_url)


def put(cloudwatch, name, value, at):
    cloudwatch.put_metric_data(
        Namespace="Fixture",
        MetricData=[
            {
                "MetricName": name,
                "Value": value,
                "Unit": "Count",
                "Timestamp": at,
                "Dimensions": SERVICE,
            }
        ],
    )


def state(cloudwatch, name):
    [alarm] = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    return alarm["StateValue"], alarm["StateReason"]


def alarm_notifications(runtime):
    """SNS messages the metrics function got from this stack's alarm topic."""
    topic = runtime.stack.physical_id("AlarmTopic")
    events = [entry["event"] for entry in recorded("metrics") if "Records" in entry["event"]]
    return [r["Sns"] for e in events for r in e["Records"] if r["Sns"]["TopicArn"] == topic]


def delivered(runtime, alarm, count):
    """Run SNS delivery until ``count`` notifications about ``alarm`` reached the function."""

    def about_alarm():
        return [n for n in alarm_notifications(runtime) if f'"{alarm}"' in n["Subject"]]

    def probe():
        runtime.sns.poll_once(wait_time_s=1)
        return len(about_alarm()) >= count

    eventually(probe)
    return about_alarm()


def test_metric_math_alarm_goes_to_alarm_and_notifies_the_subscriber(runtime, cloudwatch):
    # given two minutes in which 50 % and then 30 % of requests were bad (threshold 20 %)
    minute = NOW.replace(second=0) - timedelta(minutes=1)
    put(cloudwatch, "Requests", 10, minute + timedelta(seconds=10))
    put(cloudwatch, "BadRequests", 5, minute + timedelta(seconds=20))
    put(cloudwatch, "Requests", 10, minute + timedelta(seconds=65))
    put(cloudwatch, "BadRequests", 3, minute + timedelta(seconds=70))
    name = f"{STACK}-bad-request-rate"
    assert state(cloudwatch, name)[0] == "OK"

    # when the evaluator runs
    changes = runtime.alarms.evaluate(NOW)

    # then the alarm is in ALARM, for the reason CloudWatch would give
    assert [(c.alarm, c.old, c.new) for c in changes] == [(name, "OK", "ALARM")]
    value, reason = state(cloudwatch, name)
    assert value == "ALARM"
    assert reason == (
        "Threshold Crossed: 2 out of the last 2 datapoints [0.3 (04/03/24 07:08:00), "
        "0.5 (04/03/24 07:07:00)] was greater than the threshold (0.2) "
        "(minimum 2 datapoints for OK -> ALARM transition)."
    )
    assert changes[0].notified == (f"{STACK}-AlarmTopic",)

    # and the function subscribed to the alarm topic receives CloudWatch's SNS message
    [notification] = delivered(runtime, name, 1)
    SnsModel.model_validate(recorded("metrics")[-1]["event"])
    assert notification["Subject"] == f'ALARM: "{name}" in US East (N. Virginia)'
    message = json.loads(notification["Message"])
    assert message["AlarmName"] == name
    assert message["AlarmDescription"] == "Bad request share above 20 percent"
    assert message["NewStateValue"] == "ALARM"
    assert message["OldStateValue"] == "OK"
    assert message["NewStateReason"] == reason
    assert message["Region"] == "US East (N. Virginia)"
    assert message["AWSAccountId"] == "123456789012"
    assert message["StateChangeTime"] == "2024-03-04T07:08:30.000+0000"
    trigger = message["Trigger"]
    assert (trigger["Period"], trigger["EvaluationPeriods"], trigger["Threshold"]) == (60, 2, 0.2)
    assert [m["Id"] for m in trigger["Metrics"]] == ["bad", "total", "rate"]
    assert trigger["Metrics"][2]["Expression"] == "IF(total > 0, FILL(bad, 0) / total, 0)"
    assert trigger["Metrics"][0]["MetricStat"]["Metric"]["Dimensions"] == [
        {"value": "fixture", "name": "service"}
    ]

    # when the bad requests stop, the alarm returns to OK (no OKActions: nobody is told)
    later = NOW + timedelta(minutes=10)
    changes = runtime.alarms.evaluate(later)
    assert [(c.alarm, c.new, c.notified) for c in changes] == [(name, "OK", ())]


def test_plain_alarm_round_trip_with_ok_action(runtime, cloudwatch):
    name = f"{STACK}-ErrorsAlarm"
    at = NOW + timedelta(hours=1)
    put(cloudwatch, "Errors", 6, at - timedelta(seconds=5))
    changes = runtime.alarms.evaluate(at)
    assert [(c.alarm, c.new) for c in changes] == [(name, "ALARM")]
    changes = runtime.alarms.evaluate(at + timedelta(minutes=5))
    assert [(c.alarm, c.new, c.notified) for c in changes] == [
        (name, "OK", (f"{STACK}-AlarmTopic",))
    ]
    notifications = delivered(runtime, name, 2)
    subjects = [n["Subject"] for n in notifications]
    assert subjects == [
        f'ALARM: "{name}" in US East (N. Virginia)',
        f'OK: "{name}" in US East (N. Virginia)',
    ]
    trigger = json.loads(notifications[-1]["Message"])["Trigger"]
    assert (trigger["MetricName"], trigger["Statistic"], trigger["StatisticType"]) == (
        "Errors",
        "SUM",
        "Statistic",
    )


def test_queue_depth_alarm_sees_the_dead_letter_queue(runtime, cloudwatch):
    # moto publishes no AWS/SQS metrics: the evaluator samples the queue it watches
    name = f"{STACK}-DeadLetterDepthAlarm"
    at = NOW + timedelta(hours=2)
    assert runtime.alarms.evaluate(at) == []
    sqs = aws_client("sqs", runtime.endpoint_url)
    sqs.send_message(QueueUrl=runtime.stack.physical_id("WorkDeadLetterQueue"), MessageBody="x")
    changes = runtime.alarms.evaluate(at + timedelta(minutes=1))
    assert [(c.alarm, c.new) for c in changes] == [(name, "ALARM")]
    assert state(cloudwatch, name)[1].startswith(
        "Threshold Crossed: 1 out of the last 1 datapoints [1.0"
    )


T = [datetime(2024, 1, 1, 0, minute, tzinfo=UTC) for minute in range(3)]


@pytest.mark.parametrize(
    ("values", "m", "missing", "current", "expected"),
    [
        ([6.0, 6.0, 6.0], 3, "missing", "OK", "ALARM"),
        ([6.0, 1.0, 6.0], 3, "missing", "OK", "OK"),
        ([6.0, 1.0, 6.0], 2, "missing", "OK", "ALARM"),  # M out of N
        ([None, None, None], 3, "missing", "OK", "INSUFFICIENT_DATA"),
        ([None, None, None], 3, "notBreaching", "ALARM", "OK"),
        ([None, None, None], 3, "breaching", "OK", "ALARM"),
        ([None, None, None], 3, "ignore", "ALARM", "ALARM"),
        ([None, 6.0, None], 3, "breaching", "OK", "ALARM"),
        ([None, 6.0, None], 3, "notBreaching", "OK", "OK"),
        ([None, 6.0, None], 1, "missing", "OK", "ALARM"),
    ],
)
def test_decide_follows_cloudwatch_rules(values, m, missing, current, expected):
    decision = decide(values, 5.0, "GreaterThanThreshold", m, missing, current, T)
    assert decision.state == expected
