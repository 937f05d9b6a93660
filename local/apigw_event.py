"""API Gateway REST API (payload format 1.0) Lambda proxy events, and the way back.

Pure functions: :func:`match_route` picks a route as API Gateway does, :func:`proxy_event`
builds the event API Gateway sends to the function, and :func:`proxy_response` turns what the
function returned into an HTTP answer, rejecting what API Gateway rejects (502).

What the event holds, as a deployed REST API builds it (sources: the input format in AWS's
"Lambda proxy integrations in API Gateway" guide, and events captured from live REST APIs):

- ``path``, ``requestContext.path`` and ``pathParameters`` keep the percent-encoding the
  client sent (``/users/space%20value`` stays so); an encoded ``%2F`` is not a separator.
- the query string is form-decoded: ``+`` is a space, ``%2B`` a plus;
  ``queryStringParameters`` keeps the last value of a repeated name,
  ``multiValueQueryStringParameters`` every value in order; ``name=`` and a bare ``name``
  give ``""``.
- header names keep the case the client sent, except the ones API Gateway writes itself
  (``Host``, ``User-Agent``, ``Authorization``, ``X-Forwarded-*``, ``X-Amzn-Trace-Id``);
  ``headers`` keeps the last value of a repeated header, ``multiValueHeaders`` all of them;
  ``Content-Length`` and the hop-by-hop headers (``Connection``, ``Transfer-Encoding``, ...)
  are not passed; ``X-Forwarded-For`` gets the client's address appended.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from local.stack import ApiRoute

__all__ = [
    "FORBIDDEN",
    "INTERNAL_SERVER_ERROR",
    "KEY_CHECK_FAILED",
    "MISSING_AUTHENTICATION_TOKEN",
    "REQUEST_TOO_LARGE",
    "SERVICE_UNAVAILABLE",
    "GatewayError",
    "HttpRequest",
    "HttpResponse",
    "MalformedProxyResponseError",
    "event_headers",
    "event_query",
    "gateway_error",
    "match_route",
    "proxy_event",
    "proxy_response",
]

_PARAM = re.compile(r"^\{([^}+]+)(\+?)\}$")
_PROXY_RESULT_KEYS = {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"}


@dataclass(frozen=True)
class HttpRequest:
    """An HTTP request as the local API server received it (path still percent-encoded)."""

    method: str
    path: str
    query: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    source_ip: str = "127.0.0.1"
    # The port the client connected to (X-Forwarded-Port); 0 when unknown.
    local_port: int = 0


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


@dataclass(frozen=True)
class GatewayError:
    """One of API Gateway's own answers (a "gateway response")."""

    status: int
    message: str
    error_type: str


# API Gateway's default gateway responses for a REST API (type -> status, message).
MISSING_AUTHENTICATION_TOKEN = GatewayError(
    403, "Missing Authentication Token", "MissingAuthenticationTokenException"
)
FORBIDDEN = GatewayError(403, "Forbidden", "ForbiddenException")
INTERNAL_SERVER_ERROR = GatewayError(502, "Internal server error", "InternalServerErrorException")
# The key could not be checked (the embedded AWS is down): API Gateway's DEFAULT_5XX answer.
KEY_CHECK_FAILED = GatewayError(500, "Internal server error", "InternalServerErrorException")
REQUEST_TOO_LARGE = GatewayError(413, "Request Too Long", "RequestTooLargeException")
# Local only: the stack is being provisioned again (moto lost it), so nothing is routed yet.
SERVICE_UNAVAILABLE = GatewayError(503, "Service Unavailable", "ServiceUnavailableException")


def gateway_error(error: GatewayError, request_id: str) -> HttpResponse:
    body = json.dumps({"message": error.message}).encode()
    return HttpResponse(
        error.status,
        [
            ("Content-Type", "application/json"),
            ("x-amzn-RequestId", request_id),
            ("x-amzn-ErrorType", error.error_type),
        ],
        body,
    )


# routing --------------------------------------------------------------------------------
def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


