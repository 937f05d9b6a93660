"""The request pipeline end to end: api_call and retry_worker logic on moto and the simulator.

Every outcome class goes through both paths; time moves only when a test (or a backoff
sleep) moves the shared fake clock, so delays are exact and nothing sleeps.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from kisi_gateway.core.records import RecordStatus, RetryMessage
from kisi_gateway.pipeline.calls import parse_call
from kisi_gateway.pipeline.forwarding import request_id_for
from kisi_sim import DEMO_KEY, SimConfig
from tests.harness import gateway, wait_for

pytestmark = pytest.mark.xdist_group("moto")

ASYNC = {"Prefer": "respond-async"}


def test_success_passes_through_unchanged_without_a_record(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        reply = gw.call("GET", "/locks", query=[("limit", "10"), ("offset", "115")])
        assert reply.status == 200
        assert reply.headers["X-Collection-Range"] == "115-124/120"
        assert reply.headers["Content-Type"].startswith("application/json")
        assert reply.headers["X-Gateway-Attempts"] == "1"
        assert [lock["id"] for lock in reply.json()] == [116, 117, 118, 119, 120]
        assert gw.dynamodb.scan(TableName="requests")["Count"] == 0
        assert gw.sink.total("AttemptsByOutcome", Outcome="success") == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "shape"),
    [
        ("GET", "/locks/99999", None, 403, "error"),  # Kisi answers 403 for unknown ids
        ("POST", "/users", {"user": {"name": "Bad", "email": "not-an-address"}}, 422, "errors"),
        ("PATCH", "/groups/424242", {"group": {"name": "x"}}, 403, "error"),
    ],
)
def test_client_errors_pass_through_and_are_never_retried(
    monkeypatch, method, path, body, status, shape
) -> None:
    with gateway(monkeypatch) as gw:
        reply = gw.call(method, path, body=body)
        assert reply.status == status
        assert shape in reply.json()
        assert gw.kisi_calls() == 1
        assert gw.queue_depth("queue") == 0
        template = "/" + path.split("/")[1] + ("/{id}" if path.count("/") > 1 else "")
        assert gw.sink.total("BadRequestsByRoute", Route=f"{method} {template}") == 1


def test_server_error_retried_inline_within_the_wait(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        gw.sim.update_faults({"outage_seconds": 1.5})
        reply = gw.call("GET", "/locks/1", headers={"Prefer": "wait=10"})
        assert reply.status == 200
        assert int(reply.headers["X-Gateway-Attempts"]) >= 2
        assert gw.sink.total("AttemptsByOutcome", Outcome="server_error") >= 1


def test_rate_limited_then_success_after_retry_after(monkeypatch) -> None:
    sim = SimConfig(rate_per_s=1.0, burst=1.0)
    with gateway(monkeypatch, env={"SEND_RATE": "50"}, sim_config=sim) as gw:
        assert gw.call("GET", "/locks/1").status == 200
        deferred = gw.call("GET", "/locks/2", headers=ASYNC)
        assert deferred.status == 202
        doc = deferred.json()
        assert doc["last_outcome"] == {"class": "rate_limited", "status": 429}
        record = gw.record(doc["request_id"])
        first = record.attempts[0]
        assert first.delay_s is not None
        assert first.delay_s >= 1
        assert record.next_attempt_at == first.at + first.delay_s
        assert deferred.headers["Location"] == f"/Prod/requests/{doc['request_id']}"
        # Not due yet: nothing to deliver, nothing sent.
        assert gw.deliver() == []
        gw.run_retries()
        done = gw.record(doc["request_id"])
        assert done.status is RecordStatus.SUCCEEDED
        assert done.response is not None
        assert done.response.status == 200
        assert [a.cls for a in done.attempts] == ["rate_limited", "success"]
        assert done.attempts[1].at >= first.at + first.delay_s


def test_server_errors_until_exhaustion_end_expired_in_the_dlq(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        gw.sim.update_faults({"error_rate": 1.0})
        doc = gw.call("GET", "/locks", headers=ASYNC).json()
        gw.run_retries()
        record = gw.record(doc["request_id"])
        assert record.status is RecordStatus.EXPIRED
        assert record.reason == "attempts_exhausted"
        assert len(record.attempts) == 12 == gw.kisi_calls()
        delays = [a.delay_s for a in record.attempts[:-1]]
        assert all(d is not None and d >= 1 for d in delays)
        dead = gw.receive("dlq")
        assert len(dead) == 1
        assert json.loads(dead[0]["Body"])["request_id"] == doc["request_id"]
        assert dead[0]["MessageAttributes"]["reason"]["StringValue"] == "attempts_exhausted"
        # The DLQ message carries no key.
        assert "sim-demo-key" not in dead[0]["Body"]


def test_unlock_is_never_sent_after_its_deadline(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        gw.sim.update_faults({"outage_seconds": 3600})
        start = gw.clock.now()
        doc = gw.call("POST", "/locks/1/unlock", headers=ASYNC).json()
        assert doc["deadline"] == start + 30
        gw.run_retries()
        record = gw.record(doc["request_id"])
        assert record.status is RecordStatus.EXPIRED
        assert len(record.attempts) <= 4
        sent_at = [entry["at"] for entry in gw.sim.stats()["requests"]]
        assert sent_at
        assert max(sent_at) <= start + 30
        assert gw.sim.calls("POST", "/locks/1/unlock") == []


def test_a_late_delivery_of_an_unlock_expires_without_sending(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        gw.sim.update_faults({"outage_seconds": 5})
        doc = gw.call("POST", "/locks/3/unlock", headers=ASYNC).json()
        calls_before = gw.kisi_calls()
        gw.clock.advance(45)  # the worker was down, say: the message arrives late
        gw.deliver()
        record = gw.record(doc["request_id"])
        assert (record.status, record.reason) == (RecordStatus.EXPIRED, "deadline")
        assert gw.kisi_calls() == calls_before
        assert len(gw.receive("dlq")) == 1


def test_retry_after_longer_than_the_deadline_expires_at_once(monkeypatch) -> None:
    sim = SimConfig(rate_per_s=0.02, burst=1.0)  # the next token is 50 s away
    with gateway(monkeypatch, env={"SEND_RATE": "50"}, sim_config=sim) as gw:
        gw.call("GET", "/locks/1")
        reply = gw.call("POST", "/locks/4/unlock")
        assert reply.status == 429  # Kisi's own answer, passed through: nothing more to try
        assert reply.headers["X-Gateway-Attempts"] == "1"
        assert int(reply.headers["Retry-After"]) > 30


def test_duplicate_delivery_after_success_does_not_call_kisi(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        gw.sim.update_faults({"outage_seconds": 2})
        doc = gw.call("POST", "/locks/5/unlock", headers=ASYNC).json()
        gw.run_retries()
        assert gw.record(doc["request_id"]).status is RecordStatus.SUCCEEDED
        calls = gw.kisi_calls()
        record = gw.record(doc["request_id"])
        copy = RetryMessage(doc["request_id"], "POST", "/locks/5/unlock", (), None, 1,
                            record.deadline, "unlock", record.route, gw.clock.now())
        for _ in range(3):
            gw.sqs.send_message(QueueUrl=gw.names["queue"], MessageBody=copy.to_json())
        gw.run_retries()
        assert gw.kisi_calls() == calls
        assert len(gw.sim.calls("POST", "/locks/5/unlock")) == 1


def test_idempotency_key_repeat_returns_the_first_result(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        key = {"Idempotency-Key": "create-ada-1"}
        body = {"user": {"name": "Ada", "email": "ada@example.com"}}
        first = gw.call("POST", "/users", body=body, headers=key)
        second = gw.call("POST", "/users", body=body, headers=key)
        assert first.status == second.status == 200
        assert first.body == second.body
        assert second.headers["Idempotent-Replayed"] == "true"
        assert len(gw.sim.calls("POST", "/users")) == 1
        other = gw.call("POST", "/users", body={"user": {"name": "Bob"}}, headers=key)
        assert other.status == 422
        assert other.json()["code"] == "9e0422"
        stranger = gw.call("POST", "/users", body=body, headers=key, scope="someone-else")
        assert stranger.status == 200  # another caller's key space
        assert len(gw.sim.calls("POST", "/users")) == 2


def test_idempotency_key_repeat_while_queued_does_not_send_again(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        gw.sim.update_faults({"outage_seconds": 1.5})  # over by the third of four attempts
        key = {"Idempotency-Key": "unlock-door-6", **ASYNC}
        first = gw.call("POST", "/locks/6/unlock", headers=key)
        assert first.status == 202
        calls = gw.kisi_calls()
        second = gw.call("POST", "/locks/6/unlock", headers=key)
        assert second.status == 202
        assert second.json()["request_id"] == first.json()["request_id"]
        assert gw.kisi_calls() == calls
        gw.run_retries()
        third = gw.call("POST", "/locks/6/unlock", headers=key)
        assert third.status == 200
        assert third.json() == {"message": "Unlocked!"}
        assert len(gw.sim.calls("POST", "/locks/6/unlock")) == 1


def test_network_error_not_sent_is_retried_later(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        gw.sim.stop()
        reply = gw.call("GET", "/locks", headers=ASYNC)
        assert reply.status == 202
        assert reply.json()["last_outcome"] == {"class": "network_error", "status": None}
        assert gw.sink.total("AttemptsByOutcome", Outcome="network_error") == 1


def test_unknown_outcome_of_a_create_is_not_repeated(monkeypatch) -> None:
    with gateway(monkeypatch, env={"READ_TIMEOUT_S": "0.2"}) as gw:
        gw.sim.update_faults({"hang_ms": 600})
        reply = gw.call("POST", "/groups", body={"group": {"name": "Night shift"}})
        assert reply.status == 504
        assert reply.json()["code"] == "9e0504"
        # The simulator acts on the request after its hang: the create did happen.
        assert wait_for(lambda: len(gw.sim.calls("POST", "/groups")) == 1)


def test_worker_ends_on_a_client_error_with_kisis_answer(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        gw.sim.update_faults({"outage_seconds": 3})
        doc = gw.call("PATCH", "/users/77777", body={"user": {"name": "x"}}, headers=ASYNC).json()
        gw.run_retries()
        record = gw.record(doc["request_id"])
        assert record.status is RecordStatus.FAILED
        assert record.response is not None
        assert record.response.status == 403
        assert [a.cls for a in record.attempts][-1] == "client_error"
        public = record.public()
        assert public["response"] is not None
        assert "error" in json.loads(public["response"]["body"])


def test_lookup_answers_only_its_caller(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        gw.sim.update_faults({"outage_seconds": 3})
        doc = gw.call("GET", "/places", headers=ASYNC).json()
        mine = gw.forwarder.lookup(doc["request_id"], gw.context())
        assert mine.status == 200
        assert mine.json()["status"] == "queued"
        theirs = gw.forwarder.lookup(doc["request_id"], gw.context(scope="other"))
        assert theirs.status == 404
        assert gw.forwarder.lookup("nope", gw.context()).json()["code"] == "9e0440"


def abandon(gw, method: str, path: str, key: str, body=None, after_s: float = 60) -> str:
    """Leave a keyed request as a Lambda that died mid-send would: 'sending', lease lapsed."""
    call = parse_call(method=method, path=path, query=[], body=body, is_base64=False,
                      headers={"Idempotency-Key": key}, policies=gw.settings.policies,
                      max_body_bytes=10_000, default_wait_s=5, max_wait_s=25)
    context = gw.context()
    who = gw.forwarder.callers.who(context.api_key_id, None, call.route.key)
    request_id = request_id_for(who.scope, key)
    record = gw.forwarder.new_record(call, who, request_id, gw.clock.now())
    assert gw.forwarder.records.create(replace(record, claim_until=gw.clock.now() + 1))
    gw.clock.advance(after_s)
    return request_id


def test_a_vanished_first_call_of_a_create_ends_as_unknown_outcome(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        body = json.dumps({"group": {"name": "Ghost"}})
        request_id = abandon(gw, "POST", "/groups", "ghost-1", body)
        reply = gw.call("POST", "/groups", body=body, headers={"Idempotency-Key": "ghost-1"})
        assert reply.status == 504
        assert reply.json()["code"] == "9e0504"
        assert gw.kisi_calls() == 0  # it may have been applied: never sent again
        record = gw.record(request_id)
        assert (record.status, record.reason) == (RecordStatus.FAILED, "unknown_outcome")


def test_a_vanished_first_call_of_an_unlock_is_sent_by_the_repeat(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        request_id = abandon(gw, "POST", "/locks/9/unlock", "door-9", after_s=10)
        repeat = gw.call("POST", "/locks/9/unlock", headers={"Idempotency-Key": "door-9"})
        assert repeat.status == 200
        assert repeat.headers["X-Gateway-Request-Id"] == request_id
        assert len(gw.sim.calls("POST", "/locks/9/unlock")) == 1
        assert gw.record(request_id).status is RecordStatus.SUCCEEDED


def test_a_vanished_unlock_repeated_after_its_deadline_is_not_sent(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        request_id = abandon(gw, "POST", "/locks/9/unlock", "door-9", after_s=60)
        repeat = gw.call("POST", "/locks/9/unlock", headers={"Idempotency-Key": "door-9"})
        assert repeat.status == 504
        assert repeat.json()["code"] == "9e0508"
        assert gw.kisi_calls() == 0
        record = gw.record(request_id)
        assert (record.status, record.reason) == (RecordStatus.EXPIRED, "deadline")


def test_a_client_unlock_that_runs_out_of_attempts_still_says_when_to_retry(monkeypatch) -> None:
    """A Kisi client's unlock in an outage: with the shortest delays its four attempts end
    before its wait does, and Kisi's 503 (which has no Retry-After) is passed on with one."""
    with gateway(monkeypatch) as gw:
        gw.rng.random = lambda: 0.0  # every delay the policy's minimum, 1 s
        _, gw.forwarder, _ = gw.build_lambda(gw.dynamodb, gw.sqs)
        gw.sim.update_faults({"outage_seconds": 3600})
        reply = gw.call("POST", "/locks/1/unlock", authorization=f"KISI-LOGIN {DEMO_KEY}")
        assert reply.status == 503
        assert reply.headers["X-Gateway-Attempts"] == "4"
        assert reply.headers["Retry-After"] == "8"  # the unlock curve's next ceiling: 8 s cap
        assert gw.kisi_calls("POST", "/locks/1/unlock") == 4
