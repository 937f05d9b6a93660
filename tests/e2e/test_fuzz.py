"""Fuzzing the running gateway: schemathesis from openapi.yaml, then hostile raw requests.

One local stack for the module (moto in-process, the Kisi simulator, the gateway API on free
loopback ports), configured so that fuzzing cannot trip what it is not testing: the simulator
and the gateway's send budget allow 1,000 requests/s and the bad-request alarms cannot fire,
so no 429, no deferral and no guard pause happens by accident. Every run is bounded
(``max_examples``, fixed seeds via ``derandomize``, no shrinking) and repeatable.

(a) schemathesis loads the document the stack serves (``GET /openapi.yaml``) and checks every
answer: no 5xx, and status, content type, headers and body as documented; an error the gateway
answers without calling Kisi must be exactly ``{"error", "code"}``.
(b) hypothesis sends hostile requests straight to the gateway (http.client, raw sockets where
clients refuse): encoded traversal, absolute and scheme-relative URLs, control characters in
path, query and headers, huge, deep, non-UTF-8 and non-object bodies, unsupported methods. Each
must get a 4xx -- Kisi-shaped, API Gateway's ``{"message"}`` 403/413, or the HTTP server's own
400 for a request line it cannot parse -- and the simulator must receive nothing.

What fuzzing found was fixed and is kept as regression tests at the end. Figures per test
are attached with ``record_property("fuzz_figures")`` and summed in one line at the end of
the session by tests/conftest.py.
"""

from __future__ import annotations

import http.client
import importlib
import json
import socket
import string
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kisi_gateway.config import Settings
from kisi_gateway.core.errors import GatewayErrorCode
from kisi_sim import DEMO_KEY, KisiSimulator, SimConfig
from local.moto_server import MotoThread, free_port
from local.runtime import LocalRuntime

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

ROOT = Path(__file__).resolve().parents[2]
FUZZ_KEY = "fuzz-key"
MAX_BODY_BYTES = Settings.from_env({}).max_body_bytes  # the template does not change it
API_GATEWAY_PAYLOAD_LIMIT = 10 * 1024 * 1024
GATEWAY_CODES = frozenset(code.value for code in GatewayErrorCode)
DOCUMENTED_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
FAST = 1000  # requests/s for the simulator and the gateway's budget: fuzzing is not load
NO_ALARM = 1_000_000
EXAMPLES = 12  # schemathesis examples per operation and generation mode
HOSTILE = 25  # hypothesis examples per hostile class
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def bounded(max_examples: int) -> settings:
    """Repeatable and bounded: fixed seed, no database, no shrinking, no health checks."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


# -- the stack ----------------------------------------------------------------------------
@dataclass
class FuzzStack:
    url: str
    port: int
    sim: KisiSimulator

    def sent_to_kisi(self) -> int:
        return self.sim.stats(include_requests=False)["total"]


def forget_handler_state() -> None:
    """Load the handlers again, as after a cold start, once the environment is restored.

    They cache settings and clients built from this stack's environment; later tests in this
    process must not see a gateway pointed at a simulator that is gone.
    """
    for name in ("api_call", "retry_worker", "metrics"):
        module = sys.modules.get(name)
        if module is not None:
            importlib.reload(module)


@pytest.fixture(scope="module")
def fuzz() -> Iterator[FuzzStack]:
    unlimited = {"POST /event_sets": FAST, "POST /signed_upload_urls": FAST}
    moto = MotoThread()
    sim = KisiSimulator(SimConfig(rate_per_s=FAST, burst=FAST, route_rates=unlimited), port=0)
    runtime: LocalRuntime | None = None
    try:
        moto.start()
        sim.start()
        runtime = LocalRuntime(
            ROOT / "template.yaml",
            moto.endpoint_url,
            stack_name="kisi-fuzz",
            parameters={
                "KisiBaseUrl": sim.url,
                "SendRate": FAST,
                "RouteRates": json.dumps(unlimited),
                "BadRequestVolume": NO_ALARM,
                "BadRequestMinVolume": NO_ALARM,
                "BadRequestRatePercent": 100,
            },
            secret_values={"KisiApiKeySecret": DEMO_KEY},
            env_overrides={"POWERTOOLS_LOG_LEVEL": "ERROR"},
            api_key=FUZZ_KEY,
            gateway_port=free_port(),
            log=lambda line: None,
            run_threads=True,
        )
        runtime.start()
        assert runtime.server is not None
        assert runtime.gateway_url is not None
        yield FuzzStack(runtime.gateway_url, runtime.server.port, sim)
    finally:
        if runtime is not None:
            runtime.stop()  # restores os.environ, sys.path and stdout
        sim.stop()
        moto.stop()
        forget_handler_state()


# -- sending ------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    method: str = "GET"

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def send(
    fuzz: FuzzStack,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    key: str | None = FUZZ_KEY,
) -> Answer:
    """One request over http.client, the request target sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", fuzz.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{fuzz.port}")
        conn.putheader("Connection", "close")
        if key is not None:
            conn.putheader("x-api-key", key)
        for name, value in headers or []:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        payload = response.read()
        found = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, found, payload, method)
    finally:
        conn.close()


