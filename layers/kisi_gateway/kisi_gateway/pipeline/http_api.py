"""The gateway's own HTTP API: an API Gateway REST proxy event in, a proxy response out.

Two routes (template.yaml): ``ANY /kisi/{proxy+}`` is forwarded to Kisi, ``GET /requests/{id}``
answers a request record. Everything else is a Kisi-shaped 404; no input yields a 500 (an
unexpected failure is a retryable 503). A two-route dispatch written here rather than
Powertools' Event Handler: importing the resolver package costs api_call ~100 ms of cold start
(it loads every resolver and event class), for routing two paths.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypedDict

from kisi_gateway.config import Settings
from kisi_gateway.core.errors import GatewayError, GatewayErrorCode
from kisi_gateway.pipeline.calls import header, parse_call
from kisi_gateway.pipeline.forwarding import CallContext
from kisi_gateway.pipeline.kisi_http import same_origin
from kisi_gateway.pipeline.replies import Reply, error_reply, location_rewriter

LOG = logging.getLogger("kisi_gateway")
# What API Gateway's ANY covers; the gateway forwards five of them (calls.ALLOWED_METHODS).
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_PROXY = re.compile(r"/kisi/(?P<proxy>.+)")  # no DOTALL: a path with a line break is no route
_RECORD = re.compile(r"/requests/(?P<id>[^/]+)")
INTERNAL_RETRY_AFTER_S = 5


class ProxyResponse(TypedDict):
    """What a REST API Lambda proxy integration returns (payload format 1.0)."""

    statusCode: int
    headers: dict[str, str]
    body: str
    isBase64Encoded: bool


class Forwarding(Protocol):
    """What the API needs of :class:`~kisi_gateway.pipeline.forwarding.Forwarder`."""

    def forward(self, call: Any, context: CallContext) -> Reply: ...
    def lookup(self, request_id: str, context: CallContext) -> Reply: ...


def caller_id(event: Mapping[str, Any]) -> str | None:
    """Which caller this is: its API key's id (as API Gateway fills it in), else its IAM user."""
    identity = (event.get("requestContext") or {}).get("identity") or {}
    who = identity.get("apiKeyId") or identity.get("userArn")
    return str(who) if who else None


def authorization(event: Mapping[str, Any]) -> str | None:
    """The caller's ``Authorization`` header; two different ones are refused (which would
    Kisi receive?)."""
    values = {
        str(value) for name, many in (event.get("multiValueHeaders") or {}).items()
        if str(name).lower() == "authorization" for value in many or []
    }
    if len(values) > 1:
        raise GatewayError(400, GatewayErrorCode.INVALID_HEADER,
                           "Authorization: send one credential, not several")
    single = header(event.get("headers"), "Authorization")
    return single if single is not None else next(iter(values), None)


def gateway_prefix(event: Mapping[str, Any]) -> str:
    """The path before ``/kisi`` or ``/requests`` as the caller sees it (e.g. ``/Prod``)."""
    full = (event.get("requestContext") or {}).get("path") or ""
    path = event.get("path") or ""
    return str(full[: -len(path)]) if path and full.endswith(path) else ""


def context_for(event: Mapping[str, Any], settings: Settings) -> CallContext:
    """The caller's scope and how to write gateway URLs for it."""
    prefix = gateway_prefix(event)
    base = settings.kisi_base_url
    return CallContext(
        api_key_id=caller_id(event),
        authorization=authorization(event),
        gateway_prefix=prefix,
        rewrite_location=location_rewriter(lambda url: same_origin(url, base), prefix),
    )


def to_response(reply: Reply) -> ProxyResponse:
    """A reply as API Gateway wants it: text bodies as text, anything else base64."""
    try:
        return {"statusCode": reply.status, "headers": dict(reply.headers),
                "body": reply.body.decode("utf-8"), "isBase64Encoded": False}
    except UnicodeDecodeError:
        return {"statusCode": reply.status, "headers": dict(reply.headers),
                "body": base64.b64encode(reply.body).decode("ascii"), "isBase64Encoded": True}


def _query(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    multi = event.get("multiValueQueryStringParameters") or {}
    return [(name, value) for name, values in multi.items() for value in values or []]


def _route(
    event: Mapping[str, Any], forwarder: Callable[[], Forwarding], settings: Settings
) -> Reply:
    path = str(event.get("path") or "")
    method = str(event.get("httpMethod") or "").upper()
    proxy = _PROXY.fullmatch(path)
    if proxy is not None:
        given = (event.get("pathParameters") or {}).get("proxy")
        call = parse_call(
            method=method,
            path="/" + (given if given is not None else proxy.group("proxy")),
            query=_query(event),
            body=event.get("body"),
            is_base64=bool(event.get("isBase64Encoded")),
            headers=dict(event.get("headers") or {}),
            policies=settings.policies,
            max_body_bytes=settings.max_body_bytes,
            default_wait_s=settings.default_wait_s,
            max_wait_s=settings.max_wait_s,
        )
        return forwarder().forward(call, context_for(event, settings))
    record = _RECORD.fullmatch(path)
    if record is not None and method == "GET":
        return forwarder().lookup(record.group("id"), context_for(event, settings))
    return error_reply(GatewayError(404, GatewayErrorCode.NOT_FOUND, "no such route"))


def handle(
    event: Mapping[str, Any], forwarder: Callable[[], Forwarding], settings: Settings
) -> ProxyResponse:
    """Answer one API Gateway event; never raises."""
    try:
        return to_response(_route(event, forwarder, settings))
    except GatewayError as error:
        return to_response(error_reply(error))
    except Exception as error:
        # Never a 500 to the caller: log the bug, answer a retryable, Kisi-shaped 503.
        LOG.exception("unexpected error", extra={"error": type(error).__name__})
        return to_response(error_reply(GatewayError(
            503, GatewayErrorCode.INTERNAL, "the gateway failed unexpectedly",
            retry_after=INTERNAL_RETRY_AFTER_S,
        )))
