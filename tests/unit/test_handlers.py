"""The three handlers with fakes behind them: event in, the right call, the right answer out.

Bad input is answered by the handler itself, Kisi-shaped, and never reaches the forwarder
(so never reaches Kisi, where it would count as a bad request).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

import api_call
import metrics
import retry_worker
from kisi_gateway.core.records import RetryMessage
from kisi_gateway.pipeline.calls import IncomingCall
from kisi_gateway.pipeline.forwarding import CallContext
from kisi_gateway.pipeline.replies import Reply, json_reply
from kisi_gateway.pipeline.retrying import Disposition


@dataclass
class LambdaContext:
    function_name: str = "kisi-gateway-ApiCallFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:api"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"


@dataclass
class FakeForwarder:
    calls: list[tuple[IncomingCall, CallContext]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)
    reply: Reply = field(default_factory=lambda: json_reply(200, {"message": "Unlocked!"}))
    fail: Exception | None = None

    def forward(self, call: IncomingCall, context: CallContext) -> Reply:
        if self.fail:
            raise self.fail
        self.calls.append((call, context))
        return self.reply

    def lookup(self, request_id: str, context: CallContext) -> Reply:
        self.lookups.append(request_id)
        return json_reply(200, {"request_id": request_id, "status": "queued"})


@pytest.fixture
def forwarder(monkeypatch) -> FakeForwarder:
    fake = FakeForwarder()
    monkeypatch.setattr(api_call, "forwarder", lambda: fake)
    return fake


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return api_call.handler(event, LambdaContext())


def test_unlock_event_is_parsed_and_forwarded(event, forwarder) -> None:
    response = invoke(event("api_unlock"))
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"message": "Unlocked!"}
    call, context = forwarder.calls[0]
    assert (call.method, call.path, call.route.template) == (
        "POST", "/locks/42/unlock", "/locks/{id}/unlock")
    assert call.idempotency_key == "door-42-2026-12-01T09:00:00Z"
    assert call.prefs.wait_s == 5
    assert json.loads(call.body or b"{}")["context"]["location"]["latitude"] == 52.52
    assert context.gateway_prefix == "/Prod"
    assert context.api_key_id == event("api_unlock")["requestContext"]["identity"]["apiKeyId"]
    assert context.authorization is None  # the sample caller sends no Kisi credential
    assert context.rewrite_location("https://api.kisi.io/locks/1") == "/Prod/kisi/locks/1"


def test_the_callers_own_credential_is_handed_on(event, forwarder) -> None:
    raw = event("api_unlock")
    raw["headers"]["Authorization"] = "Bearer abc"
    invoke(raw)
    _, context = forwarder.calls[0]
    assert context.authorization == "Bearer abc"


def test_two_different_credentials_are_refused(event, forwarder) -> None:
    raw = event("api_unlock")
    raw["multiValueHeaders"]["Authorization"] = ["Bearer abc", "KISI-LOGIN def"]
    response = invoke(raw)
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["code"] == "9e0402"
    assert forwarder.calls == []


def test_list_event_keeps_query_order_and_values(event, forwarder) -> None:
    raw = event("api_list_locks")
    raw["multiValueQueryStringParameters"] = {
        "limit": ["10"], "offset": ["20"], "ids[]": ["1", "2"]}
    invoke(raw)
    call, _ = forwarder.calls[0]
    assert call.query == (("limit", "10"), ("offset", "20"), ("ids[]", "1"), ("ids[]", "2"))
    assert call.route.policy.name == "read"


def test_async_create_event(event, forwarder) -> None:
    invoke(event("api_create_user_async"))
    call, _ = forwarder.calls[0]
    assert call.prefs.respond_async
    assert call.route.policy.repeat_unknown is False


def test_request_lookup_route(event, forwarder) -> None:
    response = invoke(event("api_get_request"))
    assert response["statusCode"] == 200
    assert forwarder.lookups == ["6f1c2d3e4b5a4c6d8e7f0a1b2c3d4e5f"]


def with_proxy(event, proxy: str, method: str = "GET", body: str | None = None):
    raw = event("api_list_locks")
    raw["path"] = "/kisi/" + proxy
    raw["pathParameters"] = {"proxy": proxy}
    raw["requestContext"]["path"] = "/Prod/kisi/" + proxy
    raw["httpMethod"] = method
    raw["body"] = body
    return raw


@pytest.mark.parametrize(
    ("proxy", "method", "body", "status", "code"),
    [
        ("locks", "POST", "{not json", 400, "9e0400"),
        ("locks", "POST", '["a list"]', 400, "9e0400"),
        ("locks", "POST", "[" * 10_000 + "]" * 10_000, 400, "9e0400"),
        ("locks/../users", "GET", None, 400, "9e0401"),
        ("locks/%2e%2e/users", "GET", None, 400, "9e0401"),
        ("http://evil.example/locks", "GET", None, 400, "9e0401"),
        ("/evil.example/locks", "GET", None, 400, "9e0401"),
        ("locks/1\r\nX-Injected: 1", "GET", None, 404, "9e0440"),  # matches no route
        ("locks/1\x00", "GET", None, 400, "9e0401"),
        ("locks", "POST", json.dumps({"lock": {"name": "x" * 300_000}}), 413, "9e0413"),
        ("locks", "HEAD", None, 405, "9e0450"),
        ("locks", "OPTIONS", None, 405, "9e0450"),
    ],
)
def test_bad_input_never_reaches_kisi(event, forwarder, proxy, method, body, status, code) -> None:
    response = invoke(with_proxy(event, proxy, method, body))
    assert response["statusCode"] == status
    body = json.loads(response["body"])
    assert set(body) == {"error", "code"}
    assert body["code"] == code
    assert body["error"]
    assert forwarder.calls == []


def test_bad_headers_and_query(event, forwarder) -> None:
    raw = with_proxy(event, "locks")
    raw["headers"]["Idempotency-Key"] = "x" * 300
    assert invoke(raw)["statusCode"] == 400
    raw = with_proxy(event, "locks")
    raw["multiValueQueryStringParameters"] = {"limit": ["1\r\n2"]}
    assert invoke(raw)["statusCode"] == 400
    raw = with_proxy(event, "locks")
    raw["multiValueQueryStringParameters"] = {"<script>": ["1"]}
    assert invoke(raw)["statusCode"] == 400
    assert forwarder.calls == []


def test_base64_bodies_are_decoded_and_checked(event, forwarder) -> None:
    raw = with_proxy(event, "locks", "POST", base64.b64encode(b'{"lock": {}}').decode())
    raw["isBase64Encoded"] = True
    assert invoke(raw)["statusCode"] == 200
    raw = with_proxy(event, "locks", "POST", base64.b64encode(b"\xff\xfe").decode())
    raw["isBase64Encoded"] = True
    assert invoke(raw)["statusCode"] == 400
    assert len(forwarder.calls) == 1


def test_unknown_route_is_a_kisi_shaped_404(event, forwarder) -> None:
    raw = event("api_list_locks")
    raw["path"] = raw["resource"] = "/elsewhere"
    response = invoke(raw)
    assert response["statusCode"] == 404
    assert json.loads(response["body"])["code"] == "9e0440"


def test_an_unexpected_failure_is_a_503_never_a_500(event, forwarder) -> None:
    forwarder.fail = RuntimeError("boom")
    response = invoke(event("api_unlock"))
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["code"] == "9e0500"
    assert response.get("multiValueHeaders", {}).get("Retry-After") == ["5"] or (
        response["headers"].get("Retry-After") == "5")


def test_binary_kisi_bodies_are_base64_encoded(event, forwarder) -> None:
    forwarder.reply = Reply(200, {"Content-Type": "application/octet-stream"}, b"\xff\x00")
    response = invoke(event("api_list_locks"))
    assert response["isBase64Encoded"] is True
    assert base64.b64decode(response["body"]) == b"\xff\x00"


@dataclass
class FakeWorker:
    outcomes: dict[str, Disposition]
    seen: list[str] = field(default_factory=list)

    def process(self, message: RetryMessage, receipt_handle: str) -> Disposition:
        self.seen.append(message.request_id)
        return self.outcomes[message.request_id]


def test_worker_reports_waiting_messages_as_batch_item_failures(event, monkeypatch) -> None:
    batch = event("sqs_retry_batch")
    first, second = (json.loads(r["body"])["request_id"] for r in batch["Records"])
    fake = FakeWorker({first: Disposition.DONE, second: Disposition.LATER})
    monkeypatch.setattr(retry_worker, "worker", lambda: fake)
    result = retry_worker.handler(batch, LambdaContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": batch["Records"][1]["messageId"]}]}
    assert fake.seen == [first, second]


def test_worker_fails_unreadable_messages_so_redrive_catches_them(event, monkeypatch) -> None:
    batch = event("sqs_retry_batch")
    batch["Records"][0]["body"] = "not a retry message"
    second = json.loads(batch["Records"][1]["body"])["request_id"]
    monkeypatch.setattr(retry_worker, "worker", lambda: FakeWorker({second: Disposition.DONE}))
    result = retry_worker.handler(batch, LambdaContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": batch["Records"][0]["messageId"]}]}


@dataclass
class FakeMonitor:
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def on_schedule(self, now: float) -> dict[str, Any]:
        self.calls.append(("schedule", now))
        return {"ok": True}

    def on_alarm(self, change, now: float) -> dict[str, Any]:
        self.calls.append(("alarm", change.name))
        return {"guard": "no guard change"}


@pytest.mark.parametrize(
    ("name", "kind"),
    [("schedule", "schedule"), ("alarm_sns", "alarm"), ("alarm_eventbridge", "alarm")],
)
def test_metrics_dispatches_by_event_shape(event, monkeypatch, name, kind) -> None:
    fake = FakeMonitor()
    monkeypatch.setattr(metrics, "monitor", lambda: fake)
    metrics.handler(event(name), LambdaContext())
    assert [c[0] for c in fake.calls] == [kind]


def test_metrics_ignores_unknown_events(monkeypatch) -> None:
    fake = FakeMonitor()
    monkeypatch.setattr(metrics, "monitor", lambda: fake)
    assert metrics.handler({"hello": "world"}, LambdaContext()) == {"ignored": True}
    assert fake.calls == []
