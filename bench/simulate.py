"""The virtual-time comparison: four strategies, four scenarios, one seeded run each.

Scenarios (every strategy faces the same requests, arrival times and Kisi):

- ``burst``: 1,000 reads (``GET /locks/{id}``) from 50 concurrent callers, each making its
  next request when the previous one returns. The headline: every request can succeed, so
  the physical limit (1,000 / 5 s⁻¹ = 200 s) is a fair yardstick.
- ``burst_mixed``: the same burst, 70 % reads and 30 % unlocks. An unlock has a 30 s
  deadline; at 5 req/s a 1,000-request queue takes 200 s, so most unlocks *cannot* be sent in
  time by anyone: what matters is who sends them late (a door opening for nobody).
- ``outage``: 2 req/s (Poisson, 70/30 mix) for 20 minutes; Kisi answers 503 to everything
  from minute 5 to minute 15.
- ``revoked_key``: 2 req/s (Poisson, 70/30 mix) for 10 minutes; the key answers 401 from
  minute 2 until it is fixed at minute 8.
- ``random_429``: the burst of 1,000 reads, with Kisi answering 10 % of the requests its
  bucket let through 429 at random: what each strategy achieves against Kisi's 5 req/s.

Kisi sends ``Retry-After`` on its 429s in every run except the ``urllib3_no_ra`` strategy's,
which faces a Kisi that sends none — what Kisi documents (KISI_API.md, "Rate limits").

Callers of the baselines block while their request is retried; the gateway's callers get an
answer or a 202 within their wait (5 s) and the retry queue does the rest. The gateway is the
library's own code (:mod:`bench.gateway`) on a virtual clock (:mod:`bench.vthreads`).
"""

from __future__ import annotations

import contextlib
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from bench.costs import Usage
from bench.engine import Engine, Process
from bench.figures import Figures, compute
from bench.gateway import Gateway, GatewayCounters
from bench.kisi_model import Attempt, VirtualKisi
from bench.strategies import ImmediateRetry, JitterNoBudget, Strategy, Urllib3Retry
from bench.tracking import TrackedCall
from bench.vthreads import VirtualThreads
from kisi_gateway.core.policy import PolicyTable

DEFAULT_SEED = 20_240_601
STRATEGIES = ("immediate", "urllib3", "urllib3_no_ra", "jitter", "gateway")
LABELS = {
    "immediate": "immediate retry",
    "urllib3": "urllib3 Retry, Kisi sends Retry-After: 1",
    "urllib3_no_ra": "urllib3 Retry, no Retry-After (as Kisi documents)",
    "jitter": "full jitter, no budget",
    "gateway": "kisi-gateway",
}
NO_RETRY_AFTER = frozenset({"urllib3_no_ra"})  # runs whose Kisi sends no Retry-After
MAX_EVENTS = 5_000_000
MAX_WALL_S = 300.0  # real seconds for one strategy through one scenario: a hang, not a result
SEEDED_LOCKS = 120  # the simulator's seed data: locks 1..120 exist


@dataclass(frozen=True, slots=True)
class ClosedLoop:
    """``callers`` callers work through ``count`` requests, one at a time each."""

    callers: int
    count: int


@dataclass(frozen=True, slots=True)
class OpenLoop:
    """Requests arrive as a Poisson stream of ``rate_per_s`` for ``duration_s``."""

    rate_per_s: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    load: ClosedLoop | OpenLoop
    unlock_share: float = 0.0
    outage: tuple[float, float] | None = None
    revoked: tuple[float, float] | None = None
    random_429: float = 0.0  # share of Kisi's answers turned into a 429 at random
    horizon_s: float = 3 * 86_400.0  # past the 24 h deadline of a read


BURST = Scenario("burst", "Burst of 1,000 reads, 50 callers", ClosedLoop(50, 1000))
BURST_MIXED = Scenario(
    "burst_mixed", "Burst of 1,000 (70 % reads, 30 % unlocks), 50 callers",
    ClosedLoop(50, 1000), unlock_share=0.3,
)
OUTAGE = Scenario(
    "outage", "2 req/s for 20 min, Kisi 503 from minute 5 to 15",
    OpenLoop(2.0, 1200.0), unlock_share=0.3, outage=(300.0, 900.0),
)
REVOKED = Scenario(
    "revoked_key", "2 req/s for 10 min, key revoked from minute 2 to 8 (401 storm)",
    OpenLoop(2.0, 600.0), unlock_share=0.3, revoked=(120.0, 480.0),
)
RANDOM_429 = Scenario(
    "random_429", "Burst of 1,000 reads, 50 callers, 10 % of Kisi's answers a random 429",
    ClosedLoop(50, 1000), random_429=0.1,
)
SCENARIOS = (BURST, BURST_MIXED, OUTAGE, REVOKED, RANDOM_429)


@dataclass
class Run:
    """One strategy through one scenario: what happened, and its figures."""

    scenario: Scenario
    strategy: str
    calls: list[TrackedCall]
    attempts: list[Attempt]
    figures: Figures
    events: int
    gateway: GatewayCounters | None = None
    gateway_notes: dict[str, float] = field(default_factory=dict)
    gateway_metrics: dict[str, float] = field(default_factory=dict)  # its telemetry, by name
    usage: dict[str, Usage] = field(default_factory=dict)  # resources, by kind of request


