"""The simulator core: :class:`KisiSimulator`, Kisi's gates in front of the endpoints.

A request passes latency, outage, authentication, suspension, rate limit, injected error and
hang, then reaches its endpoint in :mod:`kisi_sim.api`; the admin API (``/__admin/...``)
changes faults and reads the request log. :meth:`KisiSimulator.handle` is the whole core
without sockets (the benchmarks drive it on a virtual clock); :meth:`KisiSimulator.start`
serves it over HTTP through :mod:`kisi_sim.server`.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs

from kisi_sim.api import (
    ApiCall,
    InvalidParamError,
    KisiApi,
    LoginApi,
    RouteMatch,
    Router,
    api_routes,
)
from kisi_sim.config import FALSE_WORDS, Faults, SimConfig, SimConfigError
from kisi_sim.identity import NO_AUTH, AuthHeader, LoginBook, parse_authorization
from kisi_sim.limits import ROUTE_BURST, Limit, RateLimiter, SuspensionTracker
from kisi_sim.request_log import REQUEST_LOG_SIZE, RequestEntry, RequestLog, StatsSnapshot
from kisi_sim.responses import (
    FAULT_ERRORS,
    RATE_LIMIT_BODIES,
    SimRequest,
    SimResponse,
    json_response,
    kisi_error,
    no_content,
    retry_after_seconds,
)
from kisi_sim.server import STOP_POLL_S, SimServer
from kisi_sim.store import SimStore

__all__ = ["ADMIN_PREFIX", "KisiSimulator", "fault_error"]

ADMIN_PREFIX: Final = "/__admin"
API_METHODS: Final = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})


def fault_error(faults: Faults) -> SimResponse:
    """The answer of an injected error or an outage, by the configured ``error_status``."""
    return kisi_error(FAULT_ERRORS[faults.error_status])


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
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> KisiSimulator:
        """Bind and serve in a daemon thread; returns self for chaining."""
        if self._server is not None:
            raise RuntimeError("kisi-sim is already running")
        self._server = SimServer(self._address, self)
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
        """401 for a missing, unknown or revoked key, after Kisi's per-IP limit; a public route
        (``POST /logins``) serves such a caller within that limit instead."""
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
        include = query.get("log", ["1"])[-1].lower() not in FALSE_WORDS
        return json_response(200, self.stats(include_requests=include))