def send_raw(fuzz: FuzzStack, data: bytes, method: str = "GET") -> Answer | None:
    """Bytes no HTTP client will send; ``None`` when the server hung up without an answer."""
    with socket.create_connection(("127.0.0.1", fuzz.port), timeout=30) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock, method=method)
        try:
            response.begin()
            payload = response.read()
        except (http.client.HTTPException, ConnectionError, TimeoutError):
            return None
        found = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, found, payload, method)


def raw_request(
    fuzz: FuzzStack, method: str, target: bytes, headers: bytes = b"", body: bytes = b""
) -> bytes:
    head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\nx-api-key: %s\r\n" % (
        method.encode(), target, fuzz.port, FUZZ_KEY.encode())
    if body:
        head += b"Content-Type: application/json\r\n"
    return head + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body


# -- judging ------------------------------------------------------------------------------
@dataclass
class Tally:
    """What one test saw; attached to its report and summed for the session."""

    schemathesis_cases: int = 0
    hostile_requests: int = 0
    server_errors: int = 0
    off_schema: int = 0
    reached_kisi: int = 0
    http_layer_400: int = 0
    known_bug_requests: int = 0
    failures: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, int]:
        return {
            "schemathesis cases": self.schemathesis_cases,
            "hostile requests": self.hostile_requests,
            "5xx answers": self.server_errors,
            "answers off the schema": self.off_schema,
            "malformed requests that reached Kisi": self.reached_kisi,
            "HTTP-layer 400s (request line unparseable)": self.http_layer_400,
            "requests of the regression tests": self.known_bug_requests,
        }


def shape_of(answer: Answer) -> tuple[str, dict[str, Any] | None]:
    """``gateway`` (Kisi-shaped), ``api-gateway`` ({"message"}), ``http-layer`` or ``other``."""
    content_type = answer.header("content-type") or ""
    if answer.method == "HEAD":
        return ("head", None)
    if content_type.startswith("text/html"):
        return ("http-layer", None)
    try:
        document = json.loads(answer.body)
    except ValueError:
        return ("other", None)
    if not isinstance(document, dict):
        return ("other", None)
    if answer.header("x-amzn-errortype") is not None:
        ok = set(document) == {"message"} and isinstance(document["message"], str)
        return ("api-gateway" if ok else "other", document)
    ok = (
        set(document) == {"error", "code"}
        and isinstance(document["error"], str)
        and bool(document["error"])
        and document["code"] in GATEWAY_CODES
    )
    return ("gateway" if ok else "other", document)


def expect_rejected(
    tally: Tally,
    answer: Answer | None,
    reached: int,
    codes: set[str],
    *,
    http_layer: bool = False,
    statuses: frozenset[int] = frozenset({400}),
) -> None:
    """A 4xx from the gateway (one of ``codes``) or API Gateway, and nothing sent to Kisi."""
    tally.hostile_requests += 1
    tally.reached_kisi += reached
    assert answer is not None, "the server hung up without an answer"
    if answer.status >= 500:
        tally.server_errors += 1
    kind, document = shape_of(answer)
    if kind == "http-layer" and http_layer and answer.status == 400:
        tally.http_layer_400 += 1
    elif kind == "gateway":
        if answer.status not in statuses or document is None or document["code"] not in codes:
            tally.off_schema += 1
    elif kind == "api-gateway":
        if answer.status not in (403, 413):
            tally.off_schema += 1
    elif kind == "head":
        if answer.status != 405:
            tally.off_schema += 1
    else:
        tally.off_schema += 1
    assert reached == 0, f"Kisi received {reached} request(s) for malformed input"
    assert 400 <= answer.status < 500, f"{answer.status}: {answer.body[:200]!r}"
    assert kind in ("gateway", "api-gateway", "head") or (kind == "http-layer" and http_layer), (
        f"{answer.status} is not Kisi-shaped: {answer.body[:200]!r}")
    if kind == "gateway":
        assert document is not None
        assert document["code"] in codes, document
        assert answer.status in statuses, answer.status


