"""What the gateway answers its callers: Kisi's answer passed through, a 202, or its own error.

Pass-through (DESIGN.md "Contracts"): status, body and the headers a caller of Kisi relies on
(``Content-Type``, ``X-Collection-Range``, ``Retry-After``, ``Deprecation``, ``Sunset``,
``Location``). A ``Location`` on Kisi's own origin is rewritten onto the gateway, so a caller
never follows it to Kisi without the gateway; one elsewhere is returned unchanged (and never
followed by the gateway, which would carry the key there).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kisi_gateway.core.errors import GatewayError, GatewayErrorCode
from kisi_gateway.core.records import AttemptEntry, RequestRecord, StoredResponse

PASS_THROUGH_HEADERS = (
    "content-type",
    "x-collection-range",
    "retry-after",
    "deprecation",
    "sunset",
    "location",
)
_CANONICAL = {
    "content-type": "Content-Type",
    "x-collection-range": "X-Collection-Range",
    "retry-after": "Retry-After",
    "deprecation": "Deprecation",
    "sunset": "Sunset",
    "location": "Location",
}
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer to the caller."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def with_headers(self, **extra: str) -> Reply:
        return Reply(self.status, {**self.headers, **extra}, self.body)


def json_reply(status: int, document: object, headers: Mapping[str, str] | None = None) -> Reply:
    body = json.dumps(document, separators=(",", ":")).encode()
    return Reply(status, {"Content-Type": JSON, **(headers or {})}, body)


def error_reply(error: GatewayError, request_id: str | None = None) -> Reply:
    """A gateway error as Kisi would shape it, with ``Retry-After`` when it has one."""
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if request_id:
        headers["X-Gateway-Request-Id"] = request_id
    return json_reply(error.status, error.body(), headers)


LocationRewriter = Callable[[str], str]


def pass_through(
    response: StoredResponse,
    *,
    request_id: str,
    attempts: int,
    rewrite_location: LocationRewriter,
) -> Reply:
    """Kisi's answer as the caller gets it back."""
    headers: dict[str, str] = {}
    for name in PASS_THROUGH_HEADERS:
        value = response.headers.get(name)
        if value is None:
            continue
        headers[_CANONICAL[name]] = rewrite_location(value) if name == "location" else value
    headers["X-Gateway-Request-Id"] = request_id
    headers["X-Gateway-Attempts"] = str(attempts)
    return Reply(response.status, headers, response.body)


def location_rewriter(
    is_kisi_origin: Callable[[str], bool], gateway_prefix: str
) -> LocationRewriter:
    """Rewrite a ``Location`` that points at Kisi (absolute or relative) onto the gateway.

    >>> rewrite = location_rewriter(lambda url: url.startswith("https://api.kisi.io"), "/Prod")
    >>> rewrite("https://api.kisi.io/locks/7?x=1")
    '/Prod/kisi/locks/7?x=1'
    >>> rewrite("https://elsewhere.example/file")
    'https://elsewhere.example/file'
    """

    def rewrite(location: str) -> str:
        parts = urlsplit(location)
        if parts.scheme or parts.netloc:
            if not is_kisi_origin(location):
                return location
        elif not parts.path.startswith("/"):
            return location  # relative to the current path: already on the gateway
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        return f"{gateway_prefix}/kisi{target}"

    return rewrite


def accepted(record: RequestRecord, gateway_prefix: str) -> Reply:
    """The 202 for a deferred request (DESIGN.md "Contracts")."""
    last: AttemptEntry | None = record.attempts[-1] if record.attempts else None
    retry_after = 1
    if record.next_attempt_at is not None and record.attempts:
        retry_after = max(1, round(record.next_attempt_at - record.attempts[-1].at))
    document = {
        "request_id": record.request_id,
        "status": "queued",
        "attempts": record.attempt_count,
        "next_attempt_at": record.next_attempt_at,
        "deadline": record.deadline,
        "last_outcome": {"class": last.cls, "status": last.status} if last else None,
    }
    return json_reply(
        202,
        document,
        {
            "Location": f"{gateway_prefix}/requests/{record.request_id}",
            "Retry-After": str(retry_after),
            "X-Gateway-Request-Id": record.request_id,
            "X-Gateway-Attempts": str(record.attempt_count),
        },
    )


def final_reply(record: RequestRecord, rewrite_location: LocationRewriter) -> Reply:
    """The answer for a request that has ended: Kisi's last answer, or why there is none."""
    if record.response is not None:
        return pass_through(
            record.response,
            request_id=record.request_id,
            attempts=record.attempt_count,
            rewrite_location=rewrite_location,
        )
    if record.reason == "unknown_outcome":
        error = GatewayError(
            504, GatewayErrorCode.UNKNOWN_OUTCOME,
            "Kisi did not answer after the request was sent; it may have been applied and "
            "this route does not repeat it",
        )
    else:
        error = GatewayError(
            504, GatewayErrorCode.EXPIRED,
            f"Kisi could not be reached before the request ended ({record.reason})",
        )
    return error_reply(error, record.request_id).with_headers(
        **{"X-Gateway-Attempts": str(record.attempt_count)}
    )
