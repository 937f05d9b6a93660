"""Who a call acts as: the caller's own Kisi credential or its tenant's service login, and the
keyed identity that scopes everything the gateway keeps for it.

A caller may send its own credential in ``Authorization`` exactly as Kisi's clients do (every
scheme Kisi accepts); the gateway then sends exactly that credential to Kisi. Without one, the
call uses its tenant's service login. Records, idempotency keys, the guard and the budget are
scoped by an *identity*: a keyed hash (HMAC-SHA256 with a secret of the stack) of the
credential, never the credential itself, so one identity never sees or affects another's.

Pure: parsing, hashing and the few rules that depend on who is calling.

>>> parse_authorization("KISI-LOGIN null") is None   # Kisi's JS client before sign-in
True
>>> parse_authorization("bearer abc").header()
'Bearer abc'
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from enum import StrEnum

# Kisi's documented schemes (KISI_API.md "Connection and authentication"), canonical spelling.
SCHEMES: tuple[str, ...] = (
    "KISI-LOGIN", "Bearer", "KISI-ACCESS-KEY", "KISI-GROUP-LINK", "KISI-SERVICE",
)
_BY_LOWER = {scheme.lower(): scheme for scheme in SCHEMES}
# What Kisi's clients send when they hold no secret: JS ``null``/``undefined``, Python ``None``.
_NO_SECRET = frozenset({"", "null", "none", "undefined"})
MAX_AUTHORIZATION = 4096  # far above any Kisi secret; a larger header is not a credential
_SECRET = re.compile(r"^[\x21-\x7e]{1,4000}$")  # visible ASCII, no spaces, no controls

# Routes that check a credential rather than use one (KISI_API.md): their 401 is an end
# user's wrong password, never a revoked key, and they need no key at all.
CREDENTIAL_CHECKS: frozenset[str] = frozenset({"POST /logins", "POST /oauth/token"})
# Sent with the service login, these would delete or replace it: the stack's lifeline.
SERVICE_LOGIN_ITSELF: frozenset[str] = frozenset({
    "DELETE /login", "PUT /login", "PATCH /login", "POST /login/promote",
})
# These name a login by id: refused with the service login when the id is its own.
SERVICE_LOGIN_BY_ID: frozenset[str] = frozenset({
    "DELETE /logins/{id}", "POST /logins/{id}/promote", "PATCH /logins/{id}",
})


class CredentialError(ValueError):
    """An ``Authorization`` header that is not a credential the gateway can pass on."""


class CredentialKind(StrEnum):
    """Whose credential a call carries (a metric dimension: bounded)."""

    SERVICE = "service"  # the tenant's service login, from Secrets Manager
    CALLER = "caller"  # the caller's own, from its Authorization header
    NONE = "none"  # a credential check sent bare (sign-in needs no key)


class CallerCredentials(StrEnum):
    """The deployment's rule for callers' own credentials (``CALLER_CREDENTIALS``)."""

    ALLOW = "allow"
    REQUIRE = "require"
    FORBID = "forbid"


@dataclass(frozen=True, slots=True)
class Credential:
    """A Kisi credential: the scheme and the secret, which is never printed or stored plain."""

    scheme: str
    secret: str = field(repr=False)

    def header(self) -> str:
        """The ``Authorization`` value Kisi receives."""
        return f"{self.scheme} {self.secret}"


def parse_authorization(value: str | None) -> Credential | None:
    """A caller's ``Authorization`` header as a credential, ``None`` when it carries none.

    Raises :class:`CredentialError` for a header that is neither: an unknown scheme, a
    malformed or oversized value. The message never contains the value.

    >>> parse_authorization(None) is None
    True
    >>> parse_authorization("null") is None  # axios sends a JS null like this
    True
    >>> parse_authorization("Basic Zm9vOmJhcg==")
    Traceback (most recent call last):
    ...
    kisi_gateway.core.identity.CredentialError: unsupported Authorization scheme
    """
    if value is None:
        return None
    if len(value) > MAX_AUTHORIZATION:
        raise CredentialError("Authorization header too long")
    text = value.strip()
    if text.lower() in _NO_SECRET:
        return None
    scheme_text, _, rest = text.partition(" ")
    scheme = _BY_LOWER.get(scheme_text.lower())
    if scheme is None:
        raise CredentialError("unsupported Authorization scheme")
    secret = rest.strip()
    if secret.lower() in _NO_SECRET:
        return None
    if not _SECRET.match(secret):
        raise CredentialError("malformed Authorization credential")
    return Credential(scheme, secret)


def keyed_hash(key: bytes, *parts: str) -> str:
    """HMAC-SHA256 of ``parts`` under the stack's secret ``key``: 128 bits in hex."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part.encode())
        mac.update(b"\0")
    return mac.hexdigest()[:32]


