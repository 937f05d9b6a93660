"""The sample events are real-shaped: Powertools' data classes read them as AWS sends them."""

import json

from aws_lambda_powertools.utilities.data_classes import (
    APIGatewayProxyEvent,
    EventBridgeEvent,
    SNSEvent,
    SQSEvent,
)

from kisi_gateway.core.policy import PolicyTable


def test_unlock_event(event) -> None:
    api = APIGatewayProxyEvent(event("api_unlock"))
    assert (api.http_method, api.resource) == ("POST", "/kisi/{proxy+}")
    assert api.path_parameters == {"proxy": "locks/42/unlock"}
    assert api.headers["Idempotency-Key"].startswith("door-42")
    assert json.loads(api.body)["lock"] == {"proximity_proof": None}
    route = PolicyTable.default().resolve(api.http_method, "/" + api.path_parameters["proxy"])
    assert route.policy.name == "unlock"


def test_paginated_list_event(event) -> None:
    api = APIGatewayProxyEvent(event("api_list_locks"))
    assert api.query_string_parameters == {"limit": "10", "offset": "20"}
    assert api.request_context.stage == "Prod"
    assert api.body is None


def test_retry_batch_event(event) -> None:
    records = list(SQSEvent(event("sqs_retry_batch")).records)
    assert len(records) == 2
    bodies = [json.loads(r.body) for r in records]
    assert {b["policy"] for b in bodies} == {"read", "unlock"}
    assert records[1].attributes.approximate_receive_count == "2"
    assert all("key" not in r.body.lower() for r in records)  # never the Kisi key


def test_schedule_and_alarm_events(event) -> None:
    schedule = EventBridgeEvent(event("schedule"))
    assert schedule.detail_type == "Scheduled Event"
    sns = next(iter(SNSEvent(event("alarm_sns")).records)).sns
    alarm = json.loads(sns.message)
    assert (alarm["NewStateValue"], alarm["OldStateValue"]) == ("ALARM", "OK")
    bridge = EventBridgeEvent(event("alarm_eventbridge"))
    assert bridge.detail["state"]["value"] == "ALARM"
