"""Kisi's answers: the request and response values of the simulator core, and its errors.

Every error the simulator gives is Kisi-shaped (``{"error": "...", "code": "<6 hex>"}``) and
comes from the one :data:`ERRORS` table; the socket layer and the core build answers only
through the helpers here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ERRORS",
    "FAULT_ERRORS",
    "RATE_LIMIT_BODIES",
    "ErrorSpec",
    "SimRequest",
    "SimResponse",
    "collection_range",
    "error_response",
    "json_response",
    "kisi_error",
    "no_content",
    "retry_after_seconds",
]

JSON_TYPE: Final = "application/json; charset=utf-8"


@dataclass(frozen=True)
class ErrorSpec:
    """One Kisi-shaped error: status, message and six-hex-digit code."""

    status: int
    message: str
    code: str


# Every error the simulator can give. Codes are invented (Kisi publishes few) but keep Kisi's
# shape; fbc000 is Kisi's real "retry in seconds" code and a3b2c1 is the suspension contract.
ERRORS: Final[Mapping[str, ErrorSpec]] = {
    "unauthenticated": ErrorSpec(
        401, "You need to sign in or sign up before continuing.", "a1c401"
    ),
    "revoked": ErrorSpec(401, "Your login has expired or was revoked.", "a1c402"),
    # Kisi's documented code for a wrong e-mail, password or 2FA pin on POST /logins.
    "wrong_credentials": ErrorSpec(401, "Wrong email address or password.", "afc516"),
    "login_not_found": ErrorSpec(404, "Login not found", "f0b404"),
    "suspended": ErrorSpec(403, "Integration suspended due to too many bad requests", "a3b2c1"),
    "not_found_id": ErrorSpec(403, "You are not authorized to access this resource.", "f0b403"),
    "no_route": ErrorSpec(404, "Not found", "f0c404"),
    "method_not_allowed": ErrorSpec(405, "Method not allowed", "b0d405"),
    "invalid_json": ErrorSpec(400, "Invalid JSON in request body", "b0d400"),
    "invalid_param": ErrorSpec(400, "Invalid parameter", "b0d401"),
    "invalid_fault": ErrorSpec(400, "Invalid fault setting", "b0d402"),
    "malformed_request": ErrorSpec(400, "Malformed request", "b0d403"),
    "length_required": ErrorSpec(411, "Length required: send Content-Length", "b0d411"),
    "too_large": ErrorSpec(413, "Request body too large", "b0d413"),
    "rate_limited": ErrorSpec(429, "Too many requests", "fa4290"),
    "internal": ErrorSpec(500, "Internal server error", "e0e500"),
    "bad_gateway": ErrorSpec(502, "Bad gateway", "e0e502"),
    "unavailable": ErrorSpec(503, "Service unavailable", "fbc000"),
    "gateway_timeout": ErrorSpec(504, "Gateway timeout", "e0e504"),
}

# Which error an injected fault or an outage answers with, by configured status.
FAULT_ERRORS: Final[Mapping[int, str]] = {
    500: "internal",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class SimRequest:
    """One HTTP request as the simulator core sees it (the socket layer builds it).

    ``headers`` use lower-case names. ``body_problem`` names an ERRORS entry when the socket
    layer could not read the body (bad length, chunked, too large).
    """

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    client: str = "127.0.0.1"
    body_problem: str | None = None


@dataclass(frozen=True)
class SimResponse:
    """One answer: status, raw body and headers (Content-Length is added when sent)."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def with_headers(self, extra: Sequence[tuple[str, str]]) -> SimResponse:
        """The same answer with more headers; responses stay immutable."""
        return dataclasses.replace(self, headers=(*self.headers, *extra))

    def json(self) -> Any:
        """The body decoded as JSON, for callers that use :meth:`KisiSimulator.handle`."""
        return json.loads(self.body)


def json_response(
    status: int, payload: object, headers: Sequence[tuple[str, str]] = ()
) -> SimResponse:
    """A JSON answer with Kisi's content type."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return SimResponse(status, body, (("Content-Type", JSON_TYPE), *headers))


def error_response(status: int, message: str, code: str) -> SimResponse:
    """A Kisi-shaped error body with any status."""
    return json_response(status, {"error": message, "code": code})


def kisi_error(kind: str, detail: str | None = None) -> SimResponse:
    """The ERRORS entry ``kind``, with ``detail`` appended to its message."""
    spec = ERRORS[kind]
    message = spec.message if detail is None else f"{spec.message}: {detail}"
    return error_response(spec.status, message, spec.code)


def no_content() -> SimResponse:
    """Kisi's answer to updates, deletes and most lock actions."""
    return SimResponse(204)


RATE_LIMIT_BODIES: Final[Mapping[str, SimResponse]] = {
    "text": SimResponse(
        429, b"Too Many Requests", (("Content-Type", "text/plain; charset=utf-8"),)
    ),
    "json": kisi_error("rate_limited"),
    "empty": SimResponse(429),
}


def retry_after_seconds(wait: float) -> int:
    """Whole seconds until a token is available, rounded up, never 0.

    >>> retry_after_seconds(0.2), retry_after_seconds(10.0)
    (1, 10)
    """
    return max(1, math.ceil(wait - 1e-9))


def collection_range(offset: int, limit: int, total: int) -> str:
    """Kisi's ``X-Collection-Range``: the requested window, even past the end.

    >>> collection_range(10, 10, 15), collection_range(0, 50, 0)
    ('10-19/15', '*/0')
    """
    if total == 0:
        return "*/0"
    return f"{offset}-{offset + limit - 1}/{total}"
