"""The Kisi HTTP client: one attempt, one typed result, and the key kept at home.

Each call makes exactly one attempt (retrying is the gateway's decision, never urllib3's), never
follows a redirect (the ``Authorization`` header must not travel to another origin), and never
lets the environment change what is sent (``trust_env`` is off, so a ``.netrc`` cannot replace
the ``KISI-LOGIN`` header and no proxy variable reroutes the key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError, ProtocolError

from kisi_gateway.core.identity import Credential
from kisi_gateway.core.outcome import Outcome, Transport, classify_status, classify_transport

USER_AGENT = "kisi-gateway/0.1"
# The largest answer passed on: a Lambda's synchronous response is at most 6 MB (base64 of a
# binary body grows by a third), API Gateway's 10 MB. Bounded memory whatever Kisi sends.
MAX_ANSWER_BYTES = 4_000_000
_CHUNK = 64 * 1024


def read_capped(response: requests.Response, cap: int) -> bytes | None:
    """The body, streamed, or ``None`` once it is known to pass ``cap`` bytes (not read on).

    A declared ``Content-Length`` above the cap stops it before a byte is read; otherwise it
    stops at the first chunk past the cap, so at most ``cap + 64 KiB`` is ever held.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        response.close()
        return None
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_content(_CHUNK):
        total += len(chunk)
        if total > cap:
            response.close()
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class KisiResponse:
    """What Kisi answered. Header names are lower-case."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed_s: float = 0.0
    too_large: bool = False  # the body passed the cap: not read, ``body`` is empty

    @property
    def outcome(self) -> Outcome:
        return classify_status(self.status)


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """No usable answer came back. ``detail`` never contains the key."""

    kind: Transport
    detail: str = ""

    @property
    def outcome(self) -> Outcome:
        return classify_transport(self.kind)


AttemptResult = KisiResponse | TransportFailure


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to connect and to wait for the answer (requests' ``(connect, read)``)."""

    connect_s: float = 3.05
    read_s: float = 10.0

    def bounded(self, within_s: float | None) -> tuple[float, float]:
        """``(connect, read)`` for an attempt that must end within ``within_s`` seconds.

        >>> Timeouts(3.05, 10.0).bounded(4.0)
        (2.0, 2.0)
        """
        if within_s is None:
            return self.connect_s, self.read_s
        half = max(within_s, 0.2) / 2
        return min(self.connect_s, half), min(self.read_s, half)


@dataclass(frozen=True, slots=True)
class KisiCall:
    """A call to send: method, path (already validated), query pairs, a JSON body, the
    credential Kisi receives (``None``: no ``Authorization`` at all, as a sign-in needs) and,
    for a caller that cannot wait long, a bound on the whole attempt."""

    method: str
    path: str
    query: Sequence[tuple[str, str]] = ()
    body: bytes | None = None
    credential: Credential | None = field(default=None, repr=False)
    within_s: float | None = None


class HttpSession(Protocol):
    """The part of ``requests.Session`` the client uses (tests pass a fake)."""

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]],
        data: bytes | None,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
        allow_redirects: bool,
        stream: bool,
    ) -> requests.Response: ...


def origin_of(url: str) -> tuple[str, str]:
    """``(scheme, host[:port])`` of a URL, the host lower-cased."""
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def same_origin(url: str, base_url: str) -> bool:
    """Does ``url`` point at ``base_url``'s origin? (Used to rewrite ``Location``.)

    >>> same_origin("https://API.kisi.io/locks/1", "https://api.kisi.io")
    True
    >>> same_origin("https://api.kisi.io.evil.example/x", "https://api.kisi.io")
    False
    """
    return origin_of(url) == origin_of(base_url)


class OriginError(ValueError):
    """A URL that would take the key somewhere other than the configured Kisi origin."""


def build_session(pool_size: int = 10) -> requests.Session:
    """A pooled session that never retries on its own and ignores the environment."""
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


@dataclass
class KisiClient:
    """Sends one call to Kisi with the call's credential and reports what happened.

    >>> client = KisiClient("https://api.kisi.io")  # doctest: +SKIP
    >>> key = Credential("KISI-LOGIN", "secret")  # doctest: +SKIP
    >>> client.send(KisiCall("GET", "/locks", (("limit", "10"),), credential=key))  # doctest: +SKIP
    KisiResponse(status=200, ...)
    """

    base_url: str
    session: HttpSession | None = None
    timeouts: Timeouts = Timeouts()
    integration_identifier: str | None = None
    integration_contact: str | None = None
    max_answer_bytes: int = MAX_ANSWER_BYTES

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise OriginError("KISI_BASE_URL must be an absolute http(s) URL")
        self.base_url = self.base_url.rstrip("/")
        self._origin = origin_of(self.base_url)
        if self.session is None:
            self.session = build_session()

    def url_for(self, path: str) -> str:
        """The absolute URL of ``path`` on Kisi; refuses anything that leaves the origin."""
        if not path.startswith("/") or path.startswith("//"):
            raise OriginError("path must be relative to the Kisi base URL")
        url = self.base_url + path
        if origin_of(url) != self._origin:
            raise OriginError("path leaves the Kisi origin")
        return url

    def is_own_origin(self, url: str) -> bool:
        """Does ``url`` point at the configured Kisi origin?"""
        return origin_of(url) == self._origin

    def headers(self, has_body: bool, credential: Credential | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if credential is not None:
            headers["Authorization"] = credential.header()
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.integration_identifier:
            headers["X-Kisi-Integration-Identifier"] = self.integration_identifier
        if self.integration_contact:
            headers["X-Kisi-Integration-Contact"] = self.integration_contact
        return headers

    def send(self, call: KisiCall) -> AttemptResult:
        """Make one attempt; every failure becomes a :class:`TransportFailure`."""
        assert self.session is not None  # set in __post_init__
        url = self.url_for(call.path)
        try:
            response = self.session.request(
                call.method,
                url,
                params=list(call.query),
                data=call.body,
                headers=self.headers(call.body is not None, call.credential),
                timeout=self.timeouts.bounded(call.within_s),
                allow_redirects=False,
                stream=True,
            )
            body = read_capped(response, self.max_answer_bytes)
        except requests.exceptions.RequestException as exc:
            return TransportFailure(kind=transport_kind(exc), detail=type(exc).__name__)
        headers = {name.lower(): value for name, value in response.headers.items()}
        return KisiResponse(
            status=response.status_code,
            headers=headers,
            body=body if body is not None else b"",
            elapsed_s=response.elapsed.total_seconds(),
            too_large=body is None,
        )


def transport_kind(exc: requests.exceptions.RequestException) -> Transport:
    """Whether a failed attempt certainly never reached Kisi, or may have been acted on."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Transport.CONNECT_TIMEOUT
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return Transport.READ_TIMEOUT
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        inner = getattr(reason, "reason", reason)
        if isinstance(inner, NewConnectionError):
            return Transport.CONNECT_ERROR
        if isinstance(inner, ProtocolError | ConnectionResetError):
            return Transport.CONNECTION_RESET
        # Refused or unresolvable hosts surface as NewConnectionError above; anything else
        # happened on an open connection, so the request may have been sent.
        return Transport.CONNECTION_RESET
    return Transport.INVALID_RESPONSE
