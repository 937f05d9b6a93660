"""One attempt to reach Kisi, with everything that must happen around it.

Before: the guard (is Kisi going to reject this?) and the send budget (is there a slot?), put
together by :func:`~kisi_gateway.core.decisions.before_attempt`. After: classification, the
outcome metric, the guard's fast path (401 storms), the budget's adaptive rate (429 and
``Retry-After``), and a note of ``Deprecation``/``Sunset``. Both Lambdas go through
:class:`Sender`, so an attempt is counted the same wherever it happens.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from kisi_gateway.core.backoff import RandomSource, parse_retry_after
from kisi_gateway.core.breaker import Pause
from kisi_gateway.core.decisions import (
    AskAgain,
    Defer,
    Expire,
    Refuse,
    Send,
    Window,
    at_send_time,
    before_attempt,
)
from kisi_gateway.core.errors import parse_kisi_error
from kisi_gateway.core.identity import CREDENTIAL_CHECKS, CredentialKind, KisiLogin
from kisi_gateway.core.outcome import Outcome
from kisi_gateway.core.policy import Route
from kisi_gateway.core.ratelimit import Booking, Grant
from kisi_gateway.core.records import AttemptEntry, StoredResponse
from kisi_gateway.core.send_gate import DEFAULT_MAX_GATE_S, gate_wait
from kisi_gateway.pipeline.callers import Who
from kisi_gateway.pipeline.kisi_http import AttemptResult, KisiCall, KisiResponse
from kisi_gateway.pipeline.known_bad import KnownBadGate
from kisi_gateway.pipeline.probing import probe_elected
from kisi_gateway.pipeline.telemetry import Telemetry
from kisi_gateway.stores.ports import Clock, Directory, Guard, SendBudget

LOG = logging.getLogger("kisi_gateway")


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class KisiSender(Protocol):
    """What :class:`~kisi_gateway.pipeline.kisi_http.KisiClient` offers the pipeline."""

    def send(self, call: KisiCall) -> AttemptResult: ...


@dataclass(frozen=True, slots=True)
class Attempted:
    """An attempt made: what came back, its class, and Kisi's ``Retry-After`` in seconds."""

    result: AttemptResult
    outcome: Outcome
    at: float
    retry_after_s: float | None

    def entry(self, delay_s: int | None = None) -> AttemptEntry:
        return AttemptEntry(
            at=self.at, cls=self.outcome.cls.value, status=self.outcome.status, delay_s=delay_s
        )

    @property
    def response(self) -> StoredResponse | None:
        """Kisi's answer, when there was one."""
        if isinstance(self.result, KisiResponse):
            return self.result.stored()
        return None


Turn = Send | Defer | Expire
UNAUTHENTICATED = "unauthenticated"  # Kisi's per-IP bucket, for calls without a credential
LOGIN_TTL_S = 3600.0  # how long GET /login's answer (the credential's Kisi user) is trusted
LOOKUP_RETRY_S = 60.0  # after Kisi could not name the user, the identity's own bucket this long
LOOKUP_WAIT_S = 1.0  # how long a lookup may wait for a slot in the identity's bucket


@dataclass(frozen=True, slots=True)
class Acting:
    """Who an attempt acts as, and the send-budget bucket it books in (its Kisi user's)."""

    who: Who
    bucket: str

    @property
    def identity(self) -> str:
        return self.who.identity


