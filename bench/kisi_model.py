"""Kisi in virtual time: the simulator's own core behind a network with seeded latency.

Why the simulator's core (:meth:`kisi_sim.KisiSimulator.handle`, no sockets) rather than
a bucket written here: the real-time run talks to the same code over HTTP, so both runs face
the same Kisi — per-user token bucket of 5 requests per second with a burst of 5, a 429 with
``Retry-After`` in whole seconds rounded up, a 503 outage, 401 for a revoked key. Its clocks
are the engine's virtual clock.

A request leaves the sender at ``t``, reaches Kisi at ``t + rtt/2`` (where the bucket decides)
and the answer is back at ``t + rtt``, ``rtt`` uniform in ``latency_s`` from a seeded source.

Two knobs the scenarios use to state what they assume of Kisi:

- ``retry_after``: whether a 429 carries ``Retry-After`` (the simulator's whole seconds, 1 at
  a 5 req/s bucket). Kisi documents no such header (KISI_API.md, "Rate limits"), so the rows
  that turn it off are the ones that match Kisi's documentation.
- ``random_429``: the share of requests Kisi answers 429 at random, after its bucket has
  counted them (a 429 that has nothing to do with the caller's own rate).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from functools import partial

from bench.engine import Engine, Process, Resume
from bench.tracking import TrackedCall
from kisi_sim import DEMO_KEY, KisiSimulator, SimConfig, SimRequest
from kisi_sim.responses import RATE_LIMIT_BODIES

DEFAULT_LATENCY_S = (0.05, 0.15)  # round trip to api.kisi.io from a Lambda, roughly
RANDOM_429 = RATE_LIMIT_BODIES["text"]  # the simulator's own 429 (plain text body)


@dataclass(frozen=True, slots=True)
class Reply:
    """Kisi's answer as the sender sees it: status, ``Retry-After`` as sent, arrival time, and
    the whole answer (headers with lower-case names, body) for a sender that reads it."""

    status: int
    retry_after: str | None
    at: float
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request Kisi received: whose, when it was sent and answered, and with what."""

    request: int
    sent_at: float
    at_kisi: float
    status: int
    late: bool  # sent after the request's deadline


@dataclass(frozen=True, slots=True)
class _Send:
    kisi: VirtualKisi
    call: TrackedCall

    def begin(self, engine: Engine, resume: Resume) -> None:
        self.kisi.transmit(self.call, resume)


class VirtualKisi:
    """Kisi and the network in front of it, on the engine's clock."""

    def __init__(
        self,
        engine: Engine,
        *,
        rng: random.Random,
        latency_s: tuple[float, float] = DEFAULT_LATENCY_S,
        config: SimConfig | None = None,
        retry_after: bool = True,
        random_429: float = 0.0,
        dice: random.Random | None = None,
    ) -> None:
        self._engine = engine
        self._rng = rng
        self._latency_s = latency_s
        self._random_429 = random_429
        # Random 429s roll their own seeded dice: turning them on leaves the latencies alone.
        self._dice = dice or random.Random(0)
        config = config or SimConfig()
        if not retry_after:
            config = replace(config, faults=replace(config.faults, retry_after=False))
        self.retry_after = config.faults.retry_after
        self.simulator = KisiSimulator(
            config,
            clock=lambda: engine.now,
            wall_clock=lambda: engine.now,
            rng=random.Random(rng.random()),
        )
        self.attempts: list[Attempt] = []
        self._headers = {"authorization": f"KISI-LOGIN {DEMO_KEY}"}

    def request(self, call: TrackedCall) -> Process[Reply]:
        """Send ``call`` once; resumes with Kisi's reply one round trip later."""
        reply = yield _Send(self, call)
        assert isinstance(reply, Reply)
        return reply

    def transmit(self, call: TrackedCall, resume: Resume) -> None:
        """Put ``call`` on the wire now (used by the send command)."""
        sent_at = self._engine.now
        late = sent_at > call.deadline
        call.attempts += 1
        call.late_sends += late
        half = self._rng.uniform(*self._latency_s) / 2
        self._engine.after(half, lambda: self._arrive(call, sent_at, late, half, resume))

    def _arrive(
        self, call: TrackedCall, sent_at: float, late: bool, half: float, resume: Resume
    ) -> None:
        answer = self.simulator.handle(
            SimRequest(method=call.method, path=call.path, headers=self._headers)
        )
        if self._random_429 and answer.status < 400 and self._dice.random() < self._random_429:
            answer = RANDOM_429.with_headers(
                [("Retry-After", "1")] if self.retry_after else [])
        retry_after = next(
            (value for name, value in answer.headers if name.lower() == "retry-after"), None
        )
        now = self._engine.now
        self.attempts.append(Attempt(call.index, sent_at, now, answer.status, late))
        headers = tuple((name.lower(), value) for name, value in answer.headers)
        reply = Reply(answer.status, retry_after, now + half, headers, answer.body)
        self._engine.after(half, lambda: resume(reply))

    # -- faults, on the virtual clock --------------------------------------------------------

    def outage(self, start: float, end: float) -> None:
        """Every call answers 503 from ``start`` to ``end`` (virtual seconds)."""
        self._engine.at(start, partial(self._set_faults, {"outage_until": end}))

    def revoke_key(self, start: float, end: float) -> None:
        """The key answers 401 from ``start`` until it is fixed at ``end``."""
        self._engine.at(start, partial(self._set_faults, {"revoked_keys": [DEMO_KEY]}))
        self._engine.at(end, partial(self._set_faults, {"revoked_keys": []}))

    def _set_faults(self, changes: dict[str, object]) -> None:
        self.simulator.update_faults(changes)
