"""openapi.yaml is valid and kept in step with the code it describes.

The document is checked against what the code does, not against a copy of it: the routes of
template.yaml and api_call, the statuses of every ``GatewayError`` the code can raise, the
202 body ``replies.accepted()`` builds, the record ``RequestRecord.public()`` returns, the
headers ``calls.parse_call`` reads and the path rules of ``policy.route_template``.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

import api_call
from kisi_gateway.config import Settings
from kisi_gateway.core.errors import GatewayErrorCode
from kisi_gateway.core.identity import CredentialKind
from kisi_gateway.core.outcome import OutcomeClass
from kisi_gateway.core.policy import InvalidPathError, route_template
from kisi_gateway.core.records import AttemptEntry, RecordStatus, RequestRecord, StoredResponse
from kisi_gateway.pipeline import calls, http_api, replies
from kisi_gateway.pipeline.callers import Who
from kisi_gateway.pipeline.calls import IncomingCall
from kisi_gateway.pipeline.forwarding import CallContext, Forwarder
from kisi_gateway.pipeline.replies import Reply, json_reply
from kisi_gateway.stores.ports import RecordStoreError
from local.apigw import ApiGateway
from local.apigw_event import HttpRequest
from local.sam import load_template

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "openapi.yaml"
LAYER = ROOT / "layers" / "kisi_gateway" / "kisi_gateway"
HANDLER = ROOT / "functions" / "api_call" / "api_call.py"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return yaml.safe_load(DOCUMENT.read_text())


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """``node`` with every local ``$ref`` replaced by its target (the document has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return resolve(doc, copy.deepcopy(target))
        return {key: resolve(doc, value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(doc, item) for item in node]
    return node


def schema_of(doc: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = resolve(doc, doc["components"]["schemas"][name])
    return schema


def assert_valid(schema: dict[str, Any], instance: Any) -> None:
    Draft202012Validator.check_schema(schema)
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(instance)]
    assert not errors, errors


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def response(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any] | None:
    """The documented response for ``status``: exact code first, then its ``nXX`` range."""
    documented = doc["paths"][path][method]["responses"]
    for key in (str(status), f"{status // 100}XX"):
        if key in documented:
            found: dict[str, Any] = resolve(doc, documented[key])
            return found
    return None


def json_schema_of(answer: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = answer["content"]["application/json"]["schema"]
    return schema


# -- the document itself ------------------------------------------------------------------
def test_the_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(resolve(doc, schema))


def test_every_operation_needs_the_api_key_as_the_template_says(doc: dict[str, Any]) -> None:
    template = load_template(ROOT / "template.yaml")
    auth = template["Resources"]["GatewayApi"]["Properties"]["Auth"]
    assert auth["ApiKeyRequired"] is True
    assert doc["components"]["securitySchemes"]["ApiKey"] == {
        **doc["components"]["securitySchemes"]["ApiKey"],
        "type": "apiKey", "in": "header", "name": "x-api-key",
    }
    assert doc["security"] == [{"ApiKey": []}]
    for path, method, operation in operations(doc):
        assert operation.get("security", doc["security"]) == [{"ApiKey": []}], (path, method)


# -- routes: template, handler and document -----------------------------------------------
def template_routes() -> set[tuple[str, str]]:
    template = load_template(ROOT / "template.yaml")
    routes = set()
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "Api":
                assert event["Properties"]["RestApiId"] == {"Ref": "GatewayApi"}
                routes.add((event["Properties"]["Path"], event["Properties"]["Method"]))
    return routes


def test_paths_and_methods_are_the_templates(doc: dict[str, Any]) -> None:
    routes = template_routes()
    assert routes == {("/kisi/{proxy+}", "ANY"), ("/requests/{id}", "GET")}
    expected: set[tuple[str, str]] = set()
    for path, method in routes:
        methods = http_api.ALL_METHODS if method == "ANY" else [method]
        expected |= {(path.replace("+}", "}"), m.lower()) for m in methods}
    assert {(path, method) for path, method, _ in operations(doc)} == expected


@dataclass
class RecordingForwarder:
    """Stands in for the Forwarder: records that the handler got this far."""

    calls: list[IncomingCall] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def forward(self, call: IncomingCall, context: CallContext) -> Reply:
        self.calls.append(call)
        return json_reply(299, {})

    def lookup(self, request_id: str, context: CallContext) -> Reply:
        self.lookups.append(request_id)
        return json_reply(299, {})


@dataclass
class LambdaContext:
    function_name: str = "kisi-gateway-ApiCallFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:api"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"


def invoke(event: Any, path: str, method: str, resource: str) -> dict[str, Any]:
    raw = event("api_list_locks")
    raw.update(path=path, resource=resource, httpMethod=method.upper(), body=None)
    raw["requestContext"].update(path="/Prod" + path, resourcePath=resource,
                                 httpMethod=method.upper())
    raw["pathParameters"] = (
        {"proxy": path.removeprefix("/kisi/")} if path.startswith("/kisi/")
        else {"id": path.rsplit("/", 1)[-1]}
    )
    result: dict[str, Any] = api_call.handler(raw, LambdaContext())
    return result


def test_every_documented_operation_reaches_its_handler(
    doc: dict[str, Any], event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = RecordingForwarder()
    monkeypatch.setattr(api_call, "forwarder", lambda: fake)
    examples = {"/kisi/{proxy}": "/kisi/locks/42/unlock", "/requests/{id}": "/requests/abc123"}
    for path, method, operation in operations(doc):
        result = invoke(event, examples[path], method, path.replace("{proxy}", "{proxy+}"))
        if method.upper() in calls.ALLOWED_METHODS:
            assert result["statusCode"] == 299, (path, method, result)
        else:  # documented as answered 405 by the gateway itself
            assert result["statusCode"] == 405, (path, method, result)
            assert json.loads(result["body"])["code"] == GatewayErrorCode.METHOD_NOT_ALLOWED
            assert set(operation["responses"]) <= {"403", "405", "429"}
    assert len(fake.calls) == len(calls.ALLOWED_METHODS)
    assert fake.lookups == ["abc123"]
    # ...and the probe can tell: a path outside the document is the handler's 404.
    result = invoke(event, "/elsewhere", "GET", "/elsewhere")
    assert json.loads(result["body"])["code"] == GatewayErrorCode.NOT_FOUND


# -- statuses the gateway answers itself --------------------------------------------------
def gateway_error_statuses() -> dict[int, list[str]]:
    """Every ``GatewayError(<status>, ...)`` in the layer and the api_call handler."""
    found: dict[int, list[str]] = {}
    for source in [*sorted(LAYER.rglob("*.py")), HANDLER]:
        for node in ast.walk(ast.parse(source.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(
                node.func, "attr", None)
            if name != "GatewayError":
                continue
            status = node.args[0] if node.args else None
            where = f"{source.name}:{node.lineno}"
            assert isinstance(status, ast.Constant), f"{where}: a status this test cannot read"
            assert isinstance(status.value, int), where
            found.setdefault(status.value, []).append(f"{source.name}:{node.lineno}")
    return found


ERROR_EXAMPLE = {"error": "something is wrong", "code": GatewayErrorCode.INVALID_JSON.value}


def test_every_gateway_error_status_is_documented_with_a_kisi_shaped_body(
    doc: dict[str, Any]
) -> None:
    statuses = gateway_error_statuses()
    assert {400, 404, 405, 409, 413, 422, 503, 504} <= set(statuses)
    # The methods the gateway forwards: HEAD and OPTIONS end in 405 before anything else.
    kisi_methods = [m for p, m, _ in operations(doc)
                    if p == "/kisi/{proxy}" and m.upper() in calls.ALLOWED_METHODS]
    for status, where in statuses.items():
        documented = [
            (method, answer) for method in kisi_methods
            if (answer := response(doc, "/kisi/{proxy}", method, status)) is not None
            and "content" in answer
        ]
        assert documented, f"{status} (raised at {where}) is not documented on /kisi/{{proxy}}"
        for _, answer in documented:
            assert_valid(json_schema_of(answer), ERROR_EXAMPLE)


def test_the_error_codes_are_the_gateways(doc: dict[str, Any]) -> None:
    code = schema_of(doc, "ErrorBody")["properties"]["code"]
    assert set(code["enum"]) == {c.value for c in GatewayErrorCode}
    assert all(len(c.value) == 6 for c in GatewayErrorCode)
    assert code["minLength"] == code["maxLength"] == 6


def test_retryable_gateway_errors_document_retry_after(doc: dict[str, Any]) -> None:
    for _, method, operation in operations(doc):
        if "503" in operation["responses"]:
            answer = resolve(doc, operation["responses"]["503"])
            assert "Retry-After" in answer["headers"], method


# -- the 202 body and the record ----------------------------------------------------------
def a_record(**changes: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "request_id": "6f1c2d3e4b5a4c6d8e7f0a1b2c3d4e5f",
        "status": RecordStatus.QUEUED,
        "method": "POST",
        "path": "/locks/42/unlock",
        "route": "POST /locks/{id}/unlock",
        "policy": "unlock",
        "created_at": 1_796_000_000.0,
        "deadline": 1_796_000_030.0,
        "expires_at": 1_796_604_800,
        "attempts": (AttemptEntry(1_796_000_000.1, OutcomeClass.SERVER_ERROR.value, 503, 2),),
        "next_attempt_at": 1_796_000_002.1,
        "scope": "abc",
    }
    values.update(changes)
    return RequestRecord(**values)


def test_the_202_body_is_what_replies_accepted_builds(doc: dict[str, Any]) -> None:
    schema = schema_of(doc, "Accepted")
    reply = replies.accepted(a_record(), "/Prod")
    body = reply.json()
    assert set(body) == set(schema["properties"]) == set(schema["required"])
    outcome = schema["properties"]["last_outcome"]["oneOf"][1]
    assert set(body["last_outcome"]) == set(outcome["properties"]) == set(outcome["required"])
    assert_valid(schema, body)
    assert_valid(schema, replies.accepted(a_record(attempts=(), next_attempt_at=None), "").json())
    network = a_record(attempts=(AttemptEntry(1.0, OutcomeClass.NETWORK_ERROR.value, None, 1),))
    assert_valid(schema, replies.accepted(network, "/Prod").json())

    answer = response(doc, "/kisi/{proxy}", "post", 202)
    assert answer is not None
    headers = answer["headers"]
    sent = {name for name in reply.headers if name != "Content-Type"}
    assert sent == {name for name, header in headers.items() if header.get("required")}
    for name, value in reply.headers.items():
        if name != "Content-Type":
            header_schema = headers[name]["schema"]
            assert_valid(header_schema, int(value) if header_schema["type"] == "integer"
                         else value)
    assert json_schema_of(answer) == schema


def test_the_record_is_what_request_record_public_returns(doc: dict[str, Any]) -> None:
    schema = schema_of(doc, "RequestRecord")
    finished = a_record(
        status=RecordStatus.SUCCEEDED,
        next_attempt_at=None,
        response=StoredResponse.of(200, {"content-type": "application/json"}, b'{"ok":true}'),
    )
    public = finished.public()
    assert set(public) == set(schema["properties"]) == set(schema["required"])
    attempt = schema["properties"]["attempts"]["items"]
    assert set(public["attempts"][0]) == set(attempt["properties"]) == set(attempt["required"])
    stored = schema["properties"]["response"]["oneOf"][1]
    assert public["response"] is not None
    assert set(public["response"]) == set(stored["properties"]) == set(stored["required"])
    assert set(schema["properties"]["status"]["enum"]) == {s.value for s in RecordStatus}
    assert set(schema["properties"]["method"]["enum"]) == calls.ALLOWED_METHODS
    assert set(doc["components"]["schemas"]["OutcomeClass"]["enum"]) == {
        c.value for c in OutcomeClass}
    for record in [
        finished,
        a_record(),
        a_record(status=RecordStatus.SENDING, attempts=(), next_attempt_at=None),
        a_record(status=RecordStatus.EXPIRED, reason="attempts_exhausted",
                 response=StoredResponse.of(503, {}, b"\xff\xfe binary")),
        a_record(status=RecordStatus.FAILED, reason="unknown_outcome", next_attempt_at=None,
                 attempts=(AttemptEntry(1.0, OutcomeClass.NETWORK_ERROR.value),)),
    ]:
        assert_valid(schema, json.loads(json.dumps(record.public())))


@dataclass
class Records:
    """A record store for ``Forwarder.lookup``: one record, or unreachable."""

    record: RequestRecord | None = None
    down: bool = False

    def get(self, request_id: str) -> RequestRecord | None:
        if self.down:
            raise RecordStoreError("unreachable")
        return self.record


@dataclass
class OneCaller:
    """Callers for ``Forwarder.lookup``: every call acts in the scope ``scope``."""

    scope: str

    def who(self, api_key_id: str | None, authorization: str | None, route_key: str) -> Who:
        return Who("default", str(api_key_id), CredentialKind.SERVICE, None, "id-00000000",
                   self.scope, client=False)


def lookup(records: Records, request_id: str) -> Reply:
    forwarder = Forwarder(sender=None, records=records, queue=None,  # type: ignore[arg-type]
                          callers=OneCaller(a_record().scope),  # type: ignore[arg-type]
                          vault=None,  # type: ignore[arg-type]
                          record_ttl_s=1.0, read_timeout_s=1.0)
    return forwarder.lookup(request_id, CallContext("abc", None, "/Prod", lambda url: url))


def test_get_requests_answers_only_what_is_documented(doc: dict[str, Any]) -> None:
    record = a_record()
    answers = [
        lookup(Records(record), record.request_id),
        lookup(Records(None), record.request_id),
        lookup(Records(record), "not/alnum"),
        lookup(Records(a_record(scope="someone else")), record.request_id),
        lookup(Records(down=True), record.request_id),
    ]
    assert [a.status for a in answers] == [200, 404, 404, 404, 503]
    for reply in answers:
        answer = response(doc, "/requests/{id}", "get", reply.status)
        assert answer is not None, reply.status
        assert_valid(json_schema_of(answer), reply.json())
        documented = answer.get("headers", {})
        assert set(reply.headers) - {"Content-Type"} <= set(documented), reply.headers
        for name, header in documented.items():
            if header.get("required"):
                assert name in reply.headers, (reply.status, name)


# -- what the gateway reads from a call ---------------------------------------------------
def headers_read_by_calls() -> set[str]:
    """The names in every ``header(headers, "<Name>")`` call of calls.py and http_api.py."""
    names = set()
    trees = [ast.parse(Path(module.__file__).read_text()) for module in (calls, http_api)]
    for node in (node for tree in trees for node in ast.walk(tree)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "header" and len(node.args) == 2):
            literal = node.args[1]
            assert isinstance(literal, ast.Constant)
            assert isinstance(literal.value, str)
            names.add(literal.value)
    return names


def test_the_documented_request_headers_are_those_calls_reads(doc: dict[str, Any]) -> None:
    read = headers_read_by_calls()
    assert read == {"Idempotency-Key", "Prefer", "Authorization"}
    for path, method, operation in operations(doc):
        parameters = resolve(doc, operation.get("parameters", []))
        documented = {p["name"] for p in parameters if p["in"] == "header"}
        if path == "/kisi/{proxy}" and method.upper() in calls.ALLOWED_METHODS:
            assert documented == read, (path, method)
        else:  # HEAD, OPTIONS and GET /requests/{id} read no header
            assert documented == set(), (path, method)


def test_documented_limits_are_the_codes(doc: dict[str, Any]) -> None:
    parameters = doc["components"]["parameters"]
    assert parameters["IdempotencyKey"]["schema"]["maxLength"] == calls.MAX_IDEMPOTENCY_KEY
    assert parameters["KisiQuery"]["schema"]["maxProperties"] == calls.MAX_QUERY_PAIRS
    assert f"{calls.MAX_QUERY_LENGTH:,}" in parameters["KisiQuery"]["description"]
    body = doc["components"]["requestBodies"]["KisiBody"]["description"]
    assert f"at most {calls.MAX_JSON_DEPTH} levels" in body
    defaults = Settings.from_env({})
    assert f"{defaults.max_body_bytes:,}" in body
    wait = f"default {defaults.default_wait_s:g}, at most {defaults.max_wait_s:g}"
    assert wait in parameters["Prefer"]["description"]


# The path rules: the documented pattern and policy.route_template agree.
def proxy_pattern(doc: dict[str, Any]) -> str:
    pattern: str = doc["components"]["parameters"]["Proxy"]["schema"]["pattern"]
    return pattern


def accepted_by_policy(proxy: str) -> bool:
    try:
        route_template("/" + proxy)
    except InvalidPathError:
        return False
    return True


@pytest.mark.parametrize(
    "proxy",
    ["locks", "locks/", "locks/42/unlock", "locks/7/unlock/", "a/b/c/d/e/f/g/h",
     "users/AZ_az-09", "x" * 64, "locks/" + "9" * 128],
)
def test_documented_kisi_paths_are_accepted(doc: dict[str, Any], proxy: str) -> None:
    assert re.fullmatch(proxy_pattern(doc), proxy)
    assert accepted_by_policy(proxy)


@pytest.mark.parametrize(
    "proxy",
    ["", "/locks", "locks//7", "locks/../users", "Locks", "7/locks", "a/b/c/d/e/f/g/h/i",
     "x" * 65, "locks/" + "9" * 129, "locks/%2e%2e", "locks/7.json",
     "http://evil.example/locks", "locks/7/unlock//"],
)
def test_undocumented_kisi_paths_are_refused(doc: dict[str, Any], proxy: str) -> None:
    assert re.fullmatch(proxy_pattern(doc), proxy) is None
    assert not accepted_by_policy(proxy)


@settings(max_examples=150, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_proxy_pattern_and_route_template_agree(doc: dict[str, Any], data: Any) -> None:
    pattern = proxy_pattern(doc)
    documented = data.draw(st.from_regex(pattern, fullmatch=True))
    assert accepted_by_policy(documented), documented
    alphabet = st.sampled_from([*"abz09_-/AZ.%", "locks", "7", "unlock", "//"])
    candidate = "".join(data.draw(st.lists(alphabet, max_size=12)))
    assert (re.fullmatch(pattern, candidate) is not None) == accepted_by_policy(candidate), (
        candidate)


# -- served locally -----------------------------------------------------------------------
def test_the_local_api_serves_the_document_without_a_key(tmp_path: Path) -> None:
    def answer(gateway: ApiGateway, method: str = "GET") -> Any:
        return gateway.handle(HttpRequest(method, "/openapi.yaml", "", [], b""), "127.0.0.1")

    served = answer(ApiGateway([], None, api_keys={}, account_id="1",  # type: ignore[arg-type]
                               log=lambda line: None))
    assert served.status == 200
    assert ("Content-Type", "application/yaml") in served.headers
    assert served.body == DOCUMENT.read_bytes()
    missing = ApiGateway([], None, api_keys={}, account_id="1",  # type: ignore[arg-type]
                         log=lambda line: None, openapi_document=tmp_path / "none.yaml")
    assert answer(missing).status == 403  # API Gateway's "Missing Authentication Token"
    assert answer(ApiGateway([], None, api_keys={}, account_id="1",  # type: ignore[arg-type]
                             log=lambda line: None), "POST").status == 403
