"""Error tracking on moto: outcome metrics, the metrics Lambda's rates and alarms, the guard."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from kisi_gateway.core.alarm_plan import route_alarm_name
from kisi_gateway.core.breaker import route_scope
from kisi_gateway.core.outcome import Transport, classify_status, classify_transport
from kisi_gateway.pipeline.monitoring import AlarmChange, Monitor, parse_alarm_event
from kisi_gateway.pipeline.telemetry import EmfSink, Telemetry
from kisi_gateway.stores.cloudwatch import CloudWatchAlarms, MetricsReader
from kisi_gateway.stores.guard import DynamoGuard
from kisi_sim import DEMO_KEY
from local.emf import emf_to_metric_data, put_metric_data
from tests.harness import REGION, gateway

pytestmark = pytest.mark.xdist_group("moto")
SERVICE = "kisi-gateway"
PREFIX = "kisi-gateway"


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", SERVICE)
    with mock_aws():
        yield


def make_monitor(now: float) -> tuple[Monitor, dict[str, str]]:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName="guard", BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "scope", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "scope", "KeyType": "HASH"}],
    )
    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    alarm_topic = sns.create_topic(Name="alarms")["TopicArn"]
    notify_topic = sns.create_topic(Name="notify")["TopicArn"]
    inbox = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=notify_topic, Protocol="sqs", Endpoint=inbox_arn,
                  Attributes={"RawMessageDelivery": "true"})
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    monitor = Monitor(
        reader=MetricsReader(cloudwatch, "KisiGateway", SERVICE),
        alarms=CloudWatchAlarms(cloudwatch, "KisiGateway", PREFIX),
        guard=DynamoGuard(dynamodb, "guard"),
        sns=sns, notify_topic_arn=notify_topic, alarm_actions=(alarm_topic,),
        prefix=PREFIX, min_volume=20, route_volume_threshold=20,
    )
    return monitor, {"inbox": inbox, "alarm_topic": alarm_topic}


IDENTITY = "id-0a1b2c3d4e5f6a7b"  # a credential the fast path paused
OTHER = "id-9f8e7d6c5b4a3f2e"  # anybody else


def emit_outcomes(capsys, telemetry: Telemetry, sequence) -> None:
    """Count attempts through Powertools EMF, then let the local EMF path store them."""
    capsys.readouterr()
    for route, outcome, code in sequence:
        telemetry.attempt(route, outcome, code, "acme", "caller")
    lines = capsys.readouterr().out.splitlines()
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    for line in lines:
        put_metric_data(cloudwatch, emf_to_metric_data(line))


def test_outcome_metrics_rates_and_notification(aws, capsys) -> None:
    now = datetime.now(UTC).timestamp()
    monitor, names = make_monitor(now)
    telemetry = Telemetry(EmfSink("KisiGateway"))
    unlock, users = "POST /locks/{id}/unlock", "PATCH /users/{id}"
    sequence = (
        [(unlock, classify_status(200), None)] * 20
        + [(users, classify_status(403), "b4d0a1")] * 12
        + [(users, classify_status(422), "000000")] * 3
        + [(unlock, classify_status(429), "000000")] * 2
        + [(unlock, classify_status(503), None)] * 2
        + [(unlock, classify_transport(Transport.READ_TIMEOUT), None)]
    )
    emit_outcomes(capsys, telemetry, sequence)

    reader = monitor.reader
    start = now - 300
    assert reader.total("Attempts", start, now + 60) == 40
    assert reader.total("BadRequests", start, now + 60) == 17
    assert reader.total("BadRequestsByRoute", start, now + 60, Route=users) == 15
    assert reader.total("AttemptsByOutcome", start, now + 60, Outcome="server_error") == 2
    assert reader.total("RateLimited", start, now + 60) == 2

    summary = monitor.on_schedule(now + 60)
    assert summary["bad_request_rate"] == pytest.approx(100 * 17 / 40)
    assert summary["routes"] == sorted([unlock, users])
    rate = next(d for d in monitor.published
                if d["MetricName"] == "BadRequestRate" and len(d["Dimensions"]) == 1)
    assert rate["Value"] == pytest.approx(42.5)

    change = AlarmChange(route_alarm_name(PREFIX, users), "ALARM", "OK", "Threshold Crossed",
                         users)
    result = monitor.on_alarm(change, now + 60)
    # The alarm sees the whole fleet: it describes, it never pauses (pauses are per identity).
    assert result["guard"] == (f"15 of 15 bad requests were 403/404/422 on {users}: callers "
                               "send ids or bodies Kisi rejects (nothing paused)")
    assert monitor.guard.states(now + 61) == []
    assert monitor.guard.check(IDENTITY, users, now + 61) is None

    sqs = boto3.client("sqs", region_name=REGION)
    text = sqs.receive_message(QueueUrl=names["inbox"])["Messages"][0]["Body"]
    assert f"{users}: 15 (403x12, 422x3)" in text
    assert "403 b4d0a1 x12" in text
    assert "acme (caller credential): 17" in text  # the notification names the tenant
    assert "Guard: 15 of 15 bad requests were 403/404/422" in text


def test_small_volumes_do_not_count_as_a_rate(aws, capsys) -> None:
    now = datetime.now(UTC).timestamp()
    monitor, _ = make_monitor(now)
    emit_outcomes(capsys, Telemetry(EmfSink("KisiGateway")),
                  [("GET /locks", classify_status(200), None),
                   ("GET /locks", classify_status(404), "000000")])
    assert monitor.on_schedule(now + 60)["bad_request_rate"] == 0.0


def test_alarm_reconciliation_is_idempotent_and_fixes_drift(aws, capsys) -> None:
    now = datetime.now(UTC).timestamp()
    monitor, names = make_monitor(now)
    emit_outcomes(capsys, Telemetry(EmfSink("KisiGateway")),
                  [("GET /locks", classify_status(200), None),
                   ("POST /locks/{id}/unlock", classify_status(200), None)])
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    cloudwatch.put_metric_alarm(  # a stale alarm for a route that no longer exists
        AlarmName=route_alarm_name(PREFIX, "GET /gone"), Namespace="KisiGateway",
        MetricName="BadRequests", Statistic="Sum", Period=300, EvaluationPeriods=1,
        Threshold=20, ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    cloudwatch.put_metric_alarm(  # the template's alarms are never touched
        AlarmName=f"{PREFIX}-bad-request-volume", Namespace="KisiGateway",
        MetricName="BadRequests", Statistic="Sum", Period=300, EvaluationPeriods=1,
        Threshold=50, ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    first = monitor.on_schedule(now + 60)
    assert len(first["alarms_created"]) == 2
    assert first["alarms_deleted"] == [route_alarm_name(PREFIX, "GET /gone")]
    second = monitor.on_schedule(now + 120)
    assert (second["alarms_created"], second["alarms_updated"], second["alarms_deleted"]) == (
        [], [], [])
    name = route_alarm_name(PREFIX, "GET /locks")
    cloudwatch.put_metric_alarm(  # someone edits the threshold by hand
        AlarmName=name, Namespace="KisiGateway", MetricName="BadRequestsByRoute",
        Statistic="Sum", Period=300, EvaluationPeriods=1, Threshold=999.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    third = monitor.on_schedule(now + 180)
    assert third["alarms_updated"] == [name]
    fixed = next(a for a in monitor.alarms.managed() if a["AlarmName"] == name)
    assert fixed["Threshold"] == 20.0
    assert fixed["AlarmActions"] == [names["alarm_topic"]]
    template_alarm = cloudwatch.describe_alarms(AlarmNames=[f"{PREFIX}-bad-request-volume"])
    assert template_alarm["MetricAlarms"][0]["Threshold"] == 50.0


def test_401_storm_opens_the_guard_stops_kisi_calls_and_recovers(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        gw.sim.update_faults({"revoked_keys": [DEMO_KEY]})
        statuses = [gw.call("GET", "/locks").status for _ in range(5)]
        assert statuses == [401] * 5
        calls = gw.kisi_calls()
        paused = gw.call("POST", "/locks/1/unlock")
        assert paused.status == 503
        assert paused.json()["code"] == "9e0503"
        assert int(paused.headers["Retry-After"]) >= 1
        assert gw.kisi_calls() == calls  # nothing reached Kisi while paused
        assert gw.sink.total("GuardPaused") == 1

        gw.sim.update_faults({"revoked_keys": []})  # an operator put a valid key in place
        gw.clock.advance(int(paused.headers["Retry-After"]))
        probe = gw.call("GET", "/locks")  # the half-open probe
        assert probe.status == 200
        assert gw.call("POST", "/locks/1/unlock").status == 200
        guard = DynamoGuard(gw.dynamodb, "guard")
        account = next(s for s in guard.states(gw.clock.now()) if s["scope"] == gw.identity())
        assert account["state"] == "closed"


def test_queued_retries_wait_for_the_guard_without_spending_attempts(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        gw.sim.update_faults({"outage_seconds": 2})
        doc = gw.call("GET", "/users/1", headers={"Prefer": "respond-async"}).json()
        guard = DynamoGuard(gw.dynamodb, "guard")
        paused = route_scope(gw.identity(), "GET /users/{id}")
        guard.open(paused, "403 storm", gw.clock.now(), cooldown_s=600)
        calls = gw.kisi_calls()
        gw.clock.advance(30)
        gw.deliver()  # the retry is due, but the route is paused: it waits
        assert gw.kisi_calls() == calls
        assert len(gw.record(doc["request_id"]).attempts) == 1
        guard.close(paused, gw.clock.now())
        gw.run_retries()
        record = gw.record(doc["request_id"])
        assert record.status.value == "succeeded"
        assert len(record.attempts) == 2


def test_alarm_events_parse_from_sns_and_eventbridge(event) -> None:
    sns = parse_alarm_event(event("alarm_sns"))
    bridge = parse_alarm_event(event("alarm_eventbridge"))
    assert [c.name for c in sns] == [c.name for c in bridge] == ["kisi-gateway-bad-request-rate"]
    assert sns[0].new_state == bridge[0].new_state == "ALARM"
    assert parse_alarm_event(event("schedule")) == []
    assert parse_alarm_event({"Records": [{"Sns": {"Message": "not json"}}]}) == []


@pytest.mark.parametrize(
    ("dimensions", "route"),
    [
        ([{"name": "Route", "value": "GET /locks"}], "GET /locks"),  # as SNS alarm messages
        ([{"Name": "Route", "Value": "GET /locks"}], "GET /locks"),  # as the API writes them
        ([{"name": "service", "value": "kisi-gateway"}], None),
        ([], None),
    ],
)
def test_an_alarm_message_names_its_route(dimensions, route) -> None:
    change = AlarmChange.from_sns_message({
        "AlarmName": "x", "NewStateValue": "ALARM", "OldStateValue": "OK",
        "NewStateReason": "threshold crossed", "Trigger": {"Dimensions": dimensions},
    })
    assert (change.name, change.new_state, change.old_state) == ("x", "ALARM", "OK")
    assert change.reason == "threshold crossed"
    assert change.route == route


def test_an_alarm_on_a_401_storm_names_it_and_pauses_nobody(aws, capsys) -> None:
    now = datetime.now(UTC).timestamp()
    monitor, _ = make_monitor(now)
    emit_outcomes(capsys, Telemetry(EmfSink("KisiGateway")),
                  [("GET /locks/{id}", classify_status(401), "a1c402")] * 5)
    monitor.guard.open(IDENTITY, "5 consecutive 401", now)  # the fast path's own pause
    change = AlarmChange(f"{PREFIX}-bad-request-volume", "ALARM", "OK", "Threshold", None)
    # The window must hold the metrics' own timestamps (taken as they were emitted), however
    # long emitting took on a busy machine.
    result = monitor.on_alarm(change, max(now + 5, datetime.now(UTC).timestamp() + 1))
    assert result["guard"].startswith("5 of 5 bad requests were 401: a key looks expired")
    assert result["guard"].endswith("(1 identity scope(s) paused now)")
    assert monitor.guard.check(OTHER, "GET /locks/{id}", now + 6) is None  # nobody else
    assert monitor.guard.check(IDENTITY, "GET /locks/{id}", now + 6) is not None


def test_a_sum_up_to_now_counts_this_seconds_datapoints(aws) -> None:
    """The e2e alarm once showed 3 of 5 bad requests: the last two were stamped in the second
    the metrics Lambda read in, and CloudWatch's EndTime is exclusive and whole-second."""
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    now = datetime.now(UTC).replace(microsecond=900_000)
    for offset_s in (-120.0, -0.5, 0.0):  # two minutes ago, this second, now exactly
        cloudwatch.put_metric_data(Namespace="KisiGateway", MetricData=[{
            "MetricName": "BadRequests", "Value": 1, "Unit": "Count",
            "Timestamp": datetime.fromtimestamp(now.timestamp() + offset_s, UTC),
            "Dimensions": [{"Name": "service", "Value": SERVICE}],
        }])
    reader = MetricsReader(cloudwatch, "KisiGateway", SERVICE)
    assert reader.total("BadRequests", now.timestamp() - 300, now.timestamp()) == 3
    assert reader.total("BadRequests", now.timestamp() - 60, now.timestamp()) == 2
