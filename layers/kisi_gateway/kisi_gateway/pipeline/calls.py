"""Calls as callers send them to the gateway: validated before anything reaches Kisi.

Kisi counts every 4xx against the integration, so input the gateway can tell is wrong is
answered here, Kisi-shaped, and never forwarded: a path that is not a Kisi path, a body that
is not JSON, a header that cannot be honoured, a body too large to queue.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kisi_gateway.core.errors import GatewayError, GatewayErrorCode, bad_request
from kisi_gateway.core.policy import InvalidPathError, PolicyTable, Route

ALLOWED_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
MAX_QUERY_PAIRS = 50
MAX_QUERY_LENGTH = 2048
MAX_JSON_DEPTH = 32
MAX_IDEMPOTENCY_KEY = 255
_QUERY_NAME = re.compile(r"^[A-Za-z0-9_\[\].\-]{1,64}$")
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")
_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d{1,4})(?:$|[,;\s])")


@dataclass(frozen=True, slots=True)
class CallerPrefs:
    """What the caller asked for in ``Prefer`` (RFC 7240)."""

    wait_s: float
    respond_async: bool
    explicit_wait: bool = False  # the caller named its wait (``wait=N``)


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A validated call to forward to Kisi."""

    route: Route
    path: str
    query: tuple[tuple[str, str], ...]
    body: bytes | None
    idempotency_key: str | None
    prefs: CallerPrefs

    @property
    def method(self) -> str:
        return self.route.method

    def fingerprint(self) -> str:
        """A hash of what is sent, to notice an ``Idempotency-Key`` reused for another call."""
        digest = hashlib.sha256()
        for part in (self.method, self.path, json.dumps(self.query), self.body or b""):
            digest.update(part if isinstance(part, bytes) else part.encode())
            digest.update(b"\0")
        return digest.hexdigest()


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A header's value, whatever case the caller wrote its name in."""
    if not headers:
        return None
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def parse_call(
    *,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    body: str | None,
    is_base64: bool,
    headers: Mapping[str, str] | None,
    policies: PolicyTable,
    max_body_bytes: int,
    default_wait_s: float,
    max_wait_s: float,
) -> IncomingCall:
    """Check a call and resolve its route; raises :class:`GatewayError` with the answer."""
    method = method.upper()
    if method not in ALLOWED_METHODS:
        raise GatewayError(
            405, GatewayErrorCode.METHOD_NOT_ALLOWED, f"method {method[:16]} is not supported"
        )
    try:
        route = policies.resolve(method, path)
    except InvalidPathError as exc:
        raise bad_request(GatewayErrorCode.INVALID_PATH, f"invalid Kisi path: {exc}") from exc
    return IncomingCall(
        route=route,
        path=path.rstrip("/") or path,
        query=_query(query),
        body=_body(body, is_base64, max_body_bytes),
        idempotency_key=_idempotency_key(header(headers, "Idempotency-Key")),
        prefs=parse_prefer(header(headers, "Prefer"), default_wait_s, max_wait_s),
    )


def _query(pairs: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    if len(pairs) > MAX_QUERY_PAIRS:
        raise bad_request(GatewayErrorCode.INVALID_QUERY, "too many query parameters")
    if sum(len(k) + len(v) + 2 for k, v in pairs) > MAX_QUERY_LENGTH:
        raise bad_request(GatewayErrorCode.INVALID_QUERY, "query string too long")
    for name, value in pairs:
        if not _QUERY_NAME.match(name):
            raise bad_request(GatewayErrorCode.INVALID_QUERY, "invalid query parameter name")
        if any(_is_control(ch) for ch in value):
            raise bad_request(
                GatewayErrorCode.INVALID_QUERY, f"query parameter {name} has control characters"
            )
    return tuple(pairs)


def _is_control(ch: str) -> bool:
    """C0, DEL and C1 controls (U+0080-U+009F): never part of a value Kisi expects."""
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F


# JSON's own whitespace (RFC 8259): bytes.strip() would also drop VT and FF, which JSON
# does not allow, and turn a body of them into "no body".
_JSON_WHITESPACE = b" \t\r\n"


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN and Infinity; JSON does not


def _body(body: str | None, is_base64: bool, max_bytes: int) -> bytes | None:
    if body is None or body == "":
        return None
    if is_base64:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request(GatewayErrorCode.INVALID_JSON, "body is not valid base64") from exc
    else:
        raw = body.encode("utf-8", errors="surrogatepass")
    if len(raw) > max_bytes:
        raise GatewayError(
            413, GatewayErrorCode.TOO_LARGE, f"body is larger than {max_bytes} bytes"
        )
    if not raw.strip(_JSON_WHITESPACE):
        return None
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad_request(GatewayErrorCode.INVALID_JSON, "body is not valid JSON") from exc
    if _depth(document) > MAX_JSON_DEPTH:
        raise bad_request(GatewayErrorCode.INVALID_JSON, "body is nested too deeply")
    if not isinstance(document, dict):
        raise bad_request(GatewayErrorCode.INVALID_JSON, "body must be a JSON object")
    return raw


def _depth(document: object) -> int:
    """Nesting depth, iteratively (a hostile body must not exhaust the stack)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return deepest


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    key = value.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not _PRINTABLE.match(key):
        raise bad_request(
            GatewayErrorCode.INVALID_HEADER,
            f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY} printable ASCII characters",
        )
    return key


def parse_prefer(value: str | None, default_wait_s: float, max_wait_s: float) -> CallerPrefs:
    """``Prefer: wait=N`` (seconds, capped) and ``Prefer: respond-async``.

    >>> parse_prefer("respond-async, wait=100", 5, 25)
    CallerPrefs(wait_s=25.0, respond_async=True, explicit_wait=True)
    """
    if not value:
        return CallerPrefs(wait_s=default_wait_s, respond_async=False)
    lowered = value.lower()
    match = _WAIT.search(lowered)
    wait = min(float(match.group(1)), float(max_wait_s)) if match else float(default_wait_s)
    respond_async = "respond-async" in lowered
    return CallerPrefs(wait_s=wait, respond_async=respond_async, explicit_wait=match is not None)
