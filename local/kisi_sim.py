"""A Kisi API simulator: a real HTTP server on loopback that answers like api.kisi.io.

Why it exists: the gateway's job is to survive Kisi's failure modes (429 storms, 5xx, hangs
with an unknown outcome, revoked keys, suspension). Testing that against the real Kisi is slow,
rude and never deterministic, so this module plays Kisi on 127.0.0.1 with the behaviour recorded
in ``/work/shared/KISI_API.md`` and adds switches that inject each failure on demand. It uses
the standard library only, so ``make run``, the tests, the demo and the benchmarks share it.

Run it in the foreground (Ctrl-C stops it)::

    python -m local.kisi_sim --port 8080
    kisi-sim listening on http://127.0.0.1:8080

Embed it (tests and benchmarks inject the clock, the random source and the sleep)::

    with KisiSimulator(SimConfig(seed_counts={"locks": 3}), clock=fake_clock) as sim:
        requests.get(f"{sim.url}/locks", headers={"Authorization": "KISI-LOGIN sim-demo-key"})
        assert len(sim.calls("GET", "/locks")) == 1

What it mimics (each rule comes from KISI_API.md):

- ``Authorization: KISI-LOGIN <secret>`` on every call; a key belongs to a user and all keys
  of a user share one token bucket (5 req/s, burst 5); ``POST /event_sets`` 1/s and
  ``POST /signed_upload_urls`` 1 per 10 s on top; unauthenticated calls share a bucket per IP.
- The other documented schemes (``Bearer``, ``KISI-ACCESS-KEY``, ``KISI-GROUP-LINK``,
  ``KISI-SERVICE``) map a configured credential to its user; a placeholder such as
  ``Authorization: null`` or ``KISI-LOGIN null`` is no credential (401).
- Identity routes: ``POST /logins`` signs in with e-mail and password and needs no key (200
  with a new login's ``secret``; 401 ``afc516`` for a wrong e-mail or password); ``GET
  /logins``; ``DELETE /login`` deletes the login that sent it (its secret then answers 401),
  ``DELETE /login/elsewhere`` the user's other logins, ``DELETE /logins/{id}`` one by id.
  ``GET /organizations`` answers one organization (Kisi's Python client probes it).
- Kisi-shaped errors ``{"error": "...", "code": "<6 hex>"}``, 422 as ``{"errors": {...}}``,
  a non-existent id answers **403**, creates answer **200**, updates/deletes **204**.
- Offset pagination with ``X-Collection-Range: start-end/total`` (``*/0`` when empty).
- The 429 body is undocumented: plain text by default, JSON or empty on demand; ``Retry-After``
  can be switched off, because clients must not require it.

Environment (``SimConfig.from_env``; every variable is optional, empty means "default"; each
name is ``KISI_SIM_`` + the upper-cased field name):

==================================  ============================================================
``KISI_SIM_KEYS``                   JSON object secret -> user id  [``{"sim-demo-key": 1}``]
``KISI_SIM_ACCOUNTS``               JSON object e-mail -> ``{"password", "user_id"}`` for
                                    ``POST /logins``  [``user1@example.com`` /
                                    ``sim-demo-password``, user 1]
``KISI_SIM_CREDENTIALS``            JSON object scheme -> {secret -> user id} for the
                                    other schemes, e.g. ``{"Bearer": {"tok": 2}}``  [none]
``KISI_SIM_SEED``                   seed of the fault dice  [0]
``KISI_SIM_SEED_COUNTS``            JSON object collection -> seeded rows
                                    [locks 120, places 5, users 60, groups 8,
                                    role_assignments 25]
``KISI_SIM_RATE_PER_S``             per-user token refill, requests/s  [5]
``KISI_SIM_BURST``                  per-user bucket size  [5]
``KISI_SIM_ROUTE_RATES``            JSON object "METHOD /template" -> requests/s (burst 1)
                                    [``POST /event_sets`` 1, ``POST /signed_upload_urls`` 0.1]
``KISI_SIM_DEPRECATED_ROUTES``      JSON object "/template" or "METHOD /template" -> Sunset
                                    value; adds ``Deprecation``/``Sunset`` headers  [none]
``KISI_SIM_VERBOSE``                1/true: log each request line and tracebacks  [off]
``KISI_SIM_ERROR_RATE``             0..1 chance of an injected 5xx  [0]
``KISI_SIM_ERROR_STATUS``           500, 502, 503 or 504 for injected errors/outages  [503]
``KISI_SIM_LATENCY_MS``             delay added to every request  [0]
``KISI_SIM_HANG_MS``                delay before processing a hung request  [0]
``KISI_SIM_HANG_RATE``              0..1 chance that a request hangs  [1]
``KISI_SIM_OUTAGE_UNTIL``           epoch seconds; until then every call gets ERROR_STATUS
``KISI_SIM_OUTAGE_SECONDS``         outage from start for that many seconds
``KISI_SIM_RETRY_AFTER``            send ``Retry-After`` on 429  [true]
``KISI_SIM_RATE_LIMIT_BODY``        429 body: text, json or empty  [text]
``KISI_SIM_REVOKED_KEYS``           comma list or JSON array of revoked secrets  [none]
``KISI_SIM_SUSPEND_AFTER_BAD``      suspend a user after that many 4xx in the window; 0 = off
``KISI_SIM_SUSPEND_WINDOW_S``       window of the suspension count, seconds  [60]
==================================  ============================================================

The CLI also reads ``KISI_SIM_HOST`` [127.0.0.1] and ``KISI_SIM_PORT`` [8080].

Admin API (no Kisi key needed, never counted in the stats):

- ``GET /__admin/faults`` -- the fault settings (revoked keys shown as fingerprints).
- ``PUT /__admin/faults`` -- JSON merge of fault fields; ``outage_seconds: n`` starts an
  outage of n seconds from now, ``outage_until: null`` ends one.
- ``POST /__admin/reset`` -- restore the start-up faults, seed data and credentials (logins
  created or deleted since are forgotten), clear buckets, suspensions and stats (204).
- ``GET /__admin/stats`` -- counts and the request log; ``?log=0`` omits the log.

The request log never holds a key or the ``Authorization`` header: only the user id, the
auth scheme, a fingerprint of the credential (``key_fingerprint``: a SHA-256 prefix) and a
SHA-256 of the request body.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import re
import secrets
import signal
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, TypedDict
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "COLLECTIONS",
    "DEMO_EMAIL",
    "DEMO_KEY",
    "DEMO_PASSWORD",
    "ERRORS",
    "Account",
    "ApiCall",
    "AuthHeader",
    "CollectionSpec",
    "Credential",
    "Faults",
    "KisiSimulator",
    "LoginBook",
    "RequestEntry",
    "SimConfig",
    "SimConfigError",
    "SimRequest",
    "SimResponse",
    "SimStore",
    "StatsSnapshot",
    "collection_range",
    "key_fingerprint",
    "main",
    "parse_authorization",
]

JsonObject = dict[str, Any]

DEMO_KEY: Final = "sim-demo-key"
# The demo account (user 1, whose seeded e-mail this is) for POST /logins.
DEMO_EMAIL: Final = "user1@example.com"
DEMO_PASSWORD: Final = "sim-demo-password"  # noqa: S105 -- a published demo value, like DEMO_KEY
JSON_TYPE: Final = "application/json; charset=utf-8"
MAX_OFFSET: Final = 20_000  # Kisi: "offset at most 20,000"
MAX_BODY_BYTES: Final = 1_048_576  # a sane cap; Kisi's is unpublished
REQUEST_LOG_SIZE: Final = 10_000
ADMIN_PREFIX: Final = "/__admin"
API_METHODS: Final = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})
UNMATCHED_ROUTE: Final = "<unmatched>"
ROUTE_BURST: Final = 1.0  # Kisi's stricter limits read as "one per interval", no burst
SEED_TIMESTAMP: Final = "2024-01-01T00:00:00.000Z"
UPLOAD_HOST: Final = "https://uploads.kisi-sim.invalid"
STOP_POLL_S: Final = 0.02  # stop() returns within this; tests start and stop many servers


# --------------------------------------------------------------------------- Kisi's rules


@dataclass(frozen=True)
class CollectionSpec:
    """How Kisi treats one REST collection.

    ``singular`` wraps request bodies (``{"lock": {...}}``); ``required`` must be present on
    create; ``writable`` are the attributes a create or update may set (the rest is dropped,
    as Rails strong parameters do); page sizes come from Kisi's reference.
    """

    singular: str
    required: str
    writable: tuple[str, ...]
    default_limit: int
    max_limit: int


COLLECTIONS: Final[Mapping[str, CollectionSpec]] = {
    "locks": CollectionSpec("lock", "name", ("name", "description", "place_id"), 50, 250),
    "places": CollectionSpec(
        "place", "name", ("name", "address", "time_zone", "latitude", "longitude"), 50, 250
    ),
    "users": CollectionSpec("user", "email", ("name", "email"), 50, 100),
    "groups": CollectionSpec("group", "name", ("name", "description", "place_id"), 50, 250),
    "role_assignments": CollectionSpec(
        "role_assignment", "role_id", ("role_id", "user_id", "group_id", "place_id"), 10, 250
    ),
}

DEFAULT_SEED_COUNTS: Final[Mapping[str, int]] = {
    "locks": 120,
    "places": 5,
    "users": 60,
    "groups": 8,
    "role_assignments": 25,
}

DEFAULT_ROUTE_RATES: Final[Mapping[str, float]] = {
    "POST /event_sets": 1.0,  # Kisi: 1 per second
    "POST /signed_upload_urls": 0.1,  # Kisi: 1 per 10 seconds
}


def _is_present(value: object) -> bool:
    return value is not None and str(value).strip() != ""


def _looks_like_email(value: object) -> bool:
    """An ``@`` with something on both sides: as much as the simulator needs to check."""
    return isinstance(value, str) and "@" in value.strip()[1:-1]


VALIDATIONS: Final[Mapping[str, tuple[Callable[[object], bool], str]]] = {
    "name": (_is_present, "can't be blank"),
    "email": (_looks_like_email, "can't be blank or invalid"),  # Kisi's own wording
    "role_id": (_is_present, "can't be blank"),
}


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


def fault_error(faults: Faults) -> SimResponse:
    """The answer of an injected error or an outage, by the configured ``error_status``."""
    return kisi_error(FAULT_ERRORS[faults.error_status])


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


# --------------------------------------------------------------------------- configuration


class SimConfigError(ValueError):
    """A configuration value is invalid; the message names the field or variable."""


Parser = Callable[[object], Any]


def _decode_json(value: object) -> object:
    """Strings (from the environment) hold JSON; anything else is already decoded."""
    if not isinstance(value, str):
        return value
    try:
        decoded: object = json.loads(value)
    except ValueError:
        raise ValueError("must be JSON") from None
    return decoded


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a number, got {value!r}")
    try:
        result = float(value)
    except ValueError:
        raise ValueError(f"must be a number, got {value!r}") from None
    if not math.isfinite(result):
        raise ValueError("must be finite")
    return result


def _integer(value: object) -> int:
    number = _number(value)
    if not number.is_integer():
        raise ValueError(f"must be an integer, got {value!r}")
    return int(number)


def _probability(value: object) -> float:
    result = _number(value)
    if not 0.0 <= result <= 1.0:
        raise ValueError("must be between 0 and 1")
    return result


def _non_negative_int(value: object) -> int:
    result = _integer(value)
    if result < 0:
        raise ValueError("must be >= 0")
    return result


def _positive_int(value: object) -> int:
    result = _integer(value)
    if result < 1:
        raise ValueError("must be >= 1")
    return result


def _non_negative_number(value: object) -> float:
    result = _number(value)
    if result < 0:
        raise ValueError("must be >= 0")
    return result


def _positive_number(value: object) -> float:
    result = _number(value)
    if result <= 0:
        raise ValueError("must be > 0")
    return result


def _optional_number(value: object) -> float | None:
    return None if value is None or value == "" else _non_negative_number(value)


_TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE_WORDS | _FALSE_WORDS:
        return word in _TRUE_WORDS
    raise ValueError(f"must be true or false, got {value!r}")


def _error_status(value: object) -> int:
    status = _integer(value)
    if status not in FAULT_ERRORS:
        raise ValueError(f"must be one of {sorted(FAULT_ERRORS)}")
    return status


def _rate_limit_body(value: object) -> str:
    if not isinstance(value, str) or value not in RATE_LIMIT_BODIES:
        raise ValueError(f"must be one of {sorted(RATE_LIMIT_BODIES)}")
    return str(value)


def _key_list(value: object) -> tuple[str, ...]:
    """Comma list or JSON array (env) or a sequence of strings (code, admin API)."""
    if isinstance(value, str):
        text = value.strip()
        items: object = _decode_json(text) if text.startswith("[") else text.split(",")
    else:
        items = value
    if not isinstance(items, list | tuple) or not all(isinstance(k, str) for k in items):
        raise ValueError("must be a list of strings")
    return tuple(k.strip() for k in items if k.strip())


def _mapping(value: object) -> Mapping[str, object]:
    decoded = _decode_json(value)
    if not isinstance(decoded, Mapping):
        raise ValueError("must be a JSON object")
    return decoded


def _key_map(value: object) -> dict[str, int]:
    """Secrets to user ids; the message never repeats a secret."""
    keys = {str(secret): user for secret, user in _mapping(value).items()}
    try:
        return {secret: _positive_int(user) for secret, user in keys.items()}
    except ValueError:
        raise ValueError("must map each secret to a positive user id") from None


@dataclass(frozen=True)
class Account:
    """A Kisi user who can sign in with e-mail and password (``POST /logins``)."""

    password: str
    user_id: int


def _account_map(value: object) -> dict[str, Account]:
    """E-mail -> ``{"password", "user_id"}`` (or an :class:`Account`); e-mails compare
    case-insensitively, as Kisi's do. The message never repeats a password."""
    accounts: dict[str, Account] = {}
    for email, entry in _mapping(value).items():
        if not _looks_like_email(email):
            raise ValueError(f"{email!r} is not an e-mail address")
        if isinstance(entry, Account):
            account = entry
        elif isinstance(entry, Mapping) and isinstance(entry.get("password"), str):
            try:
                account = Account(str(entry["password"]), _positive_int(entry.get("user_id")))
            except ValueError:
                raise ValueError(f"{email}: user_id must be a positive integer") from None
        else:
            raise ValueError(f"{email}: must be an object with a password string and a user_id")
        if not account.password:
            raise ValueError(f"{email}: the password must not be empty")
        accounts[email.strip().lower()] = account
    return accounts


