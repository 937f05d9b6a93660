"""Who is calling: Kisi's ``Authorization`` schemes, the credentials and logins behind them.

:func:`parse_authorization` reads a header into an :class:`AuthHeader` (scheme first, then
secret; placeholders such as ``null`` are no credential). :class:`LoginBook` holds every
credential the simulator accepts and the user each belongs to: the configured keys and
credentials, plus the logins ``POST /logins`` creates. The endpoints that sign in and out live
in :mod:`kisi_sim.api` (``LoginApi``); the gate that turns a credential into an identity lives
in :mod:`kisi_sim.simulator`.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from kisi_sim.store import SEED_TIMESTAMP, JsonObject

__all__ = [
    "AUTH_SCHEMES",
    "KISI_LOGIN",
    "NO_AUTH",
    "PLACEHOLDER_SECRETS",
    "SCHEME_BY_WORD",
    "Account",
    "AuthHeader",
    "Credential",
    "Login",
    "LoginBook",
    "key_fingerprint",
    "looks_like_email",
    "parse_authorization",
]

KISI_LOGIN: Final = "KISI-LOGIN"
# The Authorization schemes Kisi documents; a caller's own credential may use any of them.
AUTH_SCHEMES: Final = (KISI_LOGIN, "Bearer", "KISI-ACCESS-KEY", "KISI-GROUP-LINK", "KISI-SERVICE")
# Schemes compare case-insensitively (RFC 9110): upper-cased word -> canonical spelling.
SCHEME_BY_WORD: Final[Mapping[str, str]] = {scheme.upper(): scheme for scheme in AUTH_SCHEMES}
# What clients send before they have a secret: kisi-client 8.0.0 sends ``Authorization: null``
# after signIn/signOut reset it, a template may send ``KISI-LOGIN null``, and Python's
# ``f"KISI-LOGIN {None}"`` gives ``KISI-LOGIN None``. None of them is a credential.
PLACEHOLDER_SECRETS: Final = frozenset({"", "null", "none", "undefined"})


def key_fingerprint(secret: str) -> str:
    """What the simulator shows instead of a key: a short SHA-256 prefix."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def looks_like_email(value: object) -> bool:
    """An ``@`` with something on both sides: as much as the simulator needs to check."""
    return isinstance(value, str) and "@" in value.strip()[1:-1]


@dataclass(frozen=True)
class Account:
    """A Kisi user who can sign in with e-mail and password (``POST /logins``)."""

    password: str
    user_id: int


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
    scheme = SCHEME_BY_WORD.get(word.upper())
    if scheme is None:
        return AuthHeader("null" if value.lower() in PLACEHOLDER_SECRETS else "unknown", None)
    secret = rest.strip()
    if secret.lower() in PLACEHOLDER_SECRETS:
        return AuthHeader(scheme, None)
    return AuthHeader(scheme, Credential(scheme, secret))


@dataclass(frozen=True)
class Login:
    """A credential's login: its id (for ``GET /login``), the user it belongs to, and what
    ``GET /logins`` shows of it."""

    id: int
    user_id: int
    scheme: str = KISI_LOGIN
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
        """The login this credential belongs to, or None for an unknown or deleted one."""
        with self._lock:
            return self._logins.get(credential)

    def get(self, login_id: int) -> Login | None:
        """The login with this id, or None."""
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
