"""Key hygiene: the Kisi key reaches Kisi's origin and nothing else.

A full scenario (success, 429, 5xx outage -> deferral -> retries -> DLQ, 401 storm -> guard,
Deprecation, Idempotency-Key replay, record lookups) runs with a distinctive key; then every
place the gateway writes to is read back -- log records of every logger at DEBUG, EMF on
stdout, every DynamoDB item, every SQS message in both queues, every metric (in memory and in
CloudWatch), every reply's status, headers and body -- and the key must appear in none of
them, in clear or in base64. And a 3xx is never followed: ``Authorization`` never travels to
another origin.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from kisi_gateway.core.records import RecordStatus
from kisi_gateway.pipeline.replies import Reply
from kisi_gateway.pipeline.telemetry import EmfSink, MemorySink
from kisi_sim import DEMO_EMAIL, DEMO_PASSWORD, SimConfig, key_fingerprint
from local.emf import emf_to_metric_data, put_metric_data
from tests import harness
from tests.harness import REGION, Gateway, gateway

pytestmark = pytest.mark.xdist_group("moto")

KEY = "k-SECRET-" + random.Random(8_2024).randbytes(12).hex()
ASYNC = {"Prefer": "respond-async"}


def leaked_forms(secret: str) -> list[str]:
    """The key as it could appear: in clear, hex, and base64 at any alignment (also inside
    ``KISI-LOGIN <key>``), standard and URL-safe."""
    forms = [secret, secret.encode().hex()]
    for text in (secret, f"KISI-LOGIN {secret}"):
        for offset in range(3):
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                encoded = encode(b"\0" * offset + text.encode()).decode()
                # Drop the quanta that mix in bytes before or after the key.
                forms.append(encoded[4 if offset else 0 : -4])
    return forms


def leaks(corpus: str, secret: str = KEY) -> list[str]:
    return [form for form in leaked_forms(secret) if form in corpus]


def test_the_leak_detector_finds_the_key_in_every_form() -> None:
    header = f"KISI-LOGIN {KEY}".encode()
    assert leaks(f"..{KEY}..")
    for prefix in (b"", b"a", b"ab"):
        assert leaks(base64.b64encode(prefix + header + b"tail").decode())
        assert leaks(base64.urlsafe_b64encode(prefix + KEY.encode() + b"!").decode())
    assert not leaks("KISI-LOGIN sim-demo-key")


@dataclass
class TeeSink:
    """Metrics into memory (for assertions) and as EMF on stdout (as on Lambda)."""

    memory: MemorySink
    emf: EmfSink = field(default_factory=EmfSink)

    def emit(self, name: str, value: float, unit: str, dimensions: Mapping[str, str]) -> None:
        self.memory.emit(name, value, unit, dimensions)
        self.emf.emit(name, value, unit, dimensions)


@contextmanager
def keyed_gateway(
    monkeypatch: pytest.MonkeyPatch, sim_config: SimConfig | None = None, **kwargs: Any
) -> Iterator[Gateway]:
    """The harness gateway, sending ``KEY`` to a simulator that knows only ``KEY``."""
    monkeypatch.setattr(harness, "DEMO_KEY", KEY)  # what Gateway.build_sender sends
    config = sim_config or SimConfig(keys={KEY: 1})
    with gateway(monkeypatch, sim_config=config, **kwargs) as gw:
        yield gw


def queued_now(gw: Gateway) -> list[str]:
    """The retry queue's messages as SQS holds them (read from moto, so none is received)."""
    from moto.sqs.models import sqs_backends  # noqa: PLC0415

    queue = sqs_backends["123456789012"][REGION].queues["retry"]
    return [json.dumps({"body": m.body, "attributes": m.message_attributes}, default=str)
            for m in queue._messages]