def _credential_map(value: object) -> dict[str, dict[str, int]]:
    """Scheme -> (secret -> user id) for the schemes other than ``KISI-LOGIN`` (``keys``)."""
    credentials: dict[str, dict[str, int]] = {}
    for scheme, secrets_of_scheme in _mapping(value).items():
        canonical = _SCHEME_BY_WORD.get(str(scheme).upper())
        if canonical is None or canonical == KISI_LOGIN:
            others = [s for s in AUTH_SCHEMES if s != KISI_LOGIN]
            raise ValueError(f"scheme {str(scheme)[:32]!r} must be one of {others} "
                             "(KISI-LOGIN secrets go in keys)")
        try:
            credentials[canonical] = _key_map(secrets_of_scheme)
        except ValueError as error:
            raise ValueError(f"{canonical}: {error}") from None
    return credentials


def _seed_counts(value: object) -> dict[str, int]:
    counts = dict(_mapping(value))
    unknown = sorted(set(counts) - set(COLLECTIONS))
    if unknown:
        raise ValueError(f"unknown collections {unknown}")
    return {name: _non_negative_int(counts.get(name, n)) for name, n in DEFAULT_SEED_COUNTS.items()}


def _rate_map(value: object) -> dict[str, float]:
    return {str(route): _positive_number(rate) for route, rate in _mapping(value).items()}


def _text_map(value: object) -> dict[str, str]:
    return {str(route): str(text) for route, text in _mapping(value).items()}


def _env_name(field_name: str) -> str:
    """The one naming rule: ``rate_per_s`` is read from ``KISI_SIM_RATE_PER_S``."""
    return f"KISI_SIM_{field_name.upper()}"