def _match(template: str, segments: list[str]) -> dict[str, str] | None:
    parts = _segments(template)
    params: dict[str, str] = {}
    for index, part in enumerate(parts):
        param = _PARAM.match(part)
        if param and param.group(2):  # greedy {name+}: one or more remaining segments
            rest = segments[index:]
            if not rest:
                return None
            # Kept percent-encoded, as a REST API passes them (an encoded %2F stays one).
            params[param.group(1)] = "/".join(rest)
            return params
        if index >= len(segments):
            return None
        if param:
            params[param.group(1)] = segments[index]
        elif part != segments[index]:
            return None
    return params if len(parts) == len(segments) else None


def _specificity(route: ApiRoute) -> tuple[list[int], int]:
    # Literal segments beat {param}, which beats {proxy+}; a method beats ANY.
    ranks = []
    for part in _segments(route.resource):
        param = _PARAM.match(part)
        ranks.append(2 if param and param.group(2) else 1 if param else 0)
    return ranks, 1 if route.method == "ANY" else 0


def match_route(
    routes: Iterable[ApiRoute], method: str, path: str
) -> tuple[ApiRoute, dict[str, str]] | None:
    """The route API Gateway would choose for ``method path``, with its path parameters.

    >>> r = ApiRoute("Api", "id", "v1", "/kisi/{proxy+}", "ANY", "Fn", True)
    >>> match_route([r], "GET", "/kisi/users/1")[1]
    {'proxy': 'users/1'}
    """
    segments = _segments(path)
    candidates = []
    for route in routes:
        if route.method not in (method.upper(), "ANY"):
            continue
        params = _match(route.resource, segments)
        if params is not None:
            candidates.append((_specificity(route), route, params))
    if not candidates:
        return None
    candidates.sort(key=lambda item: item[0])
    _, route, params = candidates[0]
    return route, params


# request -> event -----------------------------------------------------------------------
def event_query(query: str) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    """``queryStringParameters`` and ``multiValueQueryStringParameters`` for a raw query.

    Form decoding, as API Gateway does it: ``+`` is a space (clients encode a space so),
    ``%2B`` a plus; the single-value map keeps the last value of a repeated name.

    >>> event_query("q=a+b&tag=x%2By&ids[]=1&ids[]=2")
    ({'q': 'a b', 'tag': 'x+y', 'ids[]': '2'}, {'q': ['a b'], 'tag': ['x+y'], 'ids[]': ['1', '2']})
    """
    multi: dict[str, list[str]] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        multi.setdefault(unquote_plus(key), []).append(unquote_plus(value))
    if not multi:
        return None, None
    return {key: values[-1] for key, values in multi.items()}, multi


# Names API Gateway writes in this case whatever case the client used (it sets or rewrites
# these itself); every other name keeps the client's case.
_CANONICAL_NAMES = {
    name.lower(): name
    for name in (
        "Authorization",
        "Host",
        "User-Agent",
        "X-Amzn-Trace-Id",
        "X-Forwarded-For",
        "X-Forwarded-Port",
        "X-Forwarded-Proto",
    )
}
# Not passed to the function: the body's framing, and hop-by-hop headers, which end at the
# first proxy (RFC 9110, section 7.6.1).
_NOT_PASSED = frozenset(
    {"connection", "content-length", "keep-alive", "proxy-connection", "te", "trailer",
     "transfer-encoding", "upgrade"}
)


