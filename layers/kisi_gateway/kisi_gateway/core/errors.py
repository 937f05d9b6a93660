"""Kisi error bodies, read defensively, and the gateway's own Kisi-shaped errors.

Kisi answers most errors with ``{"error": "...", "code": "afc516"}``, validation failures (422)
with ``{"errors": {"field": ["message"]}}``, OAuth endpoints with ``{"error",
"error_description"}``, and sometimes with no body or plain text (a 429 is not documented to
carry JSON). Kisi's own client falls back to code ``000000``; so does :func:`parse_kisi_error`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict

UNKNOWN_CODE = "000000"  # Kisi's JavaScript client uses this when a body has no code
_MAX_MESSAGE = 500  # error text kept for logs and notifications; bodies can be large


@dataclass(frozen=True, slots=True)
class KisiError:
    """What Kisi said went wrong, as far as its body tells."""

    message: str
    code: str = UNKNOWN_CODE
    field_errors: dict[str, list[str]] = field(default_factory=dict)
    description: str | None = None


def parse_kisi_error(body: bytes | str | None, status: int | None = None) -> KisiError:
    """Read any Kisi error body into a :class:`KisiError`; never raises.

    >>> parse_kisi_error(b'{"error": "Wrong email", "code": "afc516"}').code
    'afc516'
    >>> parse_kisi_error(b'{"errors": {"email": ["can\\'t be blank"]}}').field_errors
    {'email': ["can't be blank"]}
    >>> parse_kisi_error(b"Too Many Requests", 429).message
    'Too Many Requests'
    """
    text = _as_text(body)
    fallback = text.strip()[:_MAX_MESSAGE] or (f"HTTP {status}" if status else "no body")
    try:
        data: Any = json.loads(text) if text.strip() else None
    except ValueError:
        return KisiError(message=fallback)
    if not isinstance(data, dict):
        return KisiError(message=fallback)

    field_errors = _field_errors(data.get("errors"))
    raw_error = data.get("error")
    description = data.get("error_description")
    if isinstance(raw_error, str) and raw_error:
        message = raw_error
    elif field_errors:
        message = "; ".join(f"{name} {', '.join(msgs)}" for name, msgs in field_errors.items())
    else:
        message = fallback
    code = data.get("code")
    return KisiError(
        message=message[:_MAX_MESSAGE],
        code=code if isinstance(code, str) and code else UNKNOWN_CODE,
        field_errors=field_errors,
        description=description if isinstance(description, str) else None,
    )


def _as_text(body: bytes | str | None) -> str:
    if body is None:
        return ""
    if isinstance(body, bytes):
        return body.decode("utf-8", errors="replace")
    return body


def _field_errors(raw: object) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        return {}
    result: dict[str, list[str]] = {}
    for name, messages in raw.items():
        if isinstance(messages, list):
            result[str(name)] = [str(m) for m in messages]
        else:
            result[str(name)] = [str(messages)]
    return result


class ErrorBody(TypedDict):
    """The shape of every error the gateway itself answers: the same as Kisi's."""

    error: str
    code: str


class GatewayErrorCode(StrEnum):
    """Codes of the gateway's own errors: six hex-like characters, as Kisi's are.

    They start with ``9e`` so they never collide with a code Kisi sends.
    """

    INVALID_JSON = "9e0400"
    INVALID_PATH = "9e0401"
    INVALID_HEADER = "9e0402"
    INVALID_QUERY = "9e0403"
    UNAUTHORIZED = "9e0410"
    CREDENTIAL_REQUIRED = "9e0411"
    FORBIDDEN = "9e0430"
    CREDENTIALS_FORBIDDEN = "9e0431"
    SERVICE_LOGIN_PROTECTED = "9e0432"
    TENANT_UNKNOWN = "9e0433"
    NOT_FOUND = "9e0440"
    METHOD_NOT_ALLOWED = "9e0450"
    CONFLICT = "9e0490"
    TOO_LARGE = "9e0413"
    UNPROCESSABLE = "9e0422"
    RATE_LIMITED = "9e0429"
    PAUSED = "9e0503"
    UNAVAILABLE = "9e0530"
    UNKNOWN_OUTCOME = "9e0504"
    EXPIRED = "9e0508"
    INTERNAL = "9e0500"


class GatewayError(Exception):
    """An error the gateway answers itself, without (or instead of) asking Kisi."""

    def __init__(
        self,
        status: int,
        code: GatewayErrorCode,
        message: str,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def body(self) -> ErrorBody:
        return {"error": self.message, "code": self.code.value}


def bad_request(code: GatewayErrorCode, message: str) -> GatewayError:
    """A 400 for input that must never reach Kisi (it would count as a bad request)."""
    return GatewayError(400, code, message)


def unavailable(message: str, retry_after: int) -> GatewayError:
    """A 503 the caller may retry after ``retry_after`` seconds."""
    return GatewayError(503, GatewayErrorCode.UNAVAILABLE, message, retry_after=retry_after)
