"""A store that accepts connections and never answers: the gateway's 503, not API Gateway's 504.

The AWS endpoint here is a loopback socket that completes the TCP handshake and then stays
silent, as a stalled DynamoDB or SQS endpoint would. Assertions are on what the caller gets and
on the exception botocore raises, never on elapsed time; the timeouts are shortened so the test
is quick, and the default ones are checked by arithmetic against API Gateway's 29 s.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

from kisi_gateway.config import Settings
from kisi_gateway.core.errors import GatewayErrorCode
from kisi_gateway.core.outcome import Transport
from kisi_gateway.pipeline.calls import parse_call
from kisi_gateway.pipeline.forwarding import CallContext
from kisi_gateway.pipeline.kisi_http import AttemptResult, KisiCall, TransportFailure
from kisi_gateway.pipeline.replies import location_rewriter
from kisi_gateway.stores.ports import RecordStoreError
from kisi_gateway.stores.records import DynamoRecordStore
from kisi_gateway.wiring import (
    API_GATEWAY_LIMIT_S,
    AWS_TIMEOUTS,
    STALLED_CALLS_BEFORE_503,
    AwsTimeouts,
    _client,
    build_pipeline,
)
from tests.harness import REGION, FakeClock, aws_env

QUICK = AwsTimeouts(connect_s=0.5, read_s=0.2, max_attempts=2)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:<port>``: accepts every connection, reads nothing, answers nothing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set() and len(held) < 64:  # bounded in count, stopped at teardown
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for connection in held:
        connection.close()
    listener.close()


class CountingKisi:
    """Kisi that must not be reached: the store fails first."""

    def __init__(self) -> None:
        self.calls: list[KisiCall] = []

    def send(self, call: KisiCall) -> AttemptResult:
        self.calls.append(call)
        return TransportFailure(Transport.CONNECT_ERROR)


def stalled_client(service: str, endpoint: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service, endpoint_url=endpoint, region_name=REGION, config=QUICK.config())


def test_the_default_timeouts_end_well_before_api_gateway() -> None:
    assert AWS_TIMEOUTS.worst_case_s * STALLED_CALLS_BEFORE_503 < API_GATEWAY_LIMIT_S - 5
    assert QUICK.worst_case_s == pytest.approx(2 * 0.7 + 1.0)


@pytest.mark.parametrize("service", ["dynamodb", "sqs", "secretsmanager", "kms", "cloudwatch"])
def test_every_client_the_functions_build_carries_them(
    monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    aws_env(monkeypatch)
    config = _client(service).meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.0, 3.0)
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}


def test_a_silent_endpoint_raises_a_timeout_that_the_store_reports(
    monkeypatch: pytest.MonkeyPatch, silent_endpoint: str
) -> None:
    aws_env(monkeypatch)
    client = stalled_client("dynamodb", silent_endpoint)
    with pytest.raises((ReadTimeoutError, ConnectTimeoutError)):
        client.get_item(TableName="requests", Key={"request_id": {"S": "x"}})
    with pytest.raises(RecordStoreError, match="ReadTimeoutError"):
        DynamoRecordStore(client, "requests").get("x")


@pytest.mark.parametrize("idempotency_key", [None, "stalled-1"], ids=["plain", "keyed"])
def test_a_stalled_store_gives_the_gateways_503_with_retry_after(
    monkeypatch: pytest.MonkeyPatch, silent_endpoint: str, idempotency_key: str | None
) -> None:
    # Given every AWS service behind an endpoint that never answers
    aws_env(monkeypatch)
    settings = Settings.from_env({
        "REQUESTS_TABLE": "requests", "BUDGET_TABLE": "budget", "GUARD_TABLE": "guard",
        "TENANTS_TABLE": "tenants", "RETRY_QUEUE_URL": f"{silent_endpoint}/queue",
        "DLQ_URL": f"{silent_endpoint}/dlq", "CREDENTIAL_KEY_ID": "key",
        "KISI_API_KEY_SECRET": "service-login",
    })
    kisi = CountingKisi()
    pipeline = build_pipeline(
        settings, aws=lambda service: stalled_client(service, silent_endpoint),
        kisi=lambda: kisi,
        clock=FakeClock(), rng=lambda: 0.5, secrets=lambda secret_id, refresh: "kisi-key",
        key=b"identity-key-of-the-test-stack",
    )
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    call = parse_call(
        method="POST", path="/locks/7/unlock", query=[], body=None, is_base64=False,
        headers=headers, policies=settings.policies, max_body_bytes=settings.max_body_bytes,
        default_wait_s=settings.default_wait_s, max_wait_s=settings.max_wait_s,
    )
    # When a caller sends a call
    reply = pipeline.forwarder.forward(
        call, CallContext("caller", None, "/Prod", location_rewriter(lambda url: False, "")))
    # Then it gets the gateway's own, retryable 503, and Kisi was never asked
    assert reply.status == 503
    assert reply.json()["code"] == GatewayErrorCode.UNAVAILABLE.value
    assert int(reply.headers["Retry-After"]) >= 1
    assert kisi.calls == []
