"""Who a call acts as: the first decision after validation.

::

    caller   = the API Gateway API key (its tenant and its mode, from the directory)
    credential = the caller's own Authorization, or else its tenant's service login
    identity = keyed hash of the credential: scopes the guard and the budget
    scope    = keyed hash of (caller, identity): scopes records and idempotency keys

A credential check (``POST /logins``) sent without a credential goes without one: sign-in
needs no key, and the service key is never attached to it. Anywhere else, a header that names
no credential (``KISI-LOGIN null``) is refused rather than replaced by the service login.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kisi_gateway.core.errors import GatewayError, GatewayErrorCode
from kisi_gateway.core.identity import (
    CREDENTIAL_CHECKS,
    DEFAULT_TENANT,
    Caller,
    CallerCredentials,
    CallerMode,
    Credential,
    CredentialError,
    CredentialKind,
    Tenant,
    identity_of,
    is_client,
    parse_authorization,
    scope_of,
)
from kisi_gateway.pipeline.calls import IncomingCall
from kisi_gateway.stores.ports import Directory
from kisi_gateway.stores.secrets import ServiceKeys

ANONYMOUS = "anonymous"  # the identity of a credential check sent without a credential
SERVICE_SCHEME = "KISI-LOGIN"
DIRECTORY_CACHE_S = 30.0  # a new or removed caller or tenant counts within this


@dataclass(frozen=True, slots=True)
class Who:
    """Who one call acts as, and everything scoped by it."""

    tenant: str
    caller: str
    kind: CredentialKind
    credential: Credential | None = field(repr=False)
    identity: str
    scope: str
    client: bool  # answered as Kisi's own clients expect: no 202 unless asked
    mode: CallerMode = CallerMode.AUTO
    secret_id: str | None = None  # the tenant's service login, for a service call


class Callers:
    """Resolves :class:`Who` from an API key id and an ``Authorization`` header."""

    def __init__(
        self,
        directory: Directory,
        keys: ServiceKeys,
        identity_key: bytes,
        *,
        policy: CallerCredentials = CallerCredentials.ALLOW,
        default_secret_id: str | None = None,
        clock: Callable[[], float],
        cache_s: float = DIRECTORY_CACHE_S,
    ) -> None:
        self._directory = directory
        self._keys = keys
        self._key = identity_key
        self._policy = policy
        self._default_secret = default_secret_id
        self._clock = clock
        self._cache_s = cache_s
        self._cache: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def who(self, api_key_id: str | None, authorization: str | None, route_key: str) -> Who:
        """Who this call acts as; raises :class:`GatewayError` with the answer otherwise."""
        caller = self._caller(api_key_id or ANONYMOUS)
        try:
            own = parse_authorization(authorization)
        except CredentialError as exc:
            raise GatewayError(
                400, GatewayErrorCode.INVALID_HEADER, f"Authorization: {exc}"
            ) from exc
        if own is None and route_key in CREDENTIAL_CHECKS:
            return self._build(caller, CredentialKind.NONE, None)
        if own is not None:
            if self._policy is CallerCredentials.FORBID:
                raise GatewayError(403, GatewayErrorCode.CREDENTIALS_FORBIDDEN,
                                   "this gateway sends its own Kisi credential: remove "
                                   "Authorization from the call")
            return self._build(caller, CredentialKind.CALLER, own)
        if authorization is not None and authorization.strip():
            # A placeholder (``KISI-LOGIN null``, a bare ``null``, a scheme without a secret):
            # the caller says it holds no credential. Kisi would answer 401; acting with the
            # service login instead would lend it the service login's rights.
            raise GatewayError(401, GatewayErrorCode.CREDENTIAL_REQUIRED,
                               "Authorization carries no credential: send your own Kisi "
                               "credential, or leave the header out to act as the gateway")
        if self._policy is CallerCredentials.REQUIRE:
            raise GatewayError(401, GatewayErrorCode.CREDENTIAL_REQUIRED,
                               "this gateway needs your own Kisi credential in Authorization")
        return self._service(caller)

    def rebuild(self, tenant: str, caller_id: str, mode: CallerMode, kind: CredentialKind,
                credential: Credential | None) -> Who:
        """The :class:`Who` of a queued request (a worker has no caller's header)."""
        caller = Caller(caller_id, tenant, mode)
        if kind is CredentialKind.SERVICE:
            return self._service(caller)
        return self._build(caller, kind, credential)

    def rotated(self, who: Who) -> Who | None:
        """A paused service login may have a new key: re-read it (at most every few seconds)
        and, if it changed, who the call is now. ``None``: same key, or not a service call."""
        if who.kind is not CredentialKind.SERVICE or who.secret_id is None:
            return None
        if not self._keys.refresh(who.secret_id, self._clock()):
            return None
        fresh = self._service(Caller(who.caller, who.tenant, who.mode))
        return fresh if fresh.identity != who.identity else None

    def _service(self, caller: Caller) -> Who:
        tenant = self._tenant(caller.tenant)
        key = self._keys.current(tenant.secret_id)
        who = self._build(caller, CredentialKind.SERVICE, Credential(SERVICE_SCHEME, key))
        return replace(who, secret_id=tenant.secret_id)

    def _build(self, caller: Caller, kind: CredentialKind, credential: Credential | None) -> Who:
        identity = identity_of(self._key, credential) if credential is not None else ANONYMOUS
        # Records of a service call stay readable across a key rotation: scoped by tenant.
        label = f"service:{caller.tenant}" if kind is CredentialKind.SERVICE else identity
        return Who(
            tenant=caller.tenant, caller=caller.api_key_id, kind=kind, credential=credential,
            identity=identity, scope=scope_of(self._key, caller.api_key_id, label),
            client=is_client(caller.mode, kind), mode=caller.mode,
        )

    def _caller(self, api_key_id: str) -> Caller:
        found = self._cached(f"caller#{api_key_id}", lambda: self._directory.caller(api_key_id))
        return found if isinstance(found, Caller) else Caller(api_key_id, DEFAULT_TENANT)

    def _tenant(self, name: str) -> Tenant:
        if name == DEFAULT_TENANT and self._default_secret is not None:
            found: Any = self._cached(f"tenant#{name}", lambda: self._directory.tenant(name))
            return found if isinstance(found, Tenant) else Tenant(name, self._default_secret)
        found = self._cached(f"tenant#{name}", lambda: self._directory.tenant(name))
        if not isinstance(found, Tenant):
            raise GatewayError(403, GatewayErrorCode.TENANT_UNKNOWN,
                               "this caller's tenant is not configured in the gateway")
        return found

    def _cached(self, key: str, load: Callable[[], Any]) -> Any:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        value = load()
        with self._lock:
            self._cache[key] = (value, now + self._cache_s)
        return value


def kept_from_records(who: Who, call: IncomingCall) -> Who:
    """``who`` for a credential check (sign-in, token exchange): its answer holds a new
    secret, so it is never kept in a record. It is answered at once as Kisi would answer it
    (never deferred, whatever the caller's mode), and ``Idempotency-Key`` or ``Prefer:
    respond-async``, which would keep the answer for later, is refused."""
    if call.route.key not in CREDENTIAL_CHECKS:
        return who
    if call.idempotency_key is not None or call.prefs.respond_async:
        raise GatewayError(400, GatewayErrorCode.INVALID_HEADER,
                           "a sign-in is answered at once and never kept (its answer holds a "
                           "new secret): send it without Idempotency-Key and respond-async")
    return replace(who, client=True)