def identity_of(key: bytes, credential: Credential) -> str:
    """The identity of a credential: who the guard and the budget see.

    >>> identity_of(b"k", Credential("KISI-LOGIN", "s"))
    'id-b65c883457039c71295eb26e9a04dab8'
    """
    return "id-" + keyed_hash(key, "identity", credential.scheme, credential.secret)


def scope_of(key: bytes, caller: str, identity: str) -> str:
    """Who may read a record or reuse an ``Idempotency-Key``: one caller acting as one
    identity (a caller acting with two credentials has two scopes)."""
    return keyed_hash(key, "scope", caller, identity)[:24]


def protects_service_login(route_key: str, path: str, service_login_id: int | None) -> bool:
    """Would this call, sent with the service login, delete or replace that login?

    >>> protects_service_login("DELETE /login", "/login", None)
    True
    >>> protects_service_login("DELETE /logins/{id}", "/logins/77", 77)
    True
    >>> protects_service_login("DELETE /logins/{id}", "/logins/78", 77)
    False
    """
    if route_key in SERVICE_LOGIN_ITSELF:
        return True
    if route_key in SERVICE_LOGIN_BY_ID:
        parts = path.strip("/").split("/")
        return service_login_id is not None and len(parts) > 1 and parts[1] == str(
            service_login_id)
    return False


class CallerMode(StrEnum):
    """How a caller is answered when Kisi keeps failing (a per-caller setting).

    ``client``: as Kisi itself would be, never a 202 unless ``Prefer: respond-async`` (RFC
    7240), Kisi's last answer when the short inline wait runs out. ``service``: the deferral
    contract, a 202 with a record to poll. ``auto`` (default): ``client`` for a caller that
    sends its own credential (it is a Kisi client), ``service`` for one on the service login.
    """

    AUTO = "auto"
    CLIENT = "client"
    SERVICE = "service"


DEFAULT_TENANT = "default"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def tenant_name(text: str) -> str:
    """A tenant id: lower-case letters, digits, ``-`` and ``_``, at most 63 (a metric value)."""
    if not _NAME.match(text):
        raise ValueError(f"{text!r} is not a tenant name (a-z, 0-9, '-', '_', at most 63)")
    return text


@dataclass(frozen=True, slots=True)
class Tenant:
    """One Kisi organization the stack serves: its service login lives in ``secret_id``."""

    name: str
    secret_id: str


@dataclass(frozen=True, slots=True)
class Caller:
    """An API Gateway API key (by id), the tenant it belongs to, and how it is answered."""

    api_key_id: str
    tenant: str
    mode: CallerMode = CallerMode.AUTO


@dataclass(frozen=True, slots=True)
class KisiLogin:
    """What ``GET /login`` says of a credential: its Kisi user (whose 5 req/s it spends) and
    its own login id (so the service login can refuse to delete itself)."""

    user_id: int
    login_id: int | None = None


def is_client(mode: CallerMode, kind: CredentialKind) -> bool:
    """Is this call answered as Kisi's own clients expect (no unasked-for 202)?"""
    if mode is CallerMode.AUTO:
        return kind is not CredentialKind.SERVICE
    return mode is CallerMode.CLIENT