def event_headers(
    request_headers: Iterable[tuple[str, str]],
    *,
    source_ip: str,
    local_port: int,
    trace_id: str,
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``headers`` (last value of each name) and ``multiValueHeaders`` (all values, in order).

    >>> event_headers([("x-a", "1"), ("x-a", "2"), ("host", "h")], source_ip="10.0.0.1",
    ...               local_port=0, trace_id="Root=1")[0]  # doctest: +NORMALIZE_WHITESPACE
    {'x-a': '2', 'Host': 'h', 'X-Amzn-Trace-Id': 'Root=1', 'X-Forwarded-For': '10.0.0.1',
     'X-Forwarded-Proto': 'http'}
    """
    multi: dict[str, list[str]] = {}
    forwarded_for: list[str] = []
    for raw_name, value in request_headers:
        lowered = raw_name.lower()
        if lowered in _NOT_PASSED:
            continue
        if lowered == "x-forwarded-for":
            forwarded_for.append(value)
            continue
        multi.setdefault(_CANONICAL_NAMES.get(lowered, raw_name), []).append(value)
    # API Gateway's own view of the connection: the client's address appended to any chain
    # the client sent, the port and scheme it connected on.
    own = {
        "X-Amzn-Trace-Id": trace_id,
        "X-Forwarded-For": ", ".join([*forwarded_for, source_ip]),
        "X-Forwarded-Proto": "http",
    }
    if local_port:
        own["X-Forwarded-Port"] = str(local_port)
    for name, value in own.items():
        if name == "X-Amzn-Trace-Id" and name in multi:
            continue  # a caller's trace header is continued, not replaced
        multi[name] = [value]
    return {name: values[-1] for name, values in multi.items()}, multi


def _body(raw: bytes) -> tuple[str | None, bool]:
    if not raw:
        return None, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), True


def proxy_event(
    request: HttpRequest,
    route: ApiRoute,
    path_parameters: dict[str, str],
    *,
    account_id: str,
    api_key: str | None,
    api_key_id: str | None,
    request_id: str,
    now: datetime,
    domain_name: str,
) -> dict[str, Any]:
    """The event API Gateway sends to a Lambda proxy integration for this request."""
    trace_id = f"Root=1-{int(now.timestamp()):08x}-{uuid.uuid4().hex[:24]}"
    headers, multi_headers = event_headers(
        request.headers,
        source_ip=request.source_ip,
        local_port=request.local_port,
        trace_id=trace_id,
    )
    query, multi_query = event_query(request.query)
    body, is_base64 = _body(request.body)
    user_agent = headers.get("User-Agent")
    stage_path = f"/{route.stage}{request.path}"
    return {
        "resource": route.resource,
        "path": request.path,
        "httpMethod": request.method.upper(),
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": route.rest_api_id[:6],
            "resourcePath": route.resource,
            "httpMethod": request.method.upper(),
            "extendedRequestId": request_id.replace("-", "")[:16] + "=",
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": stage_path,
            "accountId": account_id,
            "protocol": "HTTP/1.1",
            "stage": route.stage,
            "domainPrefix": domain_name.split(".", 1)[0].split(":", 1)[0],
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": request.source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": user_agent,
                "user": None,
                "apiKey": api_key,
                "apiKeyId": api_key_id,
            },
            "domainName": domain_name,
            "apiId": route.rest_api_id,
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


# result -> response ---------------------------------------------------------------------
class MalformedProxyResponseError(ValueError):
    """What API Gateway logs as "Malformed Lambda proxy response" (and answers 502)."""


def proxy_response(result: Any, request_id: str) -> HttpResponse:
    """The HTTP answer for a proxy integration result; raises if API Gateway would refuse it."""
    if not isinstance(result, dict):
        raise MalformedProxyResponseError(f"result is {type(result).__name__}, not an object")
    extra = set(result) - _PROXY_RESULT_KEYS
    if extra:
        raise MalformedProxyResponseError(f"unexpected fields {sorted(extra)}")
    try:
        status = int(result.get("statusCode"))  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise MalformedProxyResponseError(f"statusCode {result.get('statusCode')!r}") from error
    body = result.get("body")
    if body is not None and not isinstance(body, str):
        raise MalformedProxyResponseError(f"body is {type(body).__name__}, not a string")
    headers: list[tuple[str, str]] = []
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise MalformedProxyResponseError("headers must be objects")
    # API Gateway merges both maps; for a name in both, only the multi-value list is sent.
    for name, values in multi.items():
        headers.extend((name, _header_text(value)) for value in values or [])
    multi_lower = {name.lower() for name in multi}
    for name, value in single.items():
        if name.lower() not in multi_lower:
            headers.append((name, _header_text(value)))
    names = {name.lower() for name, _ in headers}
    if "content-type" not in names:
        headers.append(("Content-Type", "application/json"))
    headers.append(("x-amzn-RequestId", request_id))
    raw = (body or "").encode("utf-8")
    if result.get("isBase64Encoded") and body:
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error as error:
            raise MalformedProxyResponseError("isBase64Encoded body is not base64") from error
    return HttpResponse(status, headers, raw)


def _header_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