def observe(
    fuzz: FuzzStack,
    tally: Tally,
    codes: set[str],
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    key: str | None = FUZZ_KEY,
    statuses: frozenset[int] = frozenset({400}),
) -> Answer:
    before = fuzz.sent_to_kisi()
    answer = send(fuzz, method, target, headers, body, key)
    expect_rejected(tally, answer, fuzz.sent_to_kisi() - before, codes, statuses=statuses)
    return answer


# -- the document -------------------------------------------------------------------------
def test_the_document_is_served_without_a_key(fuzz: FuzzStack) -> None:
    answer = send(fuzz, "GET", "/openapi.yaml", key=None)
    assert answer.status == 200
    assert answer.header("content-type") == "application/yaml"
    assert answer.body == (ROOT / "openapi.yaml").read_bytes()


# -- (a) schemathesis ---------------------------------------------------------------------
def header(headers: Any, name: str) -> str | None:
    """One header's value; schemathesis keeps each header's values as a list."""
    value = headers.get(name)
    if isinstance(value, list):
        return str(value[0]) if value else None
    return None if value is None else str(value)


def kisi_shaped_own_errors(answer: schemathesis.Response, reached: int) -> str | None:
    """An error the gateway answered without Kisi must be exactly ``{"error", "code"}``."""
    if answer.status_code < 400 or answer.request.method == "HEAD":
        return None
    headers = answer.headers  # names lower-cased
    if reached:
        if "x-gateway-request-id" not in headers:
            return "Kisi was called, but the answer has no X-Gateway-Request-Id"
        return None
    if "x-amzn-errortype" in headers or "idempotent-replayed" in headers:
        return None  # API Gateway's own answer, or a replay of a stored answer
    if header(headers, "x-kisi-gateway-replayed") == "known-bad":
        return None  # Kisi's own refusal of this very request, answered from memory
    try:
        document = json.loads(answer.content)
    except ValueError:
        return f"{answer.status_code}: not JSON"
    if header(headers, "x-kisi-gateway-refused") == "invalid-body":
        # A body Kisi documents as invalid: Kisi's own 422 shape, {"errors": {field: [text]}}.
        errors = document.get("errors") if isinstance(document, dict) else None
        shaped = answer.status_code == 422 and set(document) == {"errors"} and isinstance(
            errors, dict) and errors and all(
            isinstance(v, list) and all(isinstance(m, str) for m in v) for v in errors.values())
        return None if shaped else f"422 refusal not in Kisi's errors shape: {document!r}"[:300]
    if not (isinstance(document, dict) and set(document) == {"error", "code"}
            and document["code"] in GATEWAY_CODES):
        return f"{answer.status_code}: not Kisi-shaped: {document!r}"[:300]
    return None