def make_calls(
    scenario: Scenario, seed: int, policies: PolicyTable
) -> tuple[list[TrackedCall], list[float] | None]:
    """The scenario's requests (and arrival times for an open loop), the same for everyone."""
    rng = random.Random(f"{seed}:{scenario.name}:load")
    arrivals: list[float] | None = None
    if isinstance(scenario.load, ClosedLoop):
        count = scenario.load.count
    else:
        arrivals = []
        t = rng.expovariate(scenario.load.rate_per_s)
        while t < scenario.load.duration_s:
            arrivals.append(t)
            t += rng.expovariate(scenario.load.rate_per_s)
        count = len(arrivals)
    unlocks = round(count * scenario.unlock_share)
    kinds = [True] * unlocks + [False] * (count - unlocks)
    rng.shuffle(kinds)
    calls = []
    for index, unlock in enumerate(kinds):
        lock = 1 + index % SEEDED_LOCKS
        method, path = ("POST", f"/locks/{lock}/unlock") if unlock else ("GET", f"/locks/{lock}")
        route = policies.resolve(method, path)
        calls.append(TrackedCall(index, method, path, route.key, route.policy.deadline_s))
    return calls, arrivals


def build_strategy(
    name: str,
    engine: Engine,
    kisi: VirtualKisi,
    rng: random.Random,
    policies: PolicyTable,
    threads: VirtualThreads,
) -> Strategy:
    if name == "immediate":
        return ImmediateRetry(engine, kisi)
    if name in ("urllib3", "urllib3_no_ra"):
        return Urllib3Retry(engine, kisi)
    if name == "jitter":
        return JitterNoBudget(engine, kisi, policies, rng)
    if name == "gateway":
        return Gateway(engine, kisi, rng.random, threads)
    raise ValueError(f"unknown strategy {name!r}")


def _closed_loop(
    engine: Engine, strategy: Strategy, calls: list[TrackedCall], callers: int
) -> None:
    pending = deque(calls)

    def caller() -> Process[None]:
        while pending:
            call = pending.popleft()
            call.created = engine.now
            yield from strategy.call(call)

    for _ in range(callers):
        engine.spawn(caller())


def _open_loop(
    engine: Engine, strategy: Strategy, calls: list[TrackedCall], arrivals: Sequence[float]
) -> None:
    def arrive(call: TrackedCall) -> None:
        call.queued_at = call.created = engine.now
        engine.spawn(strategy.call(call))

    for call, at in zip(calls, arrivals, strict=True):
        engine.at(at, partial(arrive, call))


def run(scenario: Scenario, strategy_name: str, seed: int = DEFAULT_SEED) -> Run:
    """Simulate ``strategy_name`` through ``scenario``; deterministic for a seed."""
    policies = PolicyTable.default()
    calls, arrivals = make_calls(scenario, seed, policies)
    engine = Engine()
    kisi = VirtualKisi(engine, rng=random.Random(f"{seed}:{scenario.name}:network"),
                       retry_after=strategy_name not in NO_RETRY_AFTER,
                       random_429=scenario.random_429,
                       dice=random.Random(f"{seed}:{scenario.name}:random_429"))
    if scenario.outage is not None:
        kisi.outage(*scenario.outage)
    if scenario.revoked is not None:
        kisi.revoke_key(*scenario.revoked)
    rng = random.Random(f"{seed}:{scenario.name}:backoff")
    with contextlib.ExitStack() as stack:
        # Leaving releases the threads still parked at the horizon.
        threads = stack.enter_context(VirtualThreads(engine))
        strategy = build_strategy(strategy_name, engine, kisi, rng, policies, threads)
        if isinstance(strategy, Gateway):
            stack.enter_context(strategy.metering())
        if isinstance(scenario.load, ClosedLoop):
            _closed_loop(engine, strategy, calls, scenario.load.callers)
        else:
            assert arrivals is not None
            _open_loop(engine, strategy, calls, arrivals)
        engine.run(until=scenario.horizon_s, max_events=MAX_EVENTS, max_wall_s=MAX_WALL_S)
    result = Run(scenario, strategy_name, calls, kisi.attempts, compute(calls, kisi.attempts),
                 engine.events)
    if isinstance(strategy, Gateway):
        result.gateway = strategy.counters
        result.gateway_notes = strategy.notes()
        result.gateway_metrics = strategy.metric_totals()
        result.usage = strategy.usage()
    return result


def run_all(seed: int = DEFAULT_SEED, scenarios: Sequence[Scenario] = SCENARIOS) -> list[Run]:
    """Every strategy through every scenario."""
    return [run(scenario, name, seed) for scenario in scenarios for name in STRATEGIES]


def main() -> None:
    """``python -m bench.simulate``: print the figures (the full report is ``python -m bench``)."""
    for result in run_all():
        f = result.figures
        print(
            f"{result.scenario.name:12} {result.strategy:10} ok {f.succeeded:5}/{f.requests:<5}"
            f" att/ok {f.attempts_per_success:7.2f} 429 {f.rate_limited:6} "
            f"({f.rate_limited_pct:5.1f}%) span {f.makespan_ratio:5.2f}x lost {f.lost}"
            f" late {f.late_sends} events {result.events}"
        )


if __name__ == "__main__":
    main()