def _normalize_fields(instance: object, parsers: Mapping[str, Parser]) -> None:
    """Validate and normalize every field of a frozen dataclass through its parser.

    Parsers accept raw strings too, so code, environment and admin API share one table.
    """
    for name, parser in parsers.items():
        try:
            value = parser(getattr(instance, name))
        except ValueError as error:
            raise SimConfigError(f"{name}: {error}") from None
        object.__setattr__(instance, name, value)


def _read_env(environ: Mapping[str, str], parsers: Mapping[str, Parser]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, parser in parsers.items():
        variable = _env_name(name)
        raw = environ.get(variable, "")
        if raw.strip() == "":
            continue
        try:
            values[name] = parser(raw)
        except ValueError as error:
            raise SimConfigError(f"{variable}: {error}") from None
    return values


def key_fingerprint(secret: str) -> str:
    """What the simulator shows instead of a key: a short SHA-256 prefix."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Faults:
    """Failures to inject; settable at start (config, env) and at runtime (admin API).

    ``outage_seconds`` is an input only: the simulator turns it into ``outage_until`` (wall
    clock) when the faults are applied. ``revoked_keys`` may hold secrets or fingerprints.
    """

    error_rate: float = 0.0
    error_status: int = 503
    latency_ms: int = 0
    hang_ms: int = 0
    hang_rate: float = 1.0
    outage_until: float | None = None
    outage_seconds: float | None = None
    retry_after: bool = True
    rate_limit_body: str = "text"
    revoked_keys: tuple[str, ...] = ()
    suspend_after_bad: int = 0
    suspend_window_s: float = 60.0

    def __post_init__(self) -> None:
        _normalize_fields(self, FAULT_FIELDS)

    def merged(self, changes: Mapping[str, object]) -> Faults:
        """These faults with ``changes`` applied (a JSON merge); unknown names are errors."""
        unknown = sorted(set(changes) - set(FAULT_FIELDS))
        if unknown:
            raise SimConfigError(f"unknown fault fields {unknown}")
        updates: dict[str, Any] = dict(changes)
        return dataclasses.replace(self, **updates)

    def resolved(self, now: float) -> Faults:
        """``outage_seconds`` turned into an absolute ``outage_until``."""
        if self.outage_seconds is None:
            return self
        return dataclasses.replace(
            self, outage_until=now + self.outage_seconds, outage_seconds=None
        )

    def outage_active(self, now: float) -> bool:
        return self.outage_until is not None and now < self.outage_until

    def is_revoked(self, secret: str) -> bool:
        return secret in self.revoked_keys or key_fingerprint(secret) in self.revoked_keys

    def view(self, now: float) -> JsonObject:
        """The admin API's picture of the faults: revoked keys as fingerprints only."""
        shown = dataclasses.asdict(self)
        shown["revoked_keys"] = [
            k if k.startswith("sha256:") else key_fingerprint(k) for k in self.revoked_keys
        ]
        shown["outage_active"] = self.outage_active(now)
        return shown


FAULT_FIELDS: Final[Mapping[str, Parser]] = {
    "error_rate": _probability,
    "error_status": _error_status,
    "latency_ms": _non_negative_int,
    "hang_ms": _non_negative_int,
    "hang_rate": _probability,
    "outage_until": _optional_number,
    "outage_seconds": _optional_number,
    "retry_after": _flag,
    "rate_limit_body": _rate_limit_body,
    "revoked_keys": _key_list,
    "suspend_after_bad": _non_negative_int,
    "suspend_window_s": _positive_number,
}


@dataclass(frozen=True)
class SimConfig:
    """Everything fixed at start: keys, seed data, rate limits, deprecations, initial faults.

    Mapping fields may be given partially (``seed_counts={"locks": 3}``); they are validated
    and completed with the defaults on construction.
    """

    keys: Mapping[str, int] = field(default_factory=lambda: {DEMO_KEY: 1})
    accounts: Mapping[str, Account] = field(
        default_factory=lambda: {DEMO_EMAIL: Account(DEMO_PASSWORD, 1)}
    )
    credentials: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    seed: int = 0
    seed_counts: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SEED_COUNTS))
    rate_per_s: float = 5.0  # Kisi: 5 requests per second per user
    burst: int = 5
    route_rates: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_ROUTE_RATES))
    deprecated_routes: Mapping[str, str] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    verbose: bool = False

    def __post_init__(self) -> None:
        _normalize_fields(self, CONFIG_FIELDS)
        if not isinstance(self.faults, Faults):
            raise SimConfigError("faults: must be a Faults instance")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SimConfig:
        """Read ``KISI_SIM_*`` variables (see the module docstring).

        >>> SimConfig.from_env({"KISI_SIM_ERROR_RATE": "0.5"}).faults.error_rate
        0.5
        """
        faults = Faults(**_read_env(environ, FAULT_FIELDS))
        return cls(**_read_env(environ, CONFIG_FIELDS), faults=faults)


CONFIG_FIELDS: Final[Mapping[str, Parser]] = {
    "keys": _key_map,
    "accounts": _account_map,
    "credentials": _credential_map,
    "seed": _integer,
    "seed_counts": _seed_counts,
    "rate_per_s": _positive_number,
    "burst": _positive_int,
    "route_rates": _rate_map,
    "deprecated_routes": _text_map,
    "verbose": _flag,
}


# --------------------------------------------------------------------------- rate limits


@dataclass
class TokenBucket:
    """A token bucket driven by timestamps passed in (no clock inside: testable math)."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def wait_for_token(self) -> float:
        """Seconds until one token is available (0 when one is)."""
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


@dataclass(frozen=True)
class Limit:
    """One bucket a request must pass: its scope (``user:1``, ``ip:...``) and its shape."""

    scope: str
    rate: float
    burst: float


class RateLimiter:
    """Named token buckets; a request takes a token from each of its buckets or from none.

    Not thread-safe on its own: the simulator calls it under its lock.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def acquire(self, limits: Sequence[Limit], now: float) -> float:
        """0.0 when every bucket had a token (all taken), else seconds to wait (none taken)."""
        buckets = [self._bucket(limit, now) for limit in limits]
        for bucket in buckets:
            bucket.refill(now)
        wait = max((bucket.wait_for_token() for bucket in buckets), default=0.0)
        if wait > 0.0:
            return wait
        for bucket in buckets:
            bucket.tokens -= 1.0
        return 0.0

    def clear(self) -> None:
        self._buckets.clear()

    def _bucket(self, limit: Limit, now: float) -> TokenBucket:
        if limit.scope not in self._buckets:
            self._buckets[limit.scope] = TokenBucket(limit.rate, limit.burst, limit.burst, now)
        return self._buckets[limit.scope]


class SuspensionTracker:
    """Counts each user's bad requests (4xx incl. 429) in a sliding window.

    Kisi suspends integrations that send "too many bad requests" without publishing the
    threshold; here the threshold is a fault setting so tests can reach it.
    """

    def __init__(self) -> None:
        self._bad: dict[int, deque[float]] = {}
        self._suspended: set[int] = set()

    def record_bad(self, user_id: int, now: float, threshold: int, window_s: float) -> None:
        times = self._bad.setdefault(user_id, deque())
        times.append(now)
        while times and times[0] <= now - window_s:
            times.popleft()
        if threshold > 0 and len(times) >= threshold:
            self._suspended.add(user_id)

    def is_suspended(self, user_id: int) -> bool:
        return user_id in self._suspended

    def suspended_users(self) -> list[int]:
        return sorted(self._suspended)

    def clear(self) -> None:
        self._bad.clear()
        self._suspended.clear()


# --------------------------------------------------------------------------- data


def _cycle(index: int, count: int) -> int | None:
    """A deterministic reference into another seeded collection (None when it is empty)."""
    return (index - 1) % count + 1 if count else None


def _seed_lock(i: int, counts: Mapping[str, int]) -> JsonObject:
    return {"name": f"Door {i}", "place_id": _cycle(i, counts["places"])}


def _seed_place(i: int, counts: Mapping[str, int]) -> JsonObject:
    return {
        "name": f"Place {i}",
        "address": f"{100 + i} Market Street, San Francisco, CA",
        "latitude": round(37.79 + i / 1000, 6),
        "longitude": round(-122.40 - i / 1000, 6),
    }


def _seed_user(i: int, counts: Mapping[str, int]) -> JsonObject:
    return {"name": f"User {i}", "email": f"user{i}@example.com"}