def test_schemathesis_finds_no_5xx_and_no_answer_off_the_document(
    fuzz: FuzzStack, record_property: Any
) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz.url}/openapi.yaml", timeout=10)
    tally = Tally()
    session = requests.Session()
    started = time.monotonic()
    assert len(list(schema.get_all_operations())) == 8

    def run(case: Any) -> None:
        before = fuzz.sent_to_kisi()
        response = case.call(
            base_url=fuzz.url, session=session, headers={"x-api-key": FUZZ_KEY}, timeout=30
        )
        reached = fuzz.sent_to_kisi() - before
        tally.schemathesis_cases += 1
        if response.status_code >= 500:
            tally.server_errors += 1
        problems = []
        try:
            case.validate_response(response, checks=CHECKS)
        except (FailureGroup, AssertionError) as failure:
            problems.append(str(failure)[:600])
        shape = kisi_shaped_own_errors(response, reached)
        if shape is not None:
            problems.append(shape)
        if problems:
            if response.status_code < 500 or len(problems) > 1:
                tally.off_schema += 1
            tally.failures.append(f"{case.method} {case.formatted_path}: " + "; ".join(problems))

    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            # Coverage: schemathesis' deterministic boundary and pattern-violating values.
            # Methods outside the document are test_unknown_methods_* below.
            generation = schema.config.generation_for(operation=operation)
            for case in schema.iter_coverage_cases(
                operation,
                generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                generation_config=generation,
            ):
                if case.method.upper() in DOCUMENTED_METHODS:
                    run(case)
            # Fuzzing: hypothesis-generated cases, valid and invalid.
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                bounded(EXAMPLES)(given(case=operation.as_strategy(generation_mode=mode))(run))()
    finally:
        session.close()
        record_property("fuzz_figures", tally.figures())
        record_property("schemathesis_seconds", round(time.monotonic() - started, 1))
    assert tally.schemathesis_cases >= 200
    assert tally.server_errors == 0, tally.failures
    assert tally.off_schema == 0, tally.failures
    assert not tally.failures, tally.failures


# -- (b) hostile requests -----------------------------------------------------------------
KISI_SEGMENTS = ["locks", "users", "groups", "places", "7", "42", "unlock"]
HOSTILE_SEGMENTS = [
    "..", ".", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "..%2f", "..%2F", "%2e%2e%2f", "..%5c",
    "..\\", "%252e%252e", "%252f", "%25252e%25252e", "%c0%ae%c0%ae", "%e0%80%ae", "%u002e",
    "http:", "https:", "http%3a", "%2f%2fevil.example", "%2F%2Fevil.example",
    "http%3A%2F%2Fevil.example", "@evil.example", "evil.example", "evil.example:443", "%23",
    "%3f", "%3Fx=1", "~", ";x=1", "%20", "%09", "%00", "%0d%0a", "%0a", "%0d", "%1b", "%7f",
    "%ff", "%c3%a9", "locks%00", "7%0d%0aX-Injected:%201",
]
ABSOLUTE_TARGETS = [
    "http://evil.example/kisi/locks",
    "https://evil.example/kisi/locks",
    "http://127.0.0.1@evil.example/kisi/locks",
    "//evil.example/kisi/locks",
    "/kisi/http://evil.example/locks",
    "/kisi/https:%2F%2Fevil.example/locks",
    "/kisi/%2F%2Fevil.example/locks",
    "/kisi//evil.example/locks",
    "/kisi/\\\\evil.example/locks",
    "/Prod/kisi/http%3A%2F%2Fevil.example",
]
CALL_METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"])


@st.composite
def hostile_paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(KISI_SEGMENTS), max_size=4))
    for _ in range(draw(st.integers(1, 2))):
        index = draw(st.integers(0, len(segments)))
        segments.insert(index, draw(st.sampled_from(HOSTILE_SEGMENTS)))
    prefix = draw(st.sampled_from(["/kisi/", "/Prod/kisi/"]))
    return prefix + "/".join(segments)


def test_traversal_and_foreign_urls_never_reach_kisi(
    fuzz: FuzzStack, record_property: Any
) -> None:
    tally = Tally()

    @bounded(HOSTILE * 3)
    @given(
        target=st.one_of(hostile_paths(), st.sampled_from(ABSOLUTE_TARGETS)),
        method=CALL_METHODS,
        key=st.sampled_from([FUZZ_KEY, FUZZ_KEY, None, "wrong-key"]),
    )
    @example(target="/kisi/locks/%2e%2e/%2e%2e/admin", method="GET", key=FUZZ_KEY)
    @example(target="/kisi/locks/..%2f..%2fadmin", method="GET", key=FUZZ_KEY)
    @example(target="/kisi/locks/%252e%252e%252fadmin", method="DELETE", key=FUZZ_KEY)
    def run(target: str, method: str, key: str | None) -> None:
        answer = observe(fuzz, tally, {GatewayErrorCode.INVALID_PATH.value}, method, target,
                         key=key, statuses=frozenset({400}))
        if key != FUZZ_KEY:
            assert answer.status == 403  # API Gateway, before the function

    try:
        run()
    finally:
        record_property("fuzz_figures", tally.figures())


