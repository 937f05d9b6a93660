"""End to end over HTTP: a caller's view of the gateway on the local stack.

These run in real time against real services on 127.0.0.1 (moto, the simulator, the local
API server and SQS poller), so they poll for an outcome within a bound instead of jumping a
fake clock; the stack is configured for short delays (see conftest.py).
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.e2e.conftest import DIRECT_KEY, LocalStack, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(autouse=True)
def clean_faults(stack: LocalStack):
    yield
    stack.sim.update_faults({"error_rate": 0.0, "outage_until": None, "revoked_keys": []})


def direct(stack: LocalStack, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"KISI-LOGIN {DIRECT_KEY}", "Accept": "application/json"}
    return requests.request(method, stack.sim.url + path, headers=headers, timeout=10, **kwargs)


def terminal(stack: LocalStack, location: str) -> dict:
    def check():
        record = stack.request("GET", location.removeprefix("/Prod")).json()
        return record if record["status"] in ("succeeded", "failed", "expired") else None

    record = eventually(check, timeout_s=40)
    assert record, f"{location} did not end in time"
    return record


def test_callers_need_the_api_key(stack: LocalStack) -> None:
    before = stack.sim.stats()["total"]
    response = requests.get(stack.url + "/kisi/locks", timeout=10)
    assert response.status_code == 403
    assert response.json() == {"message": "Forbidden"}
    wrong = requests.get(stack.url + "/kisi/locks", headers={"x-api-key": "guess"}, timeout=10)
    assert wrong.status_code == 403
    assert stack.sim.stats()["total"] == before


def test_pagination_and_error_bodies_pass_through_unchanged(stack: LocalStack) -> None:
    for method, path, body in [
        ("GET", "/locks?limit=7&offset=115", None),
        ("GET", "/locks/99999", None),
        ("POST", "/users", {"user": {"name": "No Email"}}),
        ("GET", "/role_assignments?limit=3", None),
    ]:
        via_gateway = stack.request(method, "/kisi" + path, json=body)
        straight = direct(stack, method, path, json=body)
        assert via_gateway.status_code == straight.status_code
        assert via_gateway.content == straight.content
        assert via_gateway.headers.get("X-Collection-Range") == straight.headers.get(
            "X-Collection-Range")
        assert via_gateway.headers["X-Gateway-Attempts"] == "1"
    assert stack.request("GET", "/kisi/locks?limit=7&offset=115").headers[
        "X-Collection-Range"] == "115-121/120"


def test_deferred_request_is_polled_until_it_succeeds(stack: LocalStack) -> None:
    # Long enough that the call surely meets the outage on a loaded machine; the queue's
    # retry then finds Kisi back (polled, not slept).
    stack.sim.update_faults({"outage_seconds": 4})
    accepted = stack.request("POST", "/kisi/locks/7/unlock", headers=ASYNC)
    assert accepted.status_code == 202, (accepted.headers, accepted.text)
    doc = accepted.json()
    assert doc["status"] == "queued"
    assert doc["last_outcome"] == {"class": "server_error", "status": 503}
    assert accepted.headers["Location"] == f"/Prod/requests/{doc['request_id']}"
    assert int(accepted.headers["Retry-After"]) >= 1
    record = terminal(stack, accepted.headers["Location"])
    assert record["status"] == "succeeded"
    assert json.loads(record["response"]["body"]) == {"message": "Unlocked!"}
    assert [a["class"] for a in record["attempts"]][-1] == "success"
    assert len(stack.sim.calls("POST", "/locks/7/unlock")) == 1


def test_outage_then_retries_then_success(stack: LocalStack) -> None:
    stack.sim.update_faults({"outage_seconds": 2.5})
    accepted = stack.request("GET", "/kisi/places/1", headers=ASYNC)
    assert accepted.status_code == 202
    record = terminal(stack, accepted.headers["Location"])
    assert record["status"] == "succeeded"
    assert len(record["attempts"]) >= 2
    assert all(a["class"] == "server_error" for a in record["attempts"][:-1])


def test_exhaustion_ends_expired_in_the_dead_letter_queue(stack: LocalStack) -> None:
    stack.sim.update_faults({"error_rate": 1.0})
    accepted = stack.request("GET", "/kisi/groups", headers=ASYNC)
    request_id = accepted.json()["request_id"]
    record = terminal(stack, accepted.headers["Location"])
    assert (record["status"], record["reason"]) == ("expired", "attempts_exhausted")
    assert len(record["attempts"]) == 3  # this stack's read policy: 3 attempts
    sqs = stack.client("sqs")
    dlq = stack.queue_url("RetryDLQ")

    def dead_lettered():
        messages = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10,
                                       MessageAttributeNames=["All"]).get("Messages", [])
        return [m for m in messages if json.loads(m["Body"])["request_id"] == request_id]

    found = eventually(dead_lettered, timeout_s=10)
    assert found
    assert found[0]["MessageAttributes"]["reason"]["StringValue"] == "attempts_exhausted"


def test_the_gateway_recovers_when_the_embedded_aws_restarts(stack: LocalStack) -> None:
    """Last in the module: it empties moto. The runtime's watchdog provisions the stack
    again; the running handlers keep working without a restart of make run."""
    reset = requests.post(f"{stack.endpoint_url}/moto-api/reset", timeout=10)
    assert reset.status_code == 200

    def provisioned_again() -> bool:
        return "provisioning again" in stack.log()

    assert eventually(provisioned_again, timeout_s=30)
    assert eventually(
        lambda: stack.request("GET", "/kisi/locks?limit=1").status_code == 200, timeout_s=20)
    stack.sim.update_faults({"outage_seconds": 1.5})
    accepted = stack.request("POST", "/kisi/locks/8/unlock", headers=ASYNC)
    assert accepted.status_code == 202
    assert terminal(stack, accepted.headers["Location"])["status"] == "succeeded"