def _seed_group(i: int, counts: Mapping[str, int]) -> JsonObject:
    return {"name": f"Group {i}", "place_id": _cycle(i, counts["places"])}


def _seed_role_assignment(i: int, counts: Mapping[str, int]) -> JsonObject:
    return {
        "role_id": "group_basic",
        "user_id": _cycle(i, counts["users"]),
        "group_id": _cycle(i, counts["groups"]),
    }


# The shape of a new row per collection; seeders and creates fill it in.
BLANK_ROWS: Final[Mapping[str, JsonObject]] = {
    "locks": {
        "name": None,
        "description": "",
        "place_id": None,
        "online": True,
        "locked_down": False,
        "last_unlocked_at": None,
    },
    "places": {
        "name": None,
        "address": "",
        "time_zone": "America/Los_Angeles",
        "latitude": None,
        "longitude": None,
    },
    "users": {"name": None, "email": None, "confirmed": True},
    "groups": {"name": None, "description": "", "place_id": None},
    "role_assignments": {"role_id": None, "user_id": None, "group_id": None, "place_id": None},
}

SEEDERS: Final[Mapping[str, Callable[[int, Mapping[str, int]], JsonObject]]] = {
    "locks": _seed_lock,
    "places": _seed_place,
    "users": _seed_user,
    "groups": _seed_group,
    "role_assignments": _seed_role_assignment,
}


class SimStore:
    """Kisi's data: rows by collection and id, seeded deterministically from counts.

    Thread-safe: every method takes the store's lock and hands out copies. Collections not in
    COLLECTIONS (``event_sets``, ``signed_upload_urls``) are kept the same way, unseeded.
    """

    def __init__(self, seed_counts: Mapping[str, int]) -> None:
        self._seed_counts = dict(seed_counts)
        self._lock = threading.Lock()
        self._rows: dict[str, dict[int, JsonObject]] = {}
        self._next_id: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the seed data: same rows, same ids, every run."""
        with self._lock:
            self._rows = {name: self._seed(name) for name in COLLECTIONS}
            self._next_id = {name: len(rows) + 1 for name, rows in self._rows.items()}

    def page(self, name: str, offset: int, limit: int) -> tuple[list[JsonObject], int]:
        """Rows ``offset .. offset+limit-1`` in id order, and the total."""
        with self._lock:
            rows = list(self._rows.get(name, {}).values())
        return [dict(row) for row in rows[offset : offset + limit]], len(rows)

    def get(self, name: str, row_id: int) -> JsonObject | None:
        with self._lock:
            row = self._rows.get(name, {}).get(row_id)
            return None if row is None else dict(row)

    def create(self, name: str, attrs: Mapping[str, Any], stamp: str) -> JsonObject:
        with self._lock:
            row_id = self._next_id.get(name, 1)
            self._next_id[name] = row_id + 1
            row = {
                "id": row_id,
                **BLANK_ROWS.get(name, {}),
                **attrs,
                "created_at": stamp,
                "updated_at": stamp,
            }
            self._rows.setdefault(name, {})[row_id] = row
            return dict(row)

    def update(self, name: str, row_id: int, attrs: Mapping[str, Any], stamp: str) -> bool:
        """False when the row does not exist."""
        with self._lock:
            row = self._rows.get(name, {}).get(row_id)
            if row is None:
                return False
            row.update(attrs, updated_at=stamp)
            return True

    def delete(self, name: str, row_id: int) -> bool:
        with self._lock:
            return self._rows.get(name, {}).pop(row_id, None) is not None

    def _seed(self, name: str) -> dict[int, JsonObject]:
        seeder = SEEDERS[name]
        return {
            i: {
                "id": i,
                **BLANK_ROWS[name],
                **seeder(i, self._seed_counts),
                "created_at": SEED_TIMESTAMP,
                "updated_at": SEED_TIMESTAMP,
            }
            for i in range(1, self._seed_counts[name] + 1)
        }


# --------------------------------------------------------------------------- Kisi endpoints


class InvalidParamError(ValueError):
    """A query parameter Kisi would reject with 400; the message names it."""


@dataclass(frozen=True)
class ApiCall:
    """An authenticated, parsed call handed to an endpoint."""

    user_id: int
    login_id: int
    params: Mapping[str, str]
    query: Mapping[str, list[str]]
    body: Any
    stamp: str


def _query_int(query: Mapping[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    values = query.get(name)
    if not values:
        return default
    raw = values[-1].strip()
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidParamError(f"{name} must be an integer between {low} and {high}")
    return int(raw)


def page_window(query: Mapping[str, list[str]], spec: CollectionSpec) -> tuple[int, int]:
    """``(offset, limit)`` from the query, within Kisi's bounds for the collection."""
    offset = _query_int(query, "offset", 0, 0, MAX_OFFSET)
    limit = _query_int(query, "limit", spec.default_limit, 1, spec.max_limit)
    return offset, limit


def wrapped_attributes(body: object, wrapper: str) -> JsonObject:
    """``body[wrapper]`` when it is an object, else ``{}``.

    Kisi reads ``params.fetch(:lock, {})``-style: a missing wrapper is an empty change, so a
    create fails validation (422) and an update changes nothing (204).
    """
    inner = body.get(wrapper) if isinstance(body, dict) else None
    return dict(inner) if isinstance(inner, dict) else {}


def validation_errors(
    spec: CollectionSpec, attrs: Mapping[str, Any], *, creating: bool
) -> dict[str, list[str]]:
    """Kisi's 422 ``errors`` object; empty when the attributes are acceptable."""
    check, message = VALIDATIONS[spec.required]
    if (creating or spec.required in attrs) and not check(attrs.get(spec.required)):
        return {spec.required: [message]}
    return {}


def permitted(attrs: Mapping[str, Any], spec: CollectionSpec) -> JsonObject:
    return {name: attrs[name] for name in spec.writable if name in attrs}


def row_id(call: ApiCall) -> int:
    """The ``{id}`` of the path; a non-numeric id simply matches no row (Kisi: 403)."""
    raw = call.params.get("id", "")
    return int(raw) if raw.isdigit() else -1


class KisiApi:
    """The endpoints: each takes an :class:`ApiCall` and returns a :class:`SimResponse`."""

    def __init__(self, store: SimStore, logins: LoginApi | None = None) -> None:
        self._store = store
        self.logins = logins or LoginApi(LoginBook({DEMO_KEY: 1}), {})

    def list_items(self, name: str, call: ApiCall) -> SimResponse:
        offset, limit = page_window(call.query, COLLECTIONS[name])
        rows, total = self._store.page(name, offset, limit)
        return json_response(
            200, rows, [("X-Collection-Range", collection_range(offset, limit, total))]
        )

    def create_item(self, name: str, call: ApiCall) -> SimResponse:
        spec = COLLECTIONS[name]
        attrs = wrapped_attributes(call.body, spec.singular)
        errors = validation_errors(spec, attrs, creating=True)
        if errors:
            return json_response(422, {"errors": errors})
        return json_response(200, self._store.create(name, permitted(attrs, spec), call.stamp))

    def show_item(self, name: str, call: ApiCall) -> SimResponse:
        row = self._store.get(name, row_id(call))
        return kisi_error("not_found_id") if row is None else json_response(200, row)

    def update_item(self, name: str, call: ApiCall) -> SimResponse:
        spec = COLLECTIONS[name]
        if self._store.get(name, row_id(call)) is None:
            return kisi_error("not_found_id")
        attrs = wrapped_attributes(call.body, spec.singular)
        errors = validation_errors(spec, attrs, creating=False)
        if errors:
            return json_response(422, {"errors": errors})
        return self._changed(name, call, permitted(attrs, spec))

    def delete_item(self, name: str, call: ApiCall) -> SimResponse:
        found = self._store.delete(name, row_id(call))
        return no_content() if found else kisi_error("not_found_id")

    def unlock(self, call: ApiCall) -> SimResponse:
        if not self._store.update(
            "locks", row_id(call), {"last_unlocked_at": call.stamp}, call.stamp
        ):
            return kisi_error("not_found_id")
        return json_response(200, {"message": "Unlocked!"})

    def lock_down(self, call: ApiCall) -> SimResponse:
        return self._changed("locks", call, {"locked_down": True})

    def cancel_lockdown(self, call: ApiCall) -> SimResponse:
        return self._changed("locks", call, {"locked_down": False})

    def show_login(self, call: ApiCall) -> SimResponse:
        return json_response(200, {"id": call.login_id, "user_id": call.user_id})

    def show_current_user(self, call: ApiCall) -> SimResponse:
        row = self._store.get("users", call.user_id)
        return kisi_error("not_found_id") if row is None else json_response(200, row)

    def list_organizations(self, call: ApiCall) -> SimResponse:
        """The organizations of the caller: one. Kisi's Python client probes this on start."""
        return json_response(200, [dict(SIM_ORGANIZATION)], [("X-Collection-Range", "0-0/1")])

    def create_event_set(self, call: ApiCall) -> SimResponse:
        row = self._store.create(
            "event_sets", wrapped_attributes(call.body, "event_set"), call.stamp
        )
        return json_response(200, {"id": row["id"]})

    def create_signed_upload_url(self, call: ApiCall) -> SimResponse:
        row = self._store.create("signed_upload_urls", {}, call.stamp)
        return json_response(200, {"id": row["id"], "url": f"{UPLOAD_HOST}/{row['id']}"})

    def _changed(self, name: str, call: ApiCall, attrs: Mapping[str, Any]) -> SimResponse:
        found = self._store.update(name, row_id(call), attrs, call.stamp)
        return no_content() if found else kisi_error("not_found_id")