CONTROL_ESCAPES = [f"%{code:02X}" for code in [*range(0x20), 0x7F]]
PLAIN = st.text(alphabet=string.ascii_letters + string.digits, max_size=8)
BAD_NAMES = ["<script>", "a%20b", "%00", "x" * 65, "", "na%0Ame", "%C3%A4", "a%3Db", "a%26b",
             "%2e%2e%2f", "a/b", "$where", "limit%0d%0aX"]


@st.composite
def hostile_queries(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["control", "name", "many", "long"]))
    if kind == "control":
        value = draw(PLAIN) + draw(st.sampled_from(CONTROL_ESCAPES)) + draw(PLAIN)
        bad = f"{draw(st.sampled_from(['limit', 'offset', 'query', 'ids[]']))}={value}"
    elif kind == "name":
        bad = f"{draw(st.sampled_from(BAD_NAMES))}={draw(PLAIN)}"
    elif kind == "many":
        return "&".join(f"p{i}=1" for i in range(draw(st.integers(51, 80))))
    else:
        return "query=" + "x" * draw(st.integers(2049, 6000))
    pairs = [f"limit={draw(st.integers(1, 50))}", "offset=0", bad]
    return "&".join(draw(st.permutations(pairs)))


def test_hostile_queries_never_reach_kisi(fuzz: FuzzStack, record_property: Any) -> None:
    tally = Tally()

    @bounded(HOSTILE * 2)
    @given(query=hostile_queries(), method=CALL_METHODS)
    @example(query="limit=1%0d%0aX-Injected:%201", method="GET")
    @example(query="limit=1%00", method="GET")
    def run(query: str, method: str) -> None:
        observe(fuzz, tally, {GatewayErrorCode.INVALID_QUERY.value}, method,
                f"/kisi/locks?{query}")

    try:
        run()
    finally:
        record_property("fuzz_figures", tally.figures())


BAD_KEY_CHARS = [chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0x100)] if c not in (10, 13)]


@st.composite
def hostile_idempotency_keys(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["control", "control", "long", "blank"]))
    printable = st.text(alphabet=string.ascii_letters + string.digits + "-_:.", min_size=1,
                        max_size=20)
    if kind == "control":
        return draw(printable) + draw(st.sampled_from(BAD_KEY_CHARS)) + draw(printable)
    if kind == "long":
        return "k" * draw(st.integers(256, 600))
    return draw(st.sampled_from(["", " ", "\t", "  \t "]))


def test_hostile_idempotency_keys_never_reach_kisi(
    fuzz: FuzzStack, record_property: Any
) -> None:
    tally = Tally()

    @bounded(HOSTILE * 2)
    @given(value=hostile_idempotency_keys(), method=CALL_METHODS)
    @example(value="door\x00-42", method="POST")
    def run(value: str, method: str) -> None:
        body = b'{"lock": {}}' if method in ("POST", "PUT", "PATCH") else None
        observe(fuzz, tally, {GatewayErrorCode.INVALID_HEADER.value}, method,
                "/kisi/locks/7", headers=[("Idempotency-Key", value)], body=body)

    try:
        run()
    finally:
        record_property("fuzz_figures", tally.figures())


# Raw bytes inside the request target: control bytes, and whitespace that splits the line.
RAW_WHITESPACE = [b"\r", b"\t", b"\x0b", b"\x0c", b" ", b"\x1c", b"\x1f", b"\x85", b"\xa0"]
RAW_CONTROL = [b"\x00", b"\x01", b"\x08", b"\x1b", b"\x7f"]
RAW_NON_ASCII = [b"\x80", b"\xff", b"\xc0\xae"]  # in a path; in a query see the C1 test below
RAW_IN_PATH = [b"/kisi/lo{}cks", b"/kisi/locks/7{}8", b"/kisi/{}locks", b"/requests/ab{}cd"]
RAW_IN_QUERY = [b"/kisi/locks?limit=1{}2", b"/kisi/locks?li{}mit=1"]


