"""The guard's verdict cache: bounded staleness on an injected clock, no reuse of a probe's
admission, failures forget. The guard behind it is the in-memory one, shared by "Lambdas"."""

from dataclasses import dataclass, field

import pytest

from kisi_gateway.core.breaker import GuardRules, Pause
from kisi_gateway.core.outcome import Outcome, classify_status
from kisi_gateway.stores.guard_cache import CachedGuard
from kisi_gateway.stores.memory import MemoryGuard

ID = "id-0a1b2c3d"
ROUTE = "GET /locks/{id}"
OK = classify_status(200)
UNAUTHORIZED = classify_status(401)
NOW = 1_000.0


@dataclass
class CountingGuard:
    """Wraps a guard and counts its checks: each is a store round trip when deployed."""

    inner: MemoryGuard = field(default_factory=MemoryGuard)
    checks: int = 0

    def check(self, identity: str, route_key: str, now: float) -> Pause | None:
        self.checks += 1
        return self.inner.check(identity, route_key, now)

    def observe(self, identity: str, route_key: str, outcome: Outcome, now: float) -> None:
        self.inner.observe(identity, route_key, outcome, now)


def send(guard: CachedGuard, now: float, outcome: Outcome = OK) -> Pause | None:
    """One send as the pipeline makes it: check, then (if let through) observe Kisi's answer."""
    verdict = guard.check(ID, ROUTE, now)
    if verdict is None:
        guard.observe(ID, ROUTE, outcome, now + 0.05)
    return verdict


def test_a_calm_identity_reads_the_guard_once_per_staleness_bound() -> None:
    counting = CountingGuard()
    guard = CachedGuard(counting, staleness_s=1.0)
    for n in range(20):  # 20 sends in 2 s, 0.1 s apart
        assert send(guard, NOW + n * 0.1) is None
    assert counting.checks == 2  # at NOW and at NOW + 1.0


def test_a_pause_written_by_another_lambda_is_honoured_within_the_bound() -> None:
    shared = MemoryGuard(GuardRules(consecutive_401_threshold=5))
    here = CachedGuard(shared, staleness_s=1.0)
    assert send(here, NOW) is None  # read at NOW, proven by its success
    for n in range(5):  # another Lambda's key goes bad: five 401s trip the identity
        shared.observe(ID, ROUTE, UNAUTHORIZED, NOW + 0.2 + n * 0.01)
    assert shared.check(ID, ROUTE, NOW + 0.3) is not None
    # this Lambda may still send on its cached verdict, but only until the bound is reached
    assert here.check(ID, ROUTE, NOW + 0.99) is None
    paused = here.check(ID, ROUTE, NOW + 1.0)
    assert isinstance(paused, Pause)
    # and a pause is never cached: every check asks the guard again
    assert isinstance(here.check(ID, ROUTE, NOW + 1.01), Pause)


@pytest.mark.parametrize("status", [401, 403, 404, 422, 429, 500, 503])
def test_any_failure_forgets_the_identitys_verdicts(status: int) -> None:
    counting = CountingGuard()
    guard = CachedGuard(counting, staleness_s=1.0)
    send(guard, NOW)
    guard.check(ID, "GET /users", NOW)
    guard.observe(ID, "GET /users", OK, NOW)
    assert counting.checks == 2
    guard.observe(ID, ROUTE, classify_status(status), NOW + 0.1)
    guard.check(ID, ROUTE, NOW + 0.2)
    guard.check(ID, "GET /users", NOW + 0.2)  # a 401 on one route concerns every route
    assert counting.checks == 4


def test_a_let_through_that_has_not_proved_itself_is_not_reused() -> None:
    # The guard also answers "send" to the one request it elects as a half-open probe; until
    # a success comes back, the next request must ask the guard (and be told to wait).
    shared = MemoryGuard(GuardRules(consecutive_401_threshold=1, cooldown_s=10.0))
    guard = CachedGuard(shared, staleness_s=1.0)
    shared.observe(ID, ROUTE, UNAUTHORIZED, NOW)  # trips the identity for 10 s
    assert isinstance(guard.check(ID, ROUTE, NOW + 1), Pause)
    assert guard.check(ID, ROUTE, NOW + 10.5) is None  # the probe
    assert isinstance(guard.check(ID, ROUTE, NOW + 10.6), Pause)  # not the cached probe's pass
    guard.observe(ID, ROUTE, OK, NOW + 10.7)  # the probe succeeds: closed
    assert guard.check(ID, ROUTE, NOW + 10.8) is None


def test_other_identities_are_cached_apart() -> None:
    counting = CountingGuard()
    guard = CachedGuard(counting, staleness_s=1.0)
    send(guard, NOW)
    guard.check("id-other", ROUTE, NOW)
    guard.observe("id-other", ROUTE, UNAUTHORIZED, NOW)
    guard.check(ID, ROUTE, NOW + 0.5)  # unaffected by the other identity's failure
    assert counting.checks == 2


def test_the_cache_is_bounded_and_rejects_nonsense() -> None:
    counting = CountingGuard()
    guard = CachedGuard(counting, staleness_s=1.0, max_entries=2)
    for n in range(3):
        guard.check(f"id-{n}", ROUTE, NOW)
        guard.observe(f"id-{n}", ROUTE, OK, NOW)
    guard.check("id-0", ROUTE, NOW + 0.1)  # the oldest entry went: read again
    guard.check("id-2", ROUTE, NOW + 0.1)
    assert counting.checks == 4
    with pytest.raises(ValueError, match="staleness_s"):
        CachedGuard(counting, staleness_s=-1.0)
    with pytest.raises(ValueError, match="max_entries"):
        CachedGuard(counting, max_entries=0)


def test_a_clock_that_steps_back_reads_again() -> None:
    counting = CountingGuard()
    guard = CachedGuard(counting, staleness_s=1.0)
    send(guard, NOW)
    guard.check(ID, ROUTE, NOW - 5.0)
    assert counting.checks == 2