# --------------------------------------------------------------------------- identity

KISI_LOGIN: Final = "KISI-LOGIN"
# The Authorization schemes Kisi documents; a caller's own credential may use any of them.
AUTH_SCHEMES: Final = (KISI_LOGIN, "Bearer", "KISI-ACCESS-KEY", "KISI-GROUP-LINK", "KISI-SERVICE")
_SCHEME_BY_WORD: Final = {scheme.upper(): scheme for scheme in AUTH_SCHEMES}
# What clients send before they have a secret: kisi-client 8.0.0 sends ``Authorization: null``
# after signIn/signOut reset it, a template may send ``KISI-LOGIN null``, and Python's
# ``f"KISI-LOGIN {None}"`` gives ``KISI-LOGIN None``. None of them is a credential.
PLACEHOLDER_SECRETS: Final = frozenset({"", "null", "none", "undefined"})
SIM_ORGANIZATION: Final[Mapping[str, object]] = {
    "id": 1,
    "name": "Kisi Simulator",
    "domain": "kisi-sim",
}
LOGIN_PAGE: Final = (10, 250)  # Kisi: GET /logins pages 10 by default, at most 250


@dataclass(frozen=True)
class Credential:
    """A credential as sent: its scheme (canonical spelling) and its secret."""

    scheme: str
    secret: str


@dataclass(frozen=True)
class AuthHeader:
    """What an ``Authorization`` header said, in a form the request log may show.

    ``scheme`` is a canonical scheme of AUTH_SCHEMES, ``"null"`` for a bare placeholder
    (``Authorization: null``), ``"unknown"`` for anything else, or None without a header.
    ``credential`` is None unless a known scheme came with a real (non-placeholder) secret.
    """

    scheme: str | None
    credential: Credential | None

    @property
    def fingerprint(self) -> str | None:
        """The credential's :func:`key_fingerprint`: tests count credentials with it."""
        return None if self.credential is None else key_fingerprint(self.credential.secret)


NO_AUTH: Final = AuthHeader(None, None)


def parse_authorization(header: str | None) -> AuthHeader:
    """Read ``Authorization: <scheme> <secret>``; schemes are case-insensitive (RFC 9110).

    >>> parse_authorization("bearer tok").credential
    Credential(scheme='Bearer', secret='tok')
    >>> parse_authorization("KISI-LOGIN null"), parse_authorization("null").scheme
    (AuthHeader(scheme='KISI-LOGIN', credential=None), 'null')
    """
    value = (header or "").strip()
    if not value:
        return NO_AUTH
    word, _, rest = value.partition(" ")
    scheme = _SCHEME_BY_WORD.get(word.upper())
    if scheme is None:
        return AuthHeader("null" if value.lower() in PLACEHOLDER_SECRETS else "unknown", None)
    secret = rest.strip()
    if secret.lower() in PLACEHOLDER_SECRETS:
        return AuthHeader(scheme, None)
    return AuthHeader(scheme, Credential(scheme, secret))


class LoginBook:
    """Every credential the simulator accepts, and the user each belongs to (thread-safe).

    At start (and on reset): ``keys`` (KISI-LOGIN secrets) and ``credentials`` (the other
    schemes), with login ids from 1 in that order. ``POST /logins`` adds KISI-LOGIN logins
    with fresh secrets; a login belongs to a user, so all of a user's logins share the user's
    rate bucket. Deleted logins are gone: their secret answers 401 like any unknown key.
    """

    def __init__(
        self,
        keys: Mapping[str, int],
        credentials: Mapping[str, Mapping[str, int]] | None = None,
        *,
        new_secret: Callable[[], str] | None = None,
        stamp: Callable[[], str] = lambda: SEED_TIMESTAMP,
    ) -> None:
        self._configured: list[tuple[Credential, int]] = [
            (Credential(KISI_LOGIN, secret), user_id) for secret, user_id in keys.items()
        ] + [
            (Credential(scheme, secret), user_id)
            for scheme, by_secret in (credentials or {}).items()
            for secret, user_id in by_secret.items()
        ]
        self._new_secret = new_secret or (lambda: secrets.token_hex(20))
        self._stamp = stamp
        self._lock = threading.Lock()
        self._logins: dict[Credential, Login] = {}
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        """Back to the configured credentials; logins created since are deleted."""
        with self._lock:
            self._logins = {
                credential: Login(index, user_id, scheme=credential.scheme)
                for index, (credential, user_id) in enumerate(self._configured, start=1)
            }
            self._next_id = len(self._configured) + 1

    def find(self, credential: Credential) -> Login | None:
        with self._lock:
            return self._logins.get(credential)

    def get(self, login_id: int) -> Login | None:
        with self._lock:
            return next((lg for lg in self._logins.values() if lg.id == login_id), None)

    def create(
        self, user_id: int, *, login_type: str, name: str | None, expire: bool
    ) -> tuple[Login, str]:
        """A new KISI-LOGIN login of ``user_id`` and its secret (shown once, as Kisi does)."""
        with self._lock:
            secret = self._new_secret()
            while Credential(KISI_LOGIN, secret) in self._logins:  # a clash is a bug upstream
                secret = self._new_secret()
            login = Login(
                self._next_id, user_id, type=login_type, name=name, expire=expire,
                created_at=self._stamp(),
            )
            self._next_id += 1
            self._logins[Credential(KISI_LOGIN, secret)] = login
            return login, secret

    def delete(self, login_ids: Sequence[int]) -> int:
        """Delete these logins; returns how many existed."""
        wanted = set(login_ids)
        with self._lock:
            doomed = [c for c, lg in self._logins.items() if lg.id in wanted]
            for credential in doomed:
                del self._logins[credential]
            return len(doomed)

    def of_user(self, user_id: int) -> list[Login]:
        """The user's KISI-LOGIN logins in id order (other schemes are not logins to list)."""
        with self._lock:
            found = [
                lg for lg in self._logins.values()
                if lg.user_id == user_id and lg.scheme == KISI_LOGIN
            ]
        return sorted(found, key=lambda lg: lg.id)


def _string_field(attrs: Mapping[str, Any], name: str) -> str | None:
    value = attrs.get(name)
    return value if isinstance(value, str) else None


