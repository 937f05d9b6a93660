"""api_call: API Gateway in, Kisi call, Kisi's answer or a 202 out.

Thin by design: Powertools' Event Handler routes the REST API event, ``kisi_gateway`` decides
everything, and this module only turns one into the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from kisi_gateway.config import Settings
from kisi_gateway.core.errors import GatewayError, GatewayErrorCode
from kisi_gateway.pipeline.calls import parse_call
from kisi_gateway.pipeline.forwarding import CallContext, Forwarder
from kisi_gateway.pipeline.replies import Reply, error_reply, location_rewriter

logger = Logger()
copy_config_to_registered_loggers(source_logger=logger, include={"kisi_gateway"})
app = APIGatewayRestResolver()
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@cache
def settings() -> Settings:
    return Settings.from_env(os.environ)


@cache
def forwarder() -> Forwarder:
    from kisi_gateway.wiring import build_forwarder  # noqa: PLC0415 - first call, not import

    return build_forwarder(settings())


def caller_scope(event: dict[str, Any]) -> str:
    """Who is calling, hashed: records and idempotency keys belong to one caller."""
    identity = (event.get("requestContext") or {}).get("identity") or {}
    who = identity.get("apiKeyId") or identity.get("apiKey") or identity.get("userArn")
    return hashlib.sha256(str(who or "anonymous").encode()).hexdigest()[:24]


def gateway_prefix(event: dict[str, Any]) -> str:
    """The path before ``/kisi`` or ``/requests`` as the caller sees it (e.g. ``/Prod``)."""
    full = (event.get("requestContext") or {}).get("path") or ""
    path = event.get("path") or ""
    return full[: -len(path)] if path and full.endswith(path) else ""


def context_for(event: dict[str, Any]) -> CallContext:
    from kisi_gateway.pipeline.kisi_http import KisiClient  # noqa: PLC0415

    base = settings().kisi_base_url
    origin = KisiClient(base, api_key="", session=object())  # type: ignore[arg-type]
    prefix = gateway_prefix(event)
    return CallContext(
        scope=caller_scope(event),
        gateway_prefix=prefix,
        rewrite_location=location_rewriter(origin.is_own_origin, prefix),
    )


def to_response(reply: Reply) -> Response[Any]:
    body: str | bytes = reply.body
    with contextlib.suppress(UnicodeDecodeError):  # else Powertools sends bytes as base64
        body = reply.body.decode("utf-8")
    return Response(status_code=reply.status, body=body, headers=dict(reply.headers))


@app.route("/kisi/.+", method=ALL_METHODS)
def kisi_proxy() -> Response[Any]:
    event = app.current_event
    proxy = (event.path_parameters or {}).get("proxy")
    path = "/" + proxy if proxy is not None else event.path.removeprefix("/kisi")
    multi = event.multi_value_query_string_parameters or {}
    query = [(name, value) for name, values in multi.items() for value in values or []]
    current = settings()
    call = parse_call(
        method=event.http_method,
        path=path,
        query=query,
        body=event.body,
        is_base64=event.is_base64_encoded or False,
        headers=dict(event.headers or {}),
        policies=current.policies,
        max_body_bytes=current.max_body_bytes,
        default_wait_s=current.default_wait_s,
        max_wait_s=current.max_wait_s,
    )
    return to_response(forwarder().forward(call, context_for(event.raw_event)))


@app.get("/requests/<request_id>")
def get_request(request_id: str) -> Response[Any]:
    return to_response(forwarder().lookup(request_id, context_for(app.current_event.raw_event)))


@app.exception_handler(GatewayError)
def gateway_error(error: GatewayError) -> Response[Any]:
    return to_response(error_reply(error))


@app.not_found
def not_found(_: NotFoundError) -> Response[Any]:
    return to_response(error_reply(GatewayError(404, GatewayErrorCode.NOT_FOUND, "no such route")))


@app.exception_handler(Exception)
def unexpected(error: Exception) -> Response[Any]:
    # Never a 500 to the caller: log the bug, answer a retryable, Kisi-shaped 503.
    logger.exception("unexpected error", extra={"error": type(error).__name__})
    return to_response(
        error_reply(
            GatewayError(503, GatewayErrorCode.INTERNAL, "the gateway failed unexpectedly",
                         retry_after=5)
        )
    )


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
