"""One attempt to reach Kisi, with everything that must happen around it.

Before: the guard (is Kisi going to reject this?) and the send budget (is there a slot?).
After: classification, the outcome metric, the guard's fast path (401 storms), the budget's
adaptive rate (429 and ``Retry-After``), and a note of ``Deprecation``/``Sunset``. Both
Lambdas go through :class:`Sender`, so an attempt is counted the same wherever it happens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kisi_gateway.core.backoff import RandomSource, parse_retry_after
from kisi_gateway.core.errors import parse_kisi_error
from kisi_gateway.core.outcome import Outcome
from kisi_gateway.core.policy import Route
from kisi_gateway.pipeline.kisi_http import AttemptResult, KisiCall, KisiResponse
from kisi_gateway.pipeline.telemetry import Telemetry
from kisi_gateway.stores.budget import Grant, SendBudget
from kisi_gateway.stores.guard import Guard, Pause
from kisi_gateway.stores.records import AttemptEntry, StoredResponse

LOG = logging.getLogger("kisi_gateway")


class Clock(Protocol):
    """Wall-clock time and waiting; tests pass a clock whose ``sleep`` advances ``now``."""

    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


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

    def paused(self, route: Route) -> Pause | None:
        """The guard's verdict for this route now (``None``: go ahead)."""
        return self.guard.check(route.key, self.clock.now())

    def slot(self, route: Route, max_wait_s: float) -> Grant:
        """A send slot from the shared budget, at most ``max_wait_s`` away.

        ``wait_s`` is measured from when this returns: the budget's reads and conditional
        writes take time, and sleeping the budget's ``wait_s`` after them would send late
        and bunch sends up.
        """
        asked_at = self.clock.now()
        grant = self.budget.acquire(route.key, asked_at, max_wait_s)
        slot_at = asked_at + grant.wait_s
        return Grant(grant.ok, max(0.0, slot_at - self.clock.now()), grant.reason)

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
