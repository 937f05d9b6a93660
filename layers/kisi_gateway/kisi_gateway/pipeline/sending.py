"""One attempt to reach Kisi, with everything that must happen around it.

Before: the guard (is Kisi going to reject this?) and the send budget (is there a slot?), put
together by :func:`~kisi_gateway.core.decisions.before_attempt`. After: classification, the
outcome metric, the guard's fast path (401 storms), the budget's adaptive rate (429 and
``Retry-After``), and a note of ``Deprecation``/``Sunset``. Both Lambdas go through
:class:`Sender`, so an attempt is counted the same wherever it happens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from kisi_gateway.core.outcome import Outcome
from kisi_gateway.core.policy import Route
from kisi_gateway.core.ratelimit import Grant
from kisi_gateway.core.records import AttemptEntry, StoredResponse
from kisi_gateway.pipeline.kisi_http import AttemptResult, KisiCall, KisiResponse
from kisi_gateway.pipeline.telemetry import Telemetry
from kisi_gateway.stores.ports import Clock, Guard, SendBudget

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
            return StoredResponse.of(self.result.status, self.result.headers, self.result.body)
        return None


Turn = Send | Defer | Expire


@dataclass
class Sender:
    """Sends attempts for both Lambdas. ``kisi`` is built lazily: the key is a secret."""

    kisi_factory: Callable[[], KisiSender]
    budget: SendBudget
    guard: Guard
    telemetry: Telemetry
    clock: Clock
    rng: RandomSource
    _kisi: KisiSender | None = None

    @property
    def kisi(self) -> KisiSender:
        if self._kisi is None:
            self._kisi = self.kisi_factory()
        return self._kisi

    def check(self, route: Route) -> Pause | None:
        """The guard's verdict for ``route`` now (``None``: go ahead); a pause is counted."""
        pause = self.guard.check(route.key, self.clock.now())
        if pause is not None:
            self.telemetry.paused()
        return pause

    def wait_for_turn(
        self, route: Route, *, deadline: float, window: Window, asks: int, check_guard: bool
    ) -> Turn:
        """Ask the guard and the budget until the decision is not "ask again".

        ``Send`` comes back only once its slot has come and the deadline has not: the caller
        sends at once. Budget waits are measured from when the budget answered, since its
        store calls take time and sleeping the full wait after them would bunch sends up.
        ``check_guard`` is false when the caller has just asked the guard itself.
        """
        asks_left = asks
        while True:
            pause = self.check(route) if check_guard else None
            grant = None
            asked_at = self.clock.now()
            if pause is None:
                booked = self.budget.acquire(
                    route.key, asked_at, window.booking(asked_at, deadline)
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
                asks_left -= 1
                self.clock.sleep(step.after_s)
                continue
            if isinstance(step, Send):
                self.clock.sleep(step.wait_s)
                late = at_send_time(self.clock.now(), deadline)
                if late is not None:
                    return late
            assert not isinstance(step, Refuse)  # only a fresh call is refused
            return step

    def attempt(self, route: Route, call: KisiCall) -> Attempted:
        """Send once and account for what happened."""
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
        self.telemetry.attempt(route.key, outcome, kisi_code)
        self.guard.observe(route.key, outcome, now)
        self.budget.observe(route.key, outcome, retry_after, now)
        LOG.info(
            "kisi attempt",
            extra={
                "route": route.key,
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