def everything_written(
    gw: Gateway, caplog: pytest.LogCaptureFixture, stdout: str, replies: list[Reply],
    queued: list[str],
) -> dict[str, str]:
    """Every place the gateway wrote to, as text, by place."""
    formatter = logging.Formatter()
    logs = []
    for record in caplog.records:
        logs.append(record.getMessage())
        logs.append(json.dumps(record.__dict__, default=repr))
        if record.exc_info:
            logs.append(formatter.formatException(record.exc_info))

    dynamodb = []
    for table in gw.dynamodb.list_tables()["TableNames"]:
        for item in gw.dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]:
            dynamodb.append(json.dumps(item, default=_bytes_as_text))

    gw.clock.advance(43_200)  # every message visible again, none past its retention
    messages = list(queued)
    for url in gw.sqs.list_queues()["QueueUrls"]:
        seen: set[str] = set()
        while True:
            batch = gw.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"],
                MessageAttributeNames=["All"], VisibilityTimeout=600,
            ).get("Messages", [])
            if not batch:
                break
            for message in batch:
                seen.add(message["MessageId"])
                messages.append(json.dumps(message, default=str))
        assert url != gw.names["dlq"] or seen, "the scenario dead-lettered a request"

    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    batches = [batch for line in stdout.splitlines() for batch in emf_to_metric_data(line)]
    assert put_metric_data(cloudwatch, batches) > 0
    metrics = [json.dumps(m, default=str)
               for page in cloudwatch.get_paginator("list_metrics").paginate()
               for m in page["Metrics"]]
    memory = [json.dumps(value) for value in gw.sink.values]

    answers = [json.dumps({"status": r.status, "headers": dict(r.headers)})
               + r.body.decode("latin-1") for r in replies]
    return {
        "logs": "\n".join(logs),
        "stdout": stdout,
        "dynamodb": "\n".join(dynamodb),
        "sqs": "\n".join(messages),
        "cloudwatch": "\n".join(metrics),
        "memory-metrics": "\n".join(memory),
        "replies": "\n".join(answers),
    }


def _bytes_as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1") + " " + base64.b64encode(value).decode()
    return repr(value)


def test_the_key_appears_nowhere_the_gateway_writes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "kisi-gateway-hygiene")
    caplog.set_level(logging.DEBUG)
    config = SimConfig(keys={KEY: 1}, rate_per_s=1.0, burst=1,
                       deprecated_routes={"GET /places": "Sat, 01 Jan 2033 00:00:00 GMT"})
    replies: list[Reply] = []
    queued: list[str] = []
    with keyed_gateway(monkeypatch, config, env={"SEND_RATE": "50"}) as gw:
        gw.sender.telemetry.sink = TeeSink(gw.sink)

        def call(method: str, path: str, **kwargs: Any) -> Reply:
            reply = gw.call(method, path, **kwargs)
            replies.append(reply)
            return reply

        # Success, then a 429 (Kisi allows this user 1 request/s) deferred to the queue.
        assert call("GET", "/locks", query=[("limit", "5")]).status == 200
        throttled = call("GET", "/locks/2", headers=ASYNC)
        assert throttled.json()["last_outcome"] == {"class": "rate_limited", "status": 429}
        queued += queued_now(gw)
        # A deprecated route, and a create with an Idempotency-Key, replayed.
        gw.clock.advance(2)
        assert call("GET", "/places").headers["Deprecation"] == "true"
        gw.clock.advance(2)
        key = {"Idempotency-Key": "hygiene-create-1"}
        body = {"user": {"name": "Ada", "email": "ada@example.com"}}
        assert call("POST", "/users", body=body, headers=key).status == 200
        assert call("POST", "/users", body=body, headers=key).headers["Idempotent-Replayed"]
        gw.run_retries()
        assert gw.record(throttled.json()["request_id"]).status is RecordStatus.SUCCEEDED
        # A 5xx outage: deferred, retried until its attempts are spent, dead-lettered.
        gw.clock.advance(2)
        gw.sim.update_faults({"error_rate": 1.0})
        outage = call("GET", "/groups", headers=ASYNC)
        assert outage.status == 202
        queued += queued_now(gw)
        gw.run_retries()
        gw.sim.update_faults({"error_rate": 0.0})
        assert gw.record(outage.json()["request_id"]).status is RecordStatus.EXPIRED
        # A 401 storm (the key revoked): the guard pauses the account.
        gw.sim.update_faults({"revoked_keys": [KEY]})
        statuses = []
        for _ in range(gw.settings.guard_401_threshold + 1):
            gw.clock.advance(2)
            statuses.append(call("GET", "/users/1").status)
        assert statuses == [401] * gw.settings.guard_401_threshold + [503]
        # The key works again: after the cooldown a probe closes the guard.
        gw.sim.update_faults({"revoked_keys": []})
        gw.clock.advance(gw.settings.guard_cooldown_s + 1)
        assert call("GET", "/users/1").status == 200
        # Every record, as its caller reads it.
        for reply in list(replies):
            request_id = reply.headers.get("X-Gateway-Request-Id")
            if request_id:
                replies.append(gw.forwarder.lookup(request_id, gw.context()))

        written = everything_written(gw, caplog, capsys.readouterr().out, replies, queued)

    # The capture is real: it holds what the scenario must have written ...
    assert "kisi attempt" in written["logs"]
    assert "Kisi marks this route deprecated" in written["logs"]
    assert throttled.json()["request_id"] in written["sqs"]
    assert outage.json()["request_id"] in written["sqs"]
    assert "attempts_exhausted" in written["sqs"]
    assert "rate_limited" in written["memory-metrics"]
    assert "GuardPaused" in written["cloudwatch"]
    assert "Deprecated" in written["stdout"]
    assert "Ada" in written["dynamodb"]
    # ... and the key in none of it.
    assert {place: leaks(text) for place, text in written.items() if leaks(text)} == {}