class LoginApi:
    """Kisi's identity endpoints: sign in with e-mail and password, list and delete logins."""

    def __init__(self, book: LoginBook, accounts: Mapping[str, Account]) -> None:
        self._book = book
        self._accounts = dict(accounts)

    def sign_in(self, call: ApiCall) -> SimResponse:
        """``POST /logins`` ``{"login": {...}, "user": {"email", "password", ...}}``: no key
        needed; 200 with a new login's ``secret``, or 401 ``afc516`` for a wrong e-mail or
        password. The ``domain`` and 2FA fields are accepted and not checked."""
        body = call.body if isinstance(call.body, dict) else {}
        user, login = body.get("user"), body.get("login", {})
        if not isinstance(user, dict):
            raise InvalidParamError("user must be an object with email and password")
        if not isinstance(login, dict):
            raise InvalidParamError("login must be an object")
        login_type = login.get("type", "device")
        if login_type not in ("api", "device"):
            raise InvalidParamError("login.type must be api or device")
        expire = login.get("expire", True)
        if not isinstance(expire, bool):
            raise InvalidParamError("login.expire must be true or false")
        email, password = _string_field(user, "email"), _string_field(user, "password")
        account = self._accounts.get((email or "").strip().lower())
        if account is None or password is None or password != account.password:
            return kisi_error("wrong_credentials")
        created, secret = self._book.create(
            account.user_id,
            login_type=login_type,
            name=_string_field(login, "name"),
            expire=expire,
        )
        return json_response(200, {**created.view(), "secret": secret})

    def list_logins(self, call: ApiCall) -> SimResponse:
        """``GET /logins``: the caller's user's logins, paginated, never a secret."""
        default_limit, max_limit = LOGIN_PAGE
        offset = _query_int(call.query, "offset", 0, 0, MAX_OFFSET)
        limit = _query_int(call.query, "limit", default_limit, 1, max_limit)
        logins = self._book.of_user(call.user_id)
        page = [login.view() for login in logins[offset : offset + limit]]
        return json_response(
            200, page, [("X-Collection-Range", collection_range(offset, limit, len(logins)))]
        )

    def sign_out(self, call: ApiCall) -> SimResponse:
        """``DELETE /login``: the login that sent it is deleted, whatever its scheme."""
        self._book.delete([call.login_id])
        return no_content()

    def sign_out_elsewhere(self, call: ApiCall) -> SimResponse:
        """``DELETE /login/elsewhere``: every other login of the user is deleted."""
        others = [lg.id for lg in self._book.of_user(call.user_id) if lg.id != call.login_id]
        self._book.delete(others)
        return no_content()

    def delete_login(self, call: ApiCall) -> SimResponse:
        """``DELETE /logins/{id}``: 404 for no such login, 403 for another user's."""
        login = self._book.get(row_id(call))
        if login is None:
            return kisi_error("login_not_found")
        if login.user_id != call.user_id:
            return kisi_error("not_found_id")
        self._book.delete([login.id])
        return no_content()


@dataclass(frozen=True)
class Route:
    """One endpoint: method, path template (``{id}`` segments) and its action."""

    method: str
    template: str
    action: Callable[[ApiCall], SimResponse]
    public: bool = False  # Kisi declares no security: no key needed (POST /logins)


def api_routes(api: KisiApi) -> tuple[Route, ...]:
    """The routing table: every endpoint the simulator serves, in one place."""
    collection_routes = [
        route
        for name in COLLECTIONS
        for route in (
            Route("GET", f"/{name}", functools.partial(api.list_items, name)),
            Route("POST", f"/{name}", functools.partial(api.create_item, name)),
            Route("GET", f"/{name}/{{id}}", functools.partial(api.show_item, name)),
            Route("PATCH", f"/{name}/{{id}}", functools.partial(api.update_item, name)),
            Route("PUT", f"/{name}/{{id}}", functools.partial(api.update_item, name)),
            Route("DELETE", f"/{name}/{{id}}", functools.partial(api.delete_item, name)),
        )
    ]
    return (
        *collection_routes,
        Route("POST", "/locks/{id}/unlock", api.unlock),
        Route("POST", "/locks/{id}/lock_down", api.lock_down),
        Route("POST", "/locks/{id}/cancel_lockdown", api.cancel_lockdown),
        Route("GET", "/login", api.show_login),
        Route("GET", "/user", api.show_current_user),
        Route("POST", "/event_sets", api.create_event_set),
        Route("POST", "/signed_upload_urls", api.create_signed_upload_url),
        Route("GET", "/organizations", api.list_organizations),
        Route("POST", "/logins", api.logins.sign_in, public=True),
        Route("GET", "/logins", api.logins.list_logins),
        Route("DELETE", "/logins/{id}", api.logins.delete_login),
        Route("DELETE", "/login", api.logins.sign_out),
        Route("DELETE", "/login/elsewhere", api.logins.sign_out_elsewhere),
    )


@dataclass(frozen=True)
class RouteMatch:
    """What a path matched: no template (404), a template without this method (405), a route."""

    template: str | None
    route: Route | None
    params: Mapping[str, str]

    @property
    def name(self) -> str:
        return self.template or UNMATCHED_ROUTE


def _template_pattern(template: str) -> re.Pattern[str]:
    segments = [
        f"(?P<{s[1:-1]}>[^/]+)" if s.startswith("{") else re.escape(s) for s in template.split("/")
    ]
    return re.compile("/".join(segments))


class Router:
    """Matches a method and path against the routing table (pure, no state)."""

    def __init__(self, routes: Sequence[Route]) -> None:
        templates = dict.fromkeys(route.template for route in routes)
        self._patterns = [(_template_pattern(t), t) for t in templates]
        self._routes = {(route.method, route.template): route for route in routes}

    def match(self, method: str, path: str) -> RouteMatch:
        path = path.rstrip("/") or "/"
        for pattern, template in self._patterns:
            found = pattern.fullmatch(path)
            if found:
                return RouteMatch(template, self._routes.get((method, template)), found.groupdict())
        return RouteMatch(None, None, {})


# --------------------------------------------------------------------------- request log


class RequestEntry(TypedDict):
    """One Kisi request as recorded: never the key, only the user and a body hash."""

    at: float
    method: str
    path: str
    query: str
    status: int
    user_id: int | None
    body_sha256: str | None
    route: str
    processed: bool
    auth_scheme: str | None  # see AuthHeader.scheme
    credential: str | None  # key_fingerprint of the credential, never the credential


class StatsSnapshot(TypedDict):
    """What ``stats()`` and ``GET /__admin/stats`` answer."""

    total: int
    rate_limited: int
    by_status: dict[str, int]
    by_route: dict[str, int]
    suspended_users: list[int]
    last_internal_error: str | None
    requests: list[RequestEntry]


class RequestLog:
    """Counters over every request plus the last ``size`` entries (thread-safe)."""

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._entries: deque[RequestEntry] = deque(maxlen=size)
        self._by_status: Counter[str] = Counter()
        self._by_route: Counter[str] = Counter()

    def append(self, entry: RequestEntry) -> None:
        with self._lock:
            self._entries.append(entry)
            self._by_status[str(entry["status"])] += 1
            self._by_route[f"{entry['method']} {entry['route']}"] += 1

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self._by_status), dict(self._by_route)

    def entries(self) -> list[RequestEntry]:
        with self._lock:
            return [RequestEntry(**entry) for entry in self._entries]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_status.clear()
            self._by_route.clear()