@st.composite
def raw_targets(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        where = draw(st.sampled_from(RAW_IN_PATH))
        raw = draw(st.sampled_from(RAW_WHITESPACE + RAW_CONTROL + RAW_NON_ASCII))
    else:
        where = draw(st.sampled_from(RAW_IN_QUERY))
        raw = draw(st.sampled_from(RAW_WHITESPACE + RAW_CONTROL))
    return where.replace(b"{}", raw)


def test_raw_bytes_in_the_request_target_never_reach_kisi(
    fuzz: FuzzStack, record_property: Any
) -> None:
    """Bytes http.client refuses to put in a URL, sent over a socket, inside the target.

    Whitespace splits the request line, so the HTTP server answers its own 400 before any
    routing, as API Gateway's front door would. Not sent here: a bare LF (it ends the request
    line: a different, HTTP/0.9 request that carries no key) and whitespace at the very end of
    the target (RFC 9112 3 lets a server take SP, HTAB, VT, FF or CR there for the separator;
    for other whitespace see the request-line test below).
    """
    tally = Tally()

    @bounded(HOSTILE * 2)
    @given(target=raw_targets(), method=CALL_METHODS)
    @example(target=b"/kisi/locks\x00", method="GET")
    def run(target: bytes, method: str) -> None:
        before = fuzz.sent_to_kisi()
        answer = send_raw(fuzz, raw_request(fuzz, method, target), method)
        reached = fuzz.sent_to_kisi() - before
        codes = {GatewayErrorCode.INVALID_PATH.value, GatewayErrorCode.INVALID_QUERY.value}
        statuses = frozenset({400})
        if target.startswith(b"/requests/"):
            codes, statuses = {GatewayErrorCode.NOT_FOUND.value}, frozenset({404})
        expect_rejected(tally, answer, reached, codes, http_layer=True, statuses=statuses)

    try:
        run()
    finally:
        record_property("fuzz_figures", tally.figures())


INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80",
                b"\xe2\x82", b"\xf4\x90\x80\x80", b"\xc3"]
JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.text(max_size=10)
                | st.floats(allow_nan=False, allow_infinity=False))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)


def nested(depth: int, kind: str) -> bytes:
    opening = {"array": "[", "object": '{"a":', "mixed": '[{"a":'}[kind]
    closing = {"array": "]", "object": "}", "mixed": "}]"}[kind]
    levels = depth if kind != "mixed" else depth // 2 + 1
    return ('{"deep":' + opening * levels + "1" + closing * levels + "}").encode()


def not_a_json_object(text: str) -> bool:
    if not text.encode().strip():
        return False  # blank is "no body"; see the \x0b/\x0c test below
    try:
        return not isinstance(json.loads(text), dict)
    except ValueError:
        return True


@st.composite
def hostile_bodies(draw: st.DrawFn) -> tuple[bytes, int, str]:
    kind = draw(st.sampled_from(["huge", "deep", "utf8", "scalar", "text"]))
    invalid_json = GatewayErrorCode.INVALID_JSON.value
    if kind == "huge":
        size = draw(st.integers(MAX_BODY_BYTES + 1, 2 * MAX_BODY_BYTES))
        return b'{"a":"' + b"x" * (size - 8) + b'"}', 413, GatewayErrorCode.TOO_LARGE.value
    if kind == "deep":
        depth = draw(st.integers(33, 10_000))
        return nested(depth, draw(st.sampled_from(["array", "object", "mixed"]))), 400, invalid_json
    if kind == "utf8":
        junk = draw(st.sampled_from(INVALID_UTF8))
        return b'{"user": {"name": "' + junk + b'"}}', 400, invalid_json
    if kind == "scalar":
        value = draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
        return json.dumps(value).encode(), 400, invalid_json
    text = draw(st.text(min_size=1, max_size=40).filter(not_a_json_object))
    return text.encode(), 400, invalid_json


def test_hostile_bodies_never_reach_kisi(fuzz: FuzzStack, record_property: Any) -> None:
    tally = Tally()

    @bounded(HOSTILE * 3)
    @given(body=hostile_bodies(), method=st.sampled_from(["POST", "PUT", "PATCH"]))
    @example(body=(nested(10_000, "array"), 400, "9e0400"), method="POST")
    @example(body=(nested(10_000, "object"), 400, "9e0400"), method="POST")
    @example(body=(b"x" * (MAX_BODY_BYTES + 1), 413, "9e0413"), method="POST")
    def run(body: tuple[bytes, int, str], method: str) -> None:
        payload, status, code = body
        observe(fuzz, tally, {code}, method, "/kisi/users/7", body=payload,
                statuses=frozenset({status}))

    try:
        run()
    finally:
        record_property("fuzz_figures", tally.figures())


