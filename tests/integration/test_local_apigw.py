"""The local API Gateway over real HTTP: the exact proxy event, API keys, gateway errors."""

import base64
import socket

import pytest
import requests
from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventModel

from local.apigw import MAX_PAYLOAD_BYTES, ApiGateway
from local.apigw_event import HttpRequest, match_route
from local.moto_server import aws_client
from local.stack import ApiRoute
from tests.fixtures.local_stack.harness import (
    API_KEY,
    quiet_runtime,
    recorded,
    shared_moto,
)

KEY = {"x-api-key": API_KEY}


@pytest.fixture(scope="module")
def runtime():
    with quiet_runtime("apigw", api_key=API_KEY) as runtime:
        yield runtime


@pytest.fixture
def url(runtime):
    return runtime.gateway_url


def last_api_event():
    return recorded("api")[-1]


def test_proxy_event_has_the_api_gateway_shape(url, runtime):
    reply = requests.post(
        f"{url}/kisi/users/42?a=1&a=2&b=x%20y",
        data=b'{"name": "door"}',
        headers={**KEY, "Content-Type": "application/json", "X-Twice": "1"},
        timeout=10,
    )
    assert reply.status_code == 200
    entry = last_api_event()
    event = entry["event"]
    APIGatewayProxyEventModel.model_validate(event)  # Powertools' model of the real event

    assert event["resource"] == "/kisi/{proxy+}"
    assert event["path"] == "/kisi/users/42"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"proxy": "users/42"}
    assert event["queryStringParameters"] == {"a": "2", "b": "x y"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": ["x y"]}
    assert event["stageVariables"] is None
    assert event["body"] == '{"name": "door"}'
    assert event["isBase64Encoded"] is False
    assert event["headers"]["Content-Type"] == "application/json"
    assert event["multiValueHeaders"]["X-Twice"] == ["1"]
    context = event["requestContext"]
    assert context["resourcePath"] == "/kisi/{proxy+}"
    assert context["httpMethod"] == "POST"
    assert context["stage"] == "v1"
    assert context["path"] == "/v1/kisi/users/42"
    assert context["accountId"] == "123456789012"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["apiKey"] == API_KEY
    assert context["identity"]["userAgent"].startswith("python-requests")
    assert context["apiId"] == runtime.stack.physical_id("Api")
    assert isinstance(context["requestTimeEpoch"], int)
    assert context["domainName"] == url.removeprefix("http://")

    assert entry["function_name"] == "apigw-ApiFunction"
    assert entry["memory_limit_in_mb"] == "256"
    assert entry["invoked_function_arn"].endswith(":function:apigw-ApiFunction")
    assert 0 < entry["remaining_ms"] <= 5000
    assert reply.headers["X-Request-Id"] == entry["aws_request_id"]


def test_raw_http_request_becomes_the_event_api_gateway_builds(url):
    """Over a plain socket, so nothing rewrites what is sent: header case and repeats, a
    ``+`` in the query, an encoded path."""
    port = int(url.rsplit(":", 1)[1])
    raw = (
        b"GET /kisi/capture/space%20value?q=a+b&plus=a%2Bb&ids[]=1&ids[]=2 HTTP/1.1\r\n"
        b"host: 127.0.0.1\r\nx-api-key: " + API_KEY.encode() + b"\r\n"
        b"x-probe: first\r\nX-Probe-Case: Kept\r\nx-probe: second\r\n"
        b"user-agent: raw-socket\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 200")
    event = last_api_event()["event"]
    assert event["path"] == "/kisi/capture/space%20value"
    assert event["pathParameters"] == {"proxy": "capture/space%20value"}
    assert event["queryStringParameters"] == {"q": "a b", "plus": "a+b", "ids[]": "2"}
    assert event["multiValueQueryStringParameters"]["ids[]"] == ["1", "2"]
    assert event["headers"]["x-probe"] == "second"
    assert event["multiValueHeaders"]["x-probe"] == ["first", "second"]
    assert event["headers"]["X-Probe-Case"] == "Kept"
    assert event["headers"]["Host"] == "127.0.0.1"
    assert event["headers"]["User-Agent"] == "raw-socket"
    assert event["headers"]["X-Forwarded-Port"] == str(port)
    assert "Connection" not in event["headers"]


def test_result_maps_back_to_http(url):
    reply = requests.get(f"{url}/kisi/places", headers=KEY, timeout=10)
    assert reply.status_code == 200
    assert reply.json() == {
        "method": "GET",
        "proxy": "places",
        "table": "apigw-RecordsTable",
        "stage_label": "v1-us-east-1",
    }
    assert reply.raw.headers.getlist("X-Multi") == ["a", "b"]
    assert last_api_event()["event"]["queryStringParameters"] is None
    assert last_api_event()["event"]["body"] is None


def test_binary_bodies_travel_base64_encoded(url):
    reply = requests.put(f"{url}/kisi/binary", data=b"\xff\xfe\x00", headers=KEY, timeout=10)
    event = last_api_event()["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe\x00"
    assert reply.content == b"\x00\xffbinary"
    assert reply.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("headers", "path", "status", "message"),
    [
        ({}, "/kisi/users", 403, "Forbidden"),  # key required, none sent
        ({"x-api-key": "wrong"}, "/kisi/users", 403, "Forbidden"),
        ({}, "/unknown", 403, "Missing Authentication Token"),  # REST API: unknown path
        (KEY, "/kisi", 403, "Missing Authentication Token"),  # {proxy+} needs a segment
        (KEY, "/kisi/boom", 502, "Internal server error"),  # the handler raised
        (KEY, "/kisi/malformed", 502, "Internal server error"),  # body is not a string
    ],
)
def test_gateway_answers_like_api_gateway(url, headers, path, status, message):
    reply = requests.get(f"{url}{path}", headers=headers, timeout=10)
    assert reply.status_code == status
    assert reply.json() == {"message": message}


def test_routes_without_key_and_deployed_url_shape(url):
    assert requests.get(f"{url}/health", timeout=10).json() == {"ok": True}
    assert requests.get(f"{url}/v1/health", timeout=10).json() == {"ok": True}
    reply = requests.get(f"{url}/requests/abc", headers=KEY, timeout=10)
    assert reply.status_code == 404
    assert last_api_event()["event"]["pathParameters"] == {"id": "abc"}


def test_payload_over_ten_megabytes_is_refused(url):
    reply = requests.post(
        f"{url}/kisi/big", data=b"x" * (MAX_PAYLOAD_BYTES + 1), headers=KEY, timeout=30
    )
    assert reply.status_code == 413


def test_route_precedence_literal_then_parameter_then_greedy():
    routes = [
        ApiRoute("A", "id", "v1", "/kisi/{proxy+}", "ANY", "Greedy", True),
        ApiRoute("A", "id", "v1", "/kisi/{id}", "GET", "Param", True),
        ApiRoute("A", "id", "v1", "/kisi/health", "GET", "Literal", True),
        ApiRoute("A", "id", "v1", "/kisi/health", "ANY", "LiteralAny", True),
    ]
    assert match_route(routes, "GET", "/kisi/health")[0].function == "Literal"
    assert match_route(routes, "POST", "/kisi/health")[0].function == "LiteralAny"
    assert match_route(routes, "GET", "/kisi/7")[0].function == "Param"
    assert match_route(routes, "GET", "/kisi/7/doors")[0].function == "Greedy"
    assert match_route(routes, "GET", "/other") is None


def test_handler_reaches_the_embedded_aws_through_the_environment(url, runtime):
    reply = requests.post(f"{url}/kisi/enqueue", data="from-api", headers=KEY, timeout=10)
    assert reply.status_code == 202
    outcome = runtime.pollers[0].poll_once(wait_time_s=1)
    assert (outcome.received, outcome.deleted) == (1, 1)
    assert recorded("worker")[-1]["event"]["Records"][0]["body"] == "from-api"


def test_callers_are_the_enabled_keys_of_the_usage_plan():
    """A key added in moto's API Gateway (no redeploy) is accepted and becomes the event's
    apiKeyId; a disabled or deleted one is refused. The cache is off for this runtime."""
    with quiet_runtime("apigw-keys", api_key=API_KEY, api_key_cache_s=0) as runtime:
        url = runtime.gateway_url
        apigw = aws_client("apigateway", shared_moto().endpoint_url)
        (plan_id,) = runtime.stack.usage_plans
        stack_key = next(key for key in runtime.stack.api_keys if key.runtime_key)

        # the runtime's key is the stack's key (too short for API Gateway: a generated value
        # is stored, and the runtime's value stands for it locally)
        assert requests.get(f"{url}/kisi/a", headers=KEY, timeout=10).status_code == 200
        identity = last_api_event()["event"]["requestContext"]["identity"]
        assert (identity["apiKey"], identity["apiKeyId"]) == (API_KEY, stack_key.key_id)
        assert apigw.get_api_key(apiKey=stack_key.key_id, includeValue=True)["enabled"]

        tenant = "tenant-a-0123456789abcdef"
        assert requests.get(f"{url}/kisi/a", headers={"x-api-key": tenant},
                            timeout=10).status_code == 403
        key_id = apigw.create_api_key(name="tenant-a", enabled=True, value=tenant)["id"]
        assert requests.get(f"{url}/kisi/a", headers={"x-api-key": tenant},
                            timeout=10).status_code == 403  # not in the usage plan yet
        apigw.create_usage_plan_key(usagePlanId=plan_id, keyId=key_id, keyType="API_KEY")
        assert requests.get(f"{url}/kisi/a", headers={"x-api-key": tenant},
                            timeout=10).status_code == 200
        identity = last_api_event()["event"]["requestContext"]["identity"]
        assert (identity["apiKey"], identity["apiKeyId"]) == (tenant, key_id)

        apigw.update_api_key(apiKey=key_id, patchOperations=[
            {"op": "replace", "path": "/enabled", "value": "false"}])
        assert requests.get(f"{url}/kisi/a", headers={"x-api-key": tenant},
                            timeout=10).status_code == 403
        apigw.update_api_key(apiKey=key_id, patchOperations=[
            {"op": "replace", "path": "/enabled", "value": "true"}])
        assert requests.get(f"{url}/kisi/a", headers={"x-api-key": tenant},
                            timeout=10).status_code == 200
        apigw.delete_api_key(apiKey=key_id)
        reply = requests.get(f"{url}/kisi/a", headers={"x-api-key": tenant}, timeout=10)
        assert (reply.status_code, reply.json()) == (403, {"message": "Forbidden"})


def test_provisioning_puts_the_stack_key_and_plan_in_moto(runtime):
    apigw = aws_client("apigateway", shared_moto().endpoint_url)
    plans = {plan["id"]: plan for plan in apigw.get_usage_plans()["items"]}
    (plan_id,) = runtime.stack.usage_plans
    assert plans[plan_id]["name"] == "apigw-ApiUsagePlan"
    assert plans[plan_id]["apiStages"] == [
        {"apiId": runtime.stack.physical_id("Api"), "stage": "v1"}]
    (key,) = runtime.stack.api_keys
    assert apigw.get_usage_plan_key(usagePlanId=plan_id, keyId=key.key_id)["id"] == key.key_id
    line = runtime.stack.resources["ApiApiKey"].report_line()
    assert line.startswith(f"created: ApiApiKey AWS::ApiGateway::ApiKey -> {key.key_id}")
    assert "accepted as this key by the local API only" in line


def test_while_the_stack_is_provisioned_again_the_api_answers_503():
    reason = ["the stack is being provisioned again"]
    gateway = ApiGateway([], None, api_keys={}, account_id="123456789012",  # type: ignore[arg-type]
                         log=lambda line: None, unavailable=lambda: reason[0])
    request = HttpRequest("GET", "/kisi/locks", "", [], b"")
    answer = gateway.handle(request, "127.0.0.1")
    assert (answer.status, answer.body) == (503, b'{"message": "Service Unavailable"}')
    reason[0] = None
    assert gateway.handle(request, "127.0.0.1").status == 403  # routed again (no such route)