def _iso_timestamp(epoch: float) -> str:
    millis = int(epoch * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{millis:03d}Z"


def _parse_body(body: bytes) -> tuple[bool, Any]:
    """``(ok, value)``: an empty body is ``None``; anything unparsable is not ok."""
    if not body.strip():
        return True, None
    try:
        return True, json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None


# --------------------------------------------------------------------------- simulator


@dataclass(frozen=True)
class Login:
    """A credential's login: its id (for ``GET /login``), the user it belongs to, and what
    ``GET /logins`` shows of it."""

    id: int
    user_id: int
    scheme: str = "KISI-LOGIN"
    type: str = "api"
    name: str | None = None
    expire: bool = False
    created_at: str = SEED_TIMESTAMP

    def view(self) -> JsonObject:
        """The login as Kisi lists it: never its secret."""
        return {
            "id": self.id,
            "type": self.type,
            "name": self.name,
            "user_id": self.user_id,
            "expire": self.expire,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Identity:
    """Who sent a request; ``problem`` names the 401 ERRORS entry when auth failed."""

    user_id: int | None
    login_id: int | None
    problem: str | None


ANONYMOUS: Final = Identity(None, None, "unauthenticated")
NO_ID: Final = 0  # user and login ids start at 1: what a public route sees of an anonymous caller


@dataclass(frozen=True)
class Exchange:
    """A request on its way through the gates, with what the simulator already knows."""

    request: SimRequest
    match: RouteMatch
    identity: Identity
    faults: Faults
    auth: AuthHeader = field(default_factory=lambda: NO_AUTH)

    @property
    def route_key(self) -> str:
        return f"{self.request.method} {self.match.name}"

    @property
    def public(self) -> bool:
        """The route needs no key (Kisi declares no security on it)."""
        return self.match.route is not None and self.match.route.public


Gate = Callable[[Exchange], SimResponse | None]


class KisiSimulator:
    """The simulator: Kisi's rules and injected faults behind a loopback HTTP server.

    Every request passes the gates in order -- latency, outage, authentication, suspension,
    rate limit, injected error, hang -- and then its endpoint. A gate that answers ends the
    request; only an endpoint's 2xx counts as *processed* (its side effect happened), which is
    what :meth:`calls` returns. :meth:`handle` is the whole core without sockets.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        new_secret: Callable[[], str] | None = None,
    ) -> None:
        self._config = config or SimConfig()
        self._address = (host, port)
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._owns_rng = rng is None
        self._rng = rng or random.Random(self._config.seed)
        self._lock = threading.Lock()  # guards faults, limiter, suspensions and the dice
        self._initial_faults = self._config.faults.resolved(wall_clock())
        self._faults = self._initial_faults
        self._logins = LoginBook(
            self._config.keys,
            self._config.credentials,
            new_secret=new_secret,
            stamp=lambda: _iso_timestamp(self._wall_clock()),
        )
        self._store = SimStore(self._config.seed_counts)
        login_api = LoginApi(self._logins, self._config.accounts)
        self._router = Router(api_routes(KisiApi(self._store, login_api)))
        self._limiter = RateLimiter()
        self._suspensions = SuspensionTracker()
        self._log = RequestLog(REQUEST_LOG_SIZE)
        self._last_internal_error: str | None = None
        self._gates: tuple[Gate, ...] = (
            self._latency_gate,
            self._outage_gate,
            self._authentication_gate,
            self._suspension_gate,
            self._rate_limit_gate,
            self._injected_error_gate,
            self._hang_gate,
        )
        self._admin_routes: Mapping[tuple[str, str], Callable[[SimRequest], SimResponse]] = {
            ("GET", f"{ADMIN_PREFIX}/faults"): self._admin_get_faults,
            ("PUT", f"{ADMIN_PREFIX}/faults"): self._admin_put_faults,
            ("POST", f"{ADMIN_PREFIX}/reset"): self._admin_reset,
            ("GET", f"{ADMIN_PREFIX}/stats"): self._admin_stats,
        }
        self._server: _SimServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> KisiSimulator:
        """Bind and serve in a daemon thread; returns self for chaining."""
        if self._server is not None:
            raise RuntimeError("kisi-sim is already running")
        self._server = _SimServer(self._address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": STOP_POLL_S},
            name="kisi-sim",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> KisiSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("kisi-sim is not running: call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._address[0]}:{self.port}"

    @property
    def verbose(self) -> bool:
        return self._config.verbose

    @property
    def store(self) -> SimStore:
        """The simulated data, for assertions such as "the lock is locked down"."""
        return self._store

    # ------------------------------------------------------------------ control

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def update_faults(self, changes: Mapping[str, object]) -> Faults:
        """Merge ``changes`` into the faults (what ``PUT /__admin/faults`` does)."""
        now = self._wall_clock()
        with self._lock:
            self._faults = self._faults.merged(changes).resolved(now)
            return self._faults

    def reset(self) -> None:
        """Start-up faults, seed data and credentials again; no buckets, suspensions or stats."""
        with self._lock:
            self._faults = self._initial_faults
            self._limiter.clear()
            self._suspensions.clear()
            self._last_internal_error = None
            if self._owns_rng:
                self._rng.seed(self._config.seed)
        self._store.reset()
        self._logins.reset()
        self._log.clear()

    def stats(self, *, include_requests: bool = True) -> StatsSnapshot:
        """Counts by status and by ``"METHOD /template"``, and the last 10,000 requests."""
        by_status, by_route = self._log.counts()
        with self._lock:
            suspended = self._suspensions.suspended_users()
            last_error = self._last_internal_error
        return StatsSnapshot(
            total=sum(by_status.values()),
            rate_limited=by_status.get("429", 0),
            by_status=by_status,
            by_route=by_route,
            suspended_users=suspended,
            last_internal_error=last_error,
            requests=self._log.entries() if include_requests else [],
        )

    def calls(self, method: str | None = None, path: str | None = None) -> list[RequestEntry]:
        """Processed requests (side effect happened), filtered by method and by path or template.

        ``len(sim.calls("POST", "/locks/7/unlock")) == 1`` reads "Kisi unlocked door 7 once";
        ``sim.calls("POST", "/locks/{id}/unlock")`` counts unlocks of any door.
        """
        return [
            entry
            for entry in self._log.entries()
            if entry["processed"]
            and (method is None or entry["method"] == method.upper())
            and (path is None or path in (entry["path"], entry["route"]))
        ]

    # ------------------------------------------------------------------ the core

    def handle(self, request: SimRequest) -> SimResponse:
        """Answer one request as Kisi (or the admin API) would; never raises."""
        if request.path == ADMIN_PREFIX or request.path.startswith(ADMIN_PREFIX + "/"):
            return self._admin(request)
        arrived = self._wall_clock()
        faults = self.faults
        match = self._router.match(request.method, request.path)
        auth = parse_authorization(request.headers.get("authorization"))
        identity = self._identify(auth, faults)
        exchange = Exchange(request, match, identity, faults, auth)
        try:
            response, processed = self._answer(exchange)
        except Exception as error:  # the simulator must answer, whatever broke
            self._note_internal_error(error)
            response, processed = kisi_error("internal"), False
        response = response.with_headers(self._deprecation_headers(request.method, match))
        self._record(exchange, response.status, processed=processed, arrived=arrived)
        return response

    def _answer(self, exchange: Exchange) -> tuple[SimResponse, bool]:
        for gate in self._gates:
            answer = gate(exchange)
            if answer is not None:
                return answer, False
        response = self._dispatch(exchange)
        return response, 200 <= response.status < 300

    def _identify(self, auth: AuthHeader, faults: Faults) -> Identity:
        credential = auth.credential
        login = self._logins.find(credential) if credential is not None else None
        if credential is None or login is None:
            return ANONYMOUS
        problem = "revoked" if faults.is_revoked(credential.secret) else None
        return Identity(login.user_id, login.id, problem)

    def _latency_gate(self, exchange: Exchange) -> SimResponse | None:
        if exchange.faults.latency_ms > 0:
            self._sleep(exchange.faults.latency_ms / 1000)
        return None

    def _outage_gate(self, exchange: Exchange) -> SimResponse | None:
        if exchange.faults.outage_active(self._wall_clock()):
            return fault_error(exchange.faults)
        return None

    def _authentication_gate(self, exchange: Exchange) -> SimResponse | None:
        """401 for a missing, unknown or revoked key, after Kisi's per-IP limit."""
        problem = exchange.identity.problem
        if problem is None:
            return None
        ip_limit = Limit(
            f"ip:{exchange.request.client}", self._config.rate_per_s, self._config.burst
        )
        limited = self._rate_limited([ip_limit], exchange.faults)
        if limited is not None or exchange.public:
            return limited  # a public route serves anonymous callers within the IP's quota
        return kisi_error(problem)

    def _suspension_gate(self, exchange: Exchange) -> SimResponse | None:
        user_id = exchange.identity.user_id
        with self._lock:
            suspended = user_id is not None and self._suspensions.is_suspended(user_id)
        return kisi_error("suspended") if suspended else None

    def _rate_limit_gate(self, exchange: Exchange) -> SimResponse | None:
        """The user's bucket (shared by all their keys) and the route's stricter one."""
        if exchange.identity.user_id is None:
            return None  # anonymous on a public route: the IP's bucket already counted it
        user = f"user:{exchange.identity.user_id}"
        limits = [Limit(user, self._config.rate_per_s, self._config.burst)]
        route_rate = self._config.route_rates.get(exchange.route_key)
        if route_rate is not None:
            limits.append(Limit(f"{user}:{exchange.route_key}", route_rate, ROUTE_BURST))
        return self._rate_limited(limits, exchange.faults)

    def _injected_error_gate(self, exchange: Exchange) -> SimResponse | None:
        if exchange.faults.error_rate > 0 and self._roll() < exchange.faults.error_rate:
            return fault_error(exchange.faults)
        return None

    def _hang_gate(self, exchange: Exchange) -> SimResponse | None:
        """Delay, then go on: the client may have given up, the side effect still happens."""
        faults = exchange.faults
        if faults.hang_ms > 0 and self._roll() < faults.hang_rate:
            self._sleep(faults.hang_ms / 1000)
        return None

    def _dispatch(self, exchange: Exchange) -> SimResponse:
        request, match = exchange.request, exchange.match
        if request.method not in API_METHODS:
            return kisi_error("method_not_allowed")
        if match.template is None:
            return kisi_error("no_route")
        if match.route is None:
            return kisi_error("method_not_allowed")
        if request.body_problem is not None:
            return kisi_error(request.body_problem)
        parsed, body = _parse_body(request.body)
        if not parsed:
            return kisi_error("invalid_json")
        identity = exchange.identity
        anonymous = identity.user_id is None or identity.login_id is None
        if anonymous and not exchange.public:  # the gates make it rare
            return kisi_error("unauthenticated")
        call = ApiCall(
            user_id=identity.user_id or NO_ID,
            login_id=identity.login_id or NO_ID,
            params=match.params,
            query=parse_qs(request.query, keep_blank_values=True),
            body=body,
            stamp=_iso_timestamp(self._wall_clock()),
        )
        try:
            return match.route.action(call)
        except InvalidParamError as error:
            return kisi_error("invalid_param", str(error))

    def _rate_limited(self, limits: Sequence[Limit], faults: Faults) -> SimResponse | None:
        with self._lock:
            wait = self._limiter.acquire(limits, self._clock())
        if wait <= 0:
            return None
        response = RATE_LIMIT_BODIES[faults.rate_limit_body]
        if faults.retry_after:
            response = response.with_headers([("Retry-After", str(retry_after_seconds(wait)))])
        return response

    def _roll(self) -> float:
        with self._lock:
            return self._rng.random()

    def _deprecation_headers(self, method: str, match: RouteMatch) -> list[tuple[str, str]]:
        routes = self._config.deprecated_routes
        sunset = routes.get(f"{method} {match.name}", routes.get(match.name))
        return [] if sunset is None else [("Deprecation", "true"), ("Sunset", sunset)]

    def _record(self, exchange: Exchange, status: int, *, processed: bool, arrived: float) -> None:
        """Log the request and count a bad one (4xx incl. 429) towards suspension."""
        request, identity = exchange.request, exchange.identity
        self._log.append(
            RequestEntry(
                at=arrived,
                method=request.method,
                path=request.path,
                query=request.query,
                status=status,
                user_id=identity.user_id,
                body_sha256=hashlib.sha256(request.body).hexdigest() if request.body else None,
                route=exchange.match.name,
                processed=processed,
                auth_scheme=exchange.auth.scheme,
                credential=exchange.auth.fingerprint,
            )
        )
        if identity.user_id is not None and 400 <= status < 500:
            faults = self.faults
            with self._lock:
                self._suspensions.record_bad(
                    identity.user_id,
                    self._clock(),
                    faults.suspend_after_bad,
                    faults.suspend_window_s,
                )

    def _note_internal_error(self, error: BaseException) -> None:
        with self._lock:
            self._last_internal_error = f"{type(error).__name__}: {error}"[:500]
        if self.verbose:
            traceback.print_exc(file=sys.stderr)

    # ------------------------------------------------------------------ admin API

    def _admin(self, request: SimRequest) -> SimResponse:
        action = self._admin_routes.get((request.method, request.path.rstrip("/")))
        if action is not None:
            try:
                return action(request)
            except Exception as error:  # the admin API must answer too
                self._note_internal_error(error)
                return kisi_error("internal")
        known_path = any(path == request.path.rstrip("/") for _, path in self._admin_routes)
        return kisi_error("method_not_allowed" if known_path else "no_route")

    def _admin_get_faults(self, request: SimRequest) -> SimResponse:
        return json_response(200, self.faults.view(self._wall_clock()))

    def _admin_put_faults(self, request: SimRequest) -> SimResponse:
        parsed, changes = _parse_body(request.body)
        if not parsed:
            return kisi_error("invalid_json")
        if not isinstance(changes, dict):
            return kisi_error("invalid_fault", "body must be a JSON object of fault fields")
        try:
            faults = self.update_faults(changes)
        except SimConfigError as error:
            return kisi_error("invalid_fault", str(error))
        return json_response(200, faults.view(self._wall_clock()))

    def _admin_reset(self, request: SimRequest) -> SimResponse:
        self.reset()
        return no_content()

    def _admin_stats(self, request: SimRequest) -> SimResponse:
        query = parse_qs(request.query)
        include = query.get("log", ["1"])[-1].lower() not in _FALSE_WORDS
        return json_response(200, self.stats(include_requests=include))


# --------------------------------------------------------------------------- HTTP layer


class _SimServer(ThreadingHTTPServer):
    """A threading server that never blocks on close and never prints tracebacks."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # socketserver's default backlog of 5 resets bursts of callers

    def __init__(self, address: tuple[str, int], simulator: KisiSimulator) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.simulator.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Thin socket layer: bytes in, :meth:`KisiSimulator.handle`, bytes out.

    Every method name is accepted (``__getattr__`` serves any ``do_*``) so that HEAD and
    invented methods reach the core, which answers them 405 like the rest of Kisi's errors.
    """

    protocol_version = "HTTP/1.1"  # keep-alive, as Kisi's load balancer offers
    # Headers and body leave in two writes; with Nagle on, keep-alive calls stall ~40 ms on
    # delayed ACKs, which would make benchmarks measure the simulator instead of the gateway.
    disable_nagle_algorithm = True
    timeout = 60  # idle keep-alive connections are dropped, threads do not pile up
    server: _SimServer

    def version_string(self) -> str:
        return "kisi-sim"

    def __getattr__(self, name: str) -> Callable[[], None]:
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _serve(self) -> None:
        request = self._read_request()
        try:
            response = self.server.simulator.handle(request)
        except Exception:  # handle() never raises; this is the last line of defence
            response = kisi_error("internal")
        self._write(response)

    def _read_request(self) -> SimRequest:
        parts = urlsplit(self.path)
        body, problem = self._read_body()
        return SimRequest(
            method=self.command.upper(),
            path=parts.path or "/",
            query=parts.query,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            client=str(self.client_address[0]),
            body_problem=problem,
        )

    def _read_body(self) -> tuple[bytes, str | None]:
        """The body and no problem, or no body and the ERRORS entry that explains why."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return b"", "length_required"
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b"", None
        if not raw_length.strip().isdigit():
            self.close_connection = True
            return b"", "malformed_request"
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return b"", "too_large"
        return self.rfile.read(length), None

    def _write(self, response: SimResponse) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD" and response.body:
                self.wfile.write(response.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a hang did its job)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed request lines and headers get a Kisi-shaped body too, not HTML."""
        self.close_connection = True
        spec = ERRORS["malformed_request"]
        self._write(error_response(code, message or spec.message, spec.code))

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.simulator.verbose:
            super().log_message(format, *args)


# --------------------------------------------------------------------------- CLI


def _install_sigterm(stop: threading.Event) -> None:
    """``make run`` stops children with SIGTERM: treat it like Ctrl-C."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m local.kisi_sim``: serve in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="kisi-sim", description="Kisi API simulator")
    parser.add_argument("--host", default=os.environ.get("KISI_SIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=os.environ.get("KISI_SIM_PORT", "8080"))
    parser.add_argument("--verbose", action="store_true", help="log every request line")
    args = parser.parse_args(argv)
    try:
        config = SimConfig.from_env(os.environ)
    except SimConfigError as error:
        print(f"kisi-sim: {error}", file=sys.stderr)
        return 2
    if args.verbose:
        config = dataclasses.replace(config, verbose=True)
    stop = threading.Event()
    _install_sigterm(stop)
    with KisiSimulator(config, host=args.host, port=args.port) as simulator:
        print(f"kisi-sim listening on {simulator.url}", flush=True)
        try:
            while not stop.wait(0.5):  # a timed wait keeps Ctrl-C prompt
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