def test_a_body_over_api_gateways_limit_gets_its_413(
    fuzz: FuzzStack, record_property: Any
) -> None:
    tally = Tally()
    body = b'{"a":"' + b"x" * API_GATEWAY_PAYLOAD_LIMIT + b'"}'
    answer = observe(fuzz, tally, set(), "POST", "/kisi/users", body=body,
                     statuses=frozenset({413}))
    record_property("fuzz_figures", tally.figures())
    assert answer.status == 413
    assert json.loads(answer.body) == {"message": "Request Too Long"}


def test_head_and_options_are_405_and_never_reach_kisi(
    fuzz: FuzzStack, record_property: Any
) -> None:
    tally = Tally()
    paths = st.sampled_from(["/kisi/locks", "/kisi/locks/7/unlock", "/kisi/users/1", "/kisi/x"])

    @bounded(HOSTILE)
    @given(method=st.sampled_from(["HEAD", "OPTIONS"]), target=paths)
    def run(method: str, target: str) -> None:
        observe(fuzz, tally, {GatewayErrorCode.METHOD_NOT_ALLOWED.value}, method, target,
                statuses=frozenset({405}))

    try:
        run()
    finally:
        record_property("fuzz_figures", tally.figures())


UNKNOWN_METHODS = ["PROPFIND", "TRACE", "CONNECT", "MKCOL", "QUERY", "PURGE", "get", "FOO"]


def test_unknown_methods_never_reach_kisi(fuzz: FuzzStack, record_property: Any) -> None:
    tally = Tally()
    for method in UNKNOWN_METHODS:
        before = fuzz.sent_to_kisi()
        send(fuzz, method, "/kisi/locks/7/unlock")
        tally.known_bug_requests += 1
        tally.reached_kisi += fuzz.sent_to_kisi() - before
    record_property("fuzz_figures", tally.figures())
    assert tally.reached_kisi == 0


# -- what fuzzing found (fixed; kept as regression tests) ----------------------------------
@pytest.mark.parametrize("method", UNKNOWN_METHODS)
def test_unknown_methods_get_a_4xx(fuzz: FuzzStack, method: str) -> None:
    """Was http.server's HTML 501; now answered as API Gateway answers an unrouted method."""
    before = fuzz.sent_to_kisi()
    answer = send(fuzz, method, "/kisi/locks")
    assert fuzz.sent_to_kisi() == before
    assert shape_of(answer)[0] == "api-gateway", answer.body[:200]
    assert answer.status == 403


