"""End to end: a revoked key -> 401 storm -> guard and alarm -> 503s -> recovery.

A module of its own, so its stack starts with no bad requests counted and no alarm fired.
"""

from __future__ import annotations

import pytest

from kisi_sim import DEMO_KEY
from tests.e2e.conftest import LocalStack, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_revoked_key_pauses_the_account_then_recovers(stack: LocalStack) -> None:
    sns, sqs = stack.client("sns"), stack.client("sqs")
    inbox = sqs.create_queue(QueueName="e2e-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=stack.topic_arn("NotifyTopic"), Protocol="sqs", Endpoint=inbox_arn,
                  Attributes={"RawMessageDelivery": "true"})

    stack.sim.update_faults({"revoked_keys": [DEMO_KEY]})
    statuses = [stack.request("GET", f"/kisi/locks/{n}").status_code for n in range(1, 6)]
    assert statuses == [401] * 5
    sent = stack.sim.stats()["total"]

    paused = stack.request("POST", "/kisi/locks/1/unlock")
    assert paused.status_code == 503
    assert paused.json()["code"] == "9e0503"
    assert int(paused.headers["Retry-After"]) >= 1
    assert stack.sim.stats()["total"] == sent  # the guard answered; Kisi saw nothing

    cloudwatch = stack.client("cloudwatch")
    volume_alarm = "kisi-gateway-bad-request-volume"

    def alarm_state():
        alarms = cloudwatch.describe_alarms(AlarmNames=[volume_alarm])["MetricAlarms"]
        return alarms and alarms[0]["StateValue"] == "ALARM"

    assert eventually(alarm_state, timeout_s=60), "the bad-request volume alarm did not fire"

    def notification():
        messages = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10).get("Messages", [])
        return [m["Body"] for m in messages if volume_alarm in m["Body"]]

    texts = eventually(notification, timeout_s=60)
    assert texts, "no notification reached the notify topic"
    assert "GET /locks/{id}: 5 (401x5)" in texts[0], texts[0]
    # The alarm names what happened; the pause is the fast path's, for this key's identity only.
    assert "Guard: 5 of 5 bad requests were 401" in texts[0], texts[0]
    assert "1 identity scope(s) paused now" in texts[0], texts[0]

    stack.sim.update_faults({"revoked_keys": []})  # an operator fixed the key

    def recovered():
        return stack.request("GET", "/kisi/locks/1").status_code == 200

    assert eventually(recovered, timeout_s=60, every_s=0.5)
    assert stack.request("POST", "/kisi/locks/1/unlock").status_code == 200