# --- callers' own credentials ---------------------------------------------------------------

_SEEDED = random.Random(12_2026)
# One caller credential per scheme Kisi accepts, each distinctive enough to find anywhere.
CALLER_SECRETS = {scheme: f"own-{n}-SECRET-" + _SEEDED.randbytes(12).hex()
                  for n, scheme in enumerate(("KISI-LOGIN", "Bearer", "KISI-ACCESS-KEY",
                                              "KISI-GROUP-LINK", "KISI-SERVICE"))}


def callers_sim() -> SimConfig:
    """The simulator knowing the service key (user 1) and every caller credential (users
    2 to 6)."""
    others = {scheme: {secret: 2 + n} for n, (scheme, secret) in
              enumerate(CALLER_SECRETS.items()) if scheme != "KISI-LOGIN"}
    return SimConfig(keys={KEY: 1, CALLER_SECRETS["KISI-LOGIN"]: 7}, credentials=others)


def raw_record(gw: Gateway, request_id: str) -> dict[str, Any]:
    item: dict[str, Any] = gw.dynamodb.get_item(
        TableName=gw.names["requests"], Key={"request_id": {"S": request_id}},
        ConsistentRead=True)["Item"]
    return item


def test_callers_credentials_appear_nowhere_the_gateway_writes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every scheme's caller credential, through success, a replayed Idempotency-Key, a
    deferral retried to success, a deferral dead-lettered after an outage, a revoked
    credential's 401 storm and pause, and record lookups: the credential reaches Kisi and
    nothing else; only its KMS-sealed ciphertext is stored, and only while it is needed."""
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "kisi-gateway-hygiene")
    caplog.set_level(logging.DEBUG)
    # botocore's wire logs at DEBUG print KMS requests and answers whole: the vault keeps them
    # at INFO (test_botocore_debug_logs_never_show_a_sealed_credential).
    caplog.set_level(logging.INFO, logger="botocore")
    replies: list[Reply] = []
    queued: list[str] = []
    sealed: list[bytes] = []
    with keyed_gateway(monkeypatch, callers_sim()) as gw:
        gw.sender.telemetry.sink = TeeSink(gw.sink)

        def call(scheme: str, method: str, path: str, **kwargs: Any) -> Reply:
            auth = f"{scheme} {CALLER_SECRETS[scheme]}"
            reply = gw.call(method, path, authorization=auth, **kwargs)
            replies.append(reply)
            return reply

        def deferred_by_each(path: str) -> dict[str, str]:
            """One call per scheme during an outage, asking for a deferred answer."""
            ids = {}
            for scheme, secret in CALLER_SECRETS.items():
                gw.clock.advance(1)
                accepted = call(scheme, "GET", path, headers=ASYNC)
                assert accepted.status == 202, (scheme, accepted.body)
                ids[scheme] = accepted.json()["request_id"]
                # Kept for the retry, sealed: the record holds ciphertext, never the secret.
                blob = raw_record(gw, ids[scheme])["sealed"]["B"]
                assert secret.encode() not in blob
                sealed.append(blob)
            return ids

        for scheme in CALLER_SECRETS:
            gw.clock.advance(1)
            assert call(scheme, "GET", "/locks", query=[("limit", "2")]).status == 200
            key = {"Idempotency-Key": f"hygiene-{scheme}"}
            body = {"user": {"name": f"Ada {scheme}", "email": "ada@example.com"}}
            assert call(scheme, "POST", "/users", body=body, headers=key).status == 200
            again = call(scheme, "POST", "/users", body=body, headers=key)
            assert again.headers["Idempotent-Replayed"] == "true"
        # An outage: deferred, then retried by the worker with the opened credential.
        gw.sim.update_faults({"error_rate": 1.0})
        retried = deferred_by_each("/groups")
        queued += queued_now(gw)
        gw.sim.update_faults({"error_rate": 0.0})
        gw.run_retries()
        for scheme, request_id in retried.items():
            assert gw.record(request_id).status is RecordStatus.SUCCEEDED, scheme
            assert "sealed" not in raw_record(gw, request_id)  # deleted when it ended
        # An outage that outlasts the requests: retried until spent, dead-lettered.
        gw.sim.update_faults({"error_rate": 1.0})
        expired = deferred_by_each("/places")
        queued += queued_now(gw)
        gw.run_retries()
        gw.sim.update_faults({"error_rate": 0.0})
        for scheme, request_id in expired.items():
            assert gw.record(request_id).status is RecordStatus.EXPIRED, scheme
            assert "sealed" not in raw_record(gw, request_id)
        # Two credentials revoked: each one's 401 storm pauses that identity alone.
        revoked = ("KISI-LOGIN", "Bearer")
        gw.sim.update_faults({"revoked_keys": [CALLER_SECRETS[s] for s in revoked]})
        for scheme in revoked:
            statuses = []
            for _ in range(gw.settings.guard_401_threshold + 1):
                gw.clock.advance(2)
                statuses.append(call(scheme, "GET", "/users/1").status)
            assert statuses == [401] * gw.settings.guard_401_threshold + [503], scheme
        assert call("KISI-SERVICE", "GET", "/users/1").status == 200
        # Every record, as its owner reads it.
        for scheme, request_id in [*retried.items(), *expired.items()]:
            auth = f"{scheme} {CALLER_SECRETS[scheme]}"
            replies.append(gw.forwarder.lookup(request_id, gw.context(authorization=auth)))
        # Kisi saw each credential (the simulator logs only fingerprints of them).
        seen = {entry["credential"] for entry in gw.sim.stats()["requests"]}
        assert {key_fingerprint(secret) for secret in CALLER_SECRETS.values()} <= seen

        written = everything_written(gw, caplog, capsys.readouterr().out, replies, queued)
        written["sealed-ciphertext"] = "\n".join(_bytes_as_text(blob) for blob in sealed)

    # The capture is real: it holds what the scenario must have written ...
    assert "kisi attempt" in written["logs"]
    assert all(request_id in written["sqs"] for request_id in [*retried.values(),
                                                                *expired.values()])
    assert "attempts_exhausted" in written["sqs"]
    assert "GuardPaused" in written["cloudwatch"]
    assert '"Credential": "caller"' in written["memory-metrics"]
    assert "Ada Bearer" in written["dynamodb"]
    # ... and no caller credential, in any form, in any of it.
    found = {(place, scheme): leaks(text, secret) for place, text in written.items()
             for scheme, secret in CALLER_SECRETS.items() if leaks(text, secret)}
    print(f"caller credentials in plaintext: {sum(map(len, found.values()))} occurrences in "
          f"{len(written)} places x {len(CALLER_SECRETS)} schemes")
    assert found == {}


def test_botocore_debug_logs_never_show_a_sealed_credential(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = CALLER_SECRETS["Bearer"]
    with keyed_gateway(monkeypatch, callers_sim()) as gw:
        gw.sim.update_faults({"error_rate": 1.0})
        deferred = gw.call("GET", "/groups", headers=ASYNC, authorization=f"Bearer {secret}")
        assert deferred.status == 202
        gw.sim.update_faults({"error_rate": 0.0})
        gw.run_retries()  # opens the sealed credential
        assert gw.record(deferred.json()["request_id"]).status is RecordStatus.SUCCEEDED
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "TrentService.Encrypt" in logged  # botocore's wire log was captured
    assert leaks(logged, secret) == []


# --- redirects: never followed, Location rewritten only on Kisi's own origin ------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class LoopbackServer:
    """A tiny HTTP server on 127.0.0.1 that records what it receives and answers
    ``answer(path) -> (status, headers)`` with an empty JSON body."""

    def __init__(self, answer: Callable[[str], tuple[int, dict[str, str]]]) -> None:
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server.seen.append(Seen(self.command, self.path, dict(self.headers)))
                status, headers = answer(self.path)
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


REDIRECTS = [
    # Kisi's path, status, where Location points, what the caller must get as Location
    ("/locks/1", 302, "other:/files/1?sig=abc", "other:/files/1?sig=abc"),
    ("/locks/2", 307, "other:/locks/2", "other:/locks/2"),
    ("/locks/3", 302, "kisi:/locks/7?x=1", "/Prod/kisi/locks/7?x=1"),
    ("/locks/4", 301, "/locks/8", "/Prod/kisi/locks/8"),
]


@pytest.mark.parametrize(("path", "status", "location", "expected"), REDIRECTS,
                         ids=["302-other-origin", "307-other-origin", "302-kisi-absolute",
                              "301-kisi-relative"])
def test_a_redirect_is_returned_never_followed_and_the_key_stays_home(
    monkeypatch: pytest.MonkeyPatch, path: str, status: int, location: str, expected: str
) -> None:
    with LoopbackServer(lambda _: (200, {})) as other:
        def origin(text: str) -> str:
            return text.replace("other:", other.url).replace("kisi:", kisi.url)

        with LoopbackServer(lambda _: (status, {"Location": origin(location)})) as kisi, \
                keyed_gateway(monkeypatch) as gw:
            gw.kisi_url = kisi.url  # the gateway's Kisi is the redirecting server
            reply = gw.call("GET", path)

    assert reply.status == status
    assert reply.headers["Location"] == origin(expected)
    assert other.seen == []  # never followed: nothing, and no key, went to the other origin
    assert [(s.method, s.path) for s in kisi.seen] == [("GET", path)]
    assert kisi.seen[0].headers["Authorization"] == f"KISI-LOGIN {KEY}"
    assert not leaks(json.dumps(dict(reply.headers)) + reply.body.decode())


def test_a_sign_ins_new_secret_is_never_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sign-in's answer holds the new login's secret: it is answered at once and never kept
    (no record, no 202, no replay), and asking for it to be kept is a clear 400."""
    body = {"login": {"type": "device"},
            "user": {"email": DEMO_EMAIL, "password": DEMO_PASSWORD}}
    with keyed_gateway(monkeypatch) as gw:
        for headers in ({"Idempotency-Key": "sign-in-1"}, {"Prefer": "respond-async"}):
            refused = gw.call("POST", "/logins", body=body, headers=headers)
            assert (refused.status, refused.json()["code"]) == (400, "9e0402")
        assert gw.kisi_calls("POST", "/logins") == 0
        gw.sim.update_faults({"error_rate": 1.0})
        outage = gw.call("POST", "/logins", body=body)  # a caller on the deferral contract
        assert outage.status >= 500  # Kisi's own answer: a sign-in is never deferred
        gw.sim.update_faults({"error_rate": 0.0})
        signed_in = gw.call("POST", "/logins", body=body)
        assert signed_in.status == 200
        secret = signed_in.json()["secret"]
        items = gw.dynamodb.scan(TableName=gw.names["requests"], ConsistentRead=True)["Items"]
        queued = gw.queue_depth("queue")
    assert leaks(json.dumps(items, default=_bytes_as_text), secret) == []
    assert (items, queued) == ([], 0)