@pytest.mark.parametrize(
    "breaker", [b"\r", b"\rnot a header", b"\r "], ids=["bare-CR", "bare-CR-text", "bare-CR-SP"]
)
def test_a_bare_cr_in_a_header_is_rejected(fuzz: FuzzStack, breaker: bytes) -> None:
    """Was: the header block ended at the bare CR, Content-Length was lost, and the POST
    reached Kisi without its body. RFC 9112 2.2: a bare CR must be refused (a bare LF is a
    line end a server may accept, so it is not tested here)."""
    body = b'{"group": {"name": "split"}}'
    data = (b"POST /kisi/groups HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"x-api-key: " + FUZZ_KEY.encode() + b"\r\n"
            b"Idempotency-Key: abc" + breaker + b"X-Junk: 1\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    before = fuzz.sent_to_kisi()
    answer = send_raw(fuzz, data, "POST")
    assert fuzz.sent_to_kisi() == before
    assert answer is not None
    assert answer.status == 400


@pytest.mark.parametrize("encoded", ["%C2%85", "%C2%80", "%C2%9B"], ids=["NEL", "PAD", "CSI"])
def test_c1_controls_in_a_query_never_reach_kisi(fuzz: FuzzStack, encoded: str) -> None:
    """Was: only C0 and DEL were refused; C1 controls went to Kisi."""
    before = fuzz.sent_to_kisi()
    answer = send(fuzz, "GET", f"/kisi/locks?limit=1{encoded}")
    assert fuzz.sent_to_kisi() == before
    assert shape_of(answer)[0] == "gateway"
    assert (answer.status, json.loads(answer.body)["code"]) == (400, "9e0403")


@pytest.mark.parametrize("tail", [b"\x1c", b"\x1f", b"\x85", b"\xa0"],
                         ids=["FS", "US", "NEL", "NBSP"])
def test_unicode_whitespace_never_splits_the_request_line(fuzz: FuzzStack, tail: bytes) -> None:
    """Was: http.server split the request line on any Unicode whitespace, so a target ending
    in one of these was forwarded as a clean path."""
    before = fuzz.sent_to_kisi()
    answer = send_raw(fuzz, raw_request(fuzz, "GET", b"/kisi/locks" + tail))
    assert fuzz.sent_to_kisi() == before
    assert answer is not None
    assert 400 <= answer.status < 500


@pytest.mark.parametrize(
    "body",
    [b"NaN", b"Infinity", b"-Infinity", b"\x0b", b"\x0c \x0b"],
    ids=["NaN", "Infinity", "-Infinity", "VT", "FF-SP-VT"],
)
def test_bodies_that_are_not_json_never_reach_kisi(
    fuzz: FuzzStack, body: bytes, record_property: Any
) -> None:
    """Was: json.loads took NaN/Infinity, and bytes.strip() made VT/FF bodies "no body"."""
    tally = Tally(hostile_requests=1)
    before = fuzz.sent_to_kisi()
    answer = send(fuzz, "POST", "/kisi/users", body=body)
    reached = fuzz.sent_to_kisi() - before
    record_property("fuzz_figures", tally.figures())
    assert reached == 0, f"Kisi received {body!r} (answered {answer.status})"
    assert answer.status == 400


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: abc\r\n\r\n{}",
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"],
    ids=["content-length", "chunk-size"],
)
def test_unparseable_framing_is_answered(fuzz: FuzzStack, framing: bytes) -> None:
    """Was: a ValueError in the handler thread, and no answer at all."""
    head = b"POST /kisi/users HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    before = fuzz.sent_to_kisi()
    answer = send_raw(fuzz, head + f"x-api-key: {FUZZ_KEY}\r\n".encode() + framing, "POST")
    assert fuzz.sent_to_kisi() == before
    assert answer is not None, "no answer: the server hung up"
    assert answer.status == 400


# -- deferred answers, checked against the document ---------------------------------------
def test_a_deferred_call_and_its_record_match_the_document(
    fuzz: FuzzStack, record_property: Any
) -> None:
    """202 and GET /requests/{id} (queued, then succeeded) through schemathesis' checks.

    Last in the module: the retry worker sends the deferred call again in the background.
    """
    schema = schemathesis.openapi.from_url(f"{fuzz.url}/openapi.yaml", timeout=10)
    tally = Tally()
    call = schema["/kisi/{proxy}"]["POST"]
    lookup = schema["/requests/{id}"]["GET"]
    headers = {"x-api-key": FUZZ_KEY}
    # An outage that lasts until the 202 is in hand, however slow the machine, then ends.
    fuzz.sim.update_faults({"outage_seconds": 60})
    try:
        case = call.Case(path_parameters={"proxy": "locks/7/unlock"}, body={},
                         headers={"Prefer": "respond-async"})
        accepted = case.call(base_url=fuzz.url, headers=headers, timeout=30)
        tally.schemathesis_cases += 1
        case.validate_response(accepted, checks=CHECKS)
        assert accepted.status_code == 202
        document = accepted.json()
        assert document["status"] == "queued"
        assert document["last_outcome"] == {"class": "server_error", "status": 503}
        fuzz.sim.update_faults({"outage_seconds": 0})

        record: dict[str, Any] = {}
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            poll = lookup.Case(path_parameters={"id": document["request_id"]})
            answer = poll.call(base_url=fuzz.url, headers=headers, timeout=30)
            tally.schemathesis_cases += 1
            poll.validate_response(answer, checks=CHECKS)
            record = answer.json()
            if record["status"] in ("succeeded", "failed", "expired"):
                break
            time.sleep(0.3)
        assert record["status"] == "succeeded", record
        assert record["response"]["status"] == 200
        assert record["attempts"][0]["class"] == "server_error"
    finally:
        fuzz.sim.update_faults({"outage_until": None})
        record_property("fuzz_figures", tally.figures())