@dataclass
class Sender:
    """Sends attempts for both Lambdas. ``kisi`` is built lazily."""

    kisi_factory: Callable[[], KisiSender]
    budget: SendBudget
    guard: Guard
    telemetry: Telemetry
    clock: Clock
    rng: RandomSource
    directory: Directory | None = None
    known_bad: KnownBadGate | None = None  # remembers Kisi's final refusals (both Lambdas)
    max_gate_s: float = DEFAULT_MAX_GATE_S  # the longest a Retry-After closes the send gate
    _kisi: KisiSender | None = None
    _logins: dict[str, tuple[KisiLogin | None, float]] = field(default_factory=dict)
    _lookups: dict[str, threading.Lock] = field(default_factory=dict)
    _lookups_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def kisi(self) -> KisiSender:
        if self._kisi is None:
            self._kisi = self.kisi_factory()
        return self._kisi

    def acting(self, who: Who) -> Acting:
        """``who`` and its bucket: its Kisi user's (all that user's keys share Kisi's 5 req/s),
        else, while the user is unknown, its own identity's."""
        if who.kind is CredentialKind.NONE:
            return Acting(who, UNAUTHENTICATED)
        login = self.login(who)
        return Acting(who, f"user-{login.user_id}" if login else who.identity)

    def login(self, who: Who) -> KisiLogin | None:
        """What ``GET /login`` says of ``who``'s credential: this process's memory, else the
        directory's, else Kisi (once per identity per hour). ``None`` when it cannot say.

        One lookup per identity at a time in this process: the calls that arrive meanwhile
        wait for its answer instead of each asking Kisi (and each spending the user's quota).
        """
        known = self._known(who.identity)
        if known is not None:
            return known[0]
        with self._lookups_lock:
            lookup = self._lookups.setdefault(who.identity, threading.Lock())
        with lookup:
            known = self._known(who.identity)  # another thread may have asked meanwhile
            if known is not None:
                return known[0]
            return self._look_up(who)

    def _known(self, identity: str) -> tuple[KisiLogin | None] | None:
        found = self._logins.get(identity)
        return (found[0],) if found is not None and found[1] > self.clock.now() else None

    def _look_up(self, who: Who) -> KisiLogin | None:
        now = self.clock.now()
        login = self.directory.login(who.identity, now) if self.directory else None
        answered = login is not None
        if login is None and who.credential is not None:
            answered, login = self._ask_kisi(who)
            if login is not None and self.directory is not None:
                self.directory.remember_login(who.identity, login, now + LOGIN_TTL_S)
        if login is None:
            self.telemetry.user_unknown(who.tenant, who.kind.value)
        if login is not None or answered:  # not sent for want of a slot: ask on the next call
            trust = LOGIN_TTL_S if login else LOOKUP_RETRY_S
            self._logins[who.identity] = (login, self.clock.now() + trust)
        return login

    def _ask_kisi(self, who: Who) -> tuple[bool, KisiLogin | None]:
        """``GET /login``: a request like any other, booked in the identity's own bucket.
        Returns whether it was sent (not when no slot was free), and the login it names."""
        grant = self.budget.acquire(who.identity, "GET /login", self.clock.now(), LOOKUP_WAIT_S)
        if not grant.ok:
            return False, None
        if grant.wait_s > 0:
            self.clock.sleep(grant.wait_s)
        result = self.kisi.send(KisiCall("GET", "/login", credential=who.credential))
        if not isinstance(result, KisiResponse):
            return True, None  # sent, no answer: as good as "cannot say" for a while
        return True, login_of(result.body) if result.status == 200 else None

    def check(self, route: Route, acting: Acting) -> Pause | None:
        """The guard's verdict for ``route`` now (``None``: go ahead); a pause is counted.

        A credential check (sign-in) is never paused: its 401 is an end user's wrong password.
        """
        if route.key in CREDENTIAL_CHECKS:
            return None
        pause = self.guard.check(acting.identity, route.key, self.clock.now())
        if pause is None:  # elected as a half-open probe? the gateway sends its own read
            pause = probe_elected(self, route.key, acting)
        if pause is not None:
            self.telemetry.paused()
        return pause

    def wait_for_turn(
        self, route: Route, acting: Acting, *, deadline: float, window: Window, asks: int,
        check_guard: bool,
    ) -> Turn:
        """Ask the guard and the budget until the decision is not "ask again".

        ``Send`` comes back only once its slot has come and the deadline has not: the caller
        sends at once. Budget waits are measured from when the budget answered, since its
        store calls take time and sleeping the full wait after them would bunch sends up.
        ``check_guard`` is false when the caller has just asked the guard itself.
        """
        asks_left = asks
        while True:
            pause = self.check(route, acting) if check_guard else None
            grant = None
            asked_at = self.clock.now()
            if pause is None:
                booked = self.budget.acquire(
                    acting.bucket, route.key, asked_at, window.booking(asked_at, deadline),
                    Booking(priority=route.policy.priority, holder=acting.identity),
                )
                now = self.clock.now()
                grant = Grant(booked.ok, max(0.0, asked_at + booked.wait_s - now), booked.reason)
            else:
                now = asked_at
            step = before_attempt(
                now=now, deadline=deadline, window=window, pause=pause, grant=grant,
                asks_left=asks_left, fresh=False,
            )
            if isinstance(step, AskAgain):
                asks_left -= 1 if step.counts else 0
                self.clock.sleep(step.after_s)
                continue
            if isinstance(step, Send):
                slot_at = now + step.wait_s
                self.clock.sleep(step.wait_s)
                late = at_send_time(self.clock.now(), deadline, slot_at)
                if isinstance(late, AskAgain):  # woke too late for its slot: book again
                    LOG.info("woke after its send slot: booking again",
                             extra={"route": route.key, "late_s": round(
                                 self.clock.now() - slot_at, 3)})
                    continue
                if late is not None:
                    return late
            assert not isinstance(step, Refuse)  # only a fresh call is refused
            return step

    def attempt(self, route: Route, call: KisiCall, acting: Acting) -> Attempted:
        """Send once, with ``acting``'s credential, and account for what happened."""
        call = replace(call, credential=acting.who.credential)
        result = self.kisi.send(call)
        now = self.clock.now()
        outcome = result.outcome
        retry_after = None
        kisi_code = None
        if isinstance(result, KisiResponse):
            retry_after = parse_retry_after(result.headers.get("retry-after"), now)
            self._note_deprecation(route, result)
            if outcome.bad_request:
                kisi_code = parse_kisi_error(result.body, result.status).code
        who = acting.who
        self.telemetry.attempt(route.key, outcome, kisi_code, who.tenant, who.kind.value)
        if route.key not in CREDENTIAL_CHECKS:  # a wrong password never trips the guard
            self.guard.observe(acting.identity, route.key, outcome, now)
        gate = gate_wait(retry_after, self.max_gate_s)
        if gate != retry_after:
            self.telemetry.gate_capped()
        self.budget.observe(acting.bucket, route.key, outcome, gate, now)
        if self.known_bad is not None:
            self.known_bad.observe(acting.identity, call, result, now)
        LOG.info(
            "kisi attempt",
            extra={
                "route": route.key,
                "tenant": who.tenant,
                "credential": who.kind.value,
                "outcome": outcome.cls.value,
                "status": outcome.status,
                "transport": outcome.transport.value if outcome.transport else None,
            },
        )
        return Attempted(result=result, outcome=outcome, at=now, retry_after_s=retry_after)

    def _note_deprecation(self, route: Route, response: KisiResponse) -> None:
        deprecation = response.headers.get("deprecation")
        sunset = response.headers.get("sunset")
        if (deprecation or sunset) and self.telemetry.deprecated(route.key):
            LOG.warning(
                "Kisi marks this route deprecated",
                extra={"route": route.key, "deprecation": deprecation, "sunset": sunset},
            )


def login_of(body: bytes) -> KisiLogin | None:
    """The Kisi user (and login id) in ``GET /login``'s answer; ``None`` if it has none.

    >>> login_of(b'{"id": 7, "user_id": 42}')
    KisiLogin(user_id=42, login_id=7)
    """
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    user, login = doc.get("user_id"), doc.get("id")
    if isinstance(user, bool) or not isinstance(user, int) or user <= 0:
        return None
    own = login if isinstance(login, int) and not isinstance(login, bool) else None
    return KisiLogin(user, own)
