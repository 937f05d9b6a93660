"""Send budget: GCRA slot arithmetic, shares of the line, throttling and the in-memory budget,
on a fake clock.

Slot times are what Kisi would see, so every rate assertion is made on reserved slots
(``now + wait_s``), never on wall time.
"""

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kisi_gateway.core.outcome import Transport, classify_status, classify_transport
from kisi_gateway.core.ratelimit import (
    ANYONE,
    Booking,
    BucketState,
    BudgetLimits,
    Grant,
    after_throttle,
    bucket_id_for_key,
    earliest_slot,
    plan_acquire,
)
from kisi_gateway.stores.memory import MemorySendBudget
from kisi_gateway.stores.ports import SendBudget

BUCKET = "user-1"  # one Kisi user's bucket

EPS = 1e-9
GET = "GET /locks"
EVENTS = "POST /event_sets"
UPLOADS = "POST /signed_upload_urls"
KISI_ROUTES = {EVENTS: 1.0, UPLOADS: 0.1}
OK = classify_status(200)
THROTTLED = classify_status(429)


def slots_of(budget: SendBudget, route_key: str, times: list[float], max_wait_s: float
             ) -> list[float]:
    """The slots granted to callers arriving at ``times`` (refused callers are left out)."""
    slots = []
    for now in times:
        grant = budget.acquire(BUCKET, route_key, now, max_wait_s)
        if grant.ok:
            slots.append(now + grant.wait_s)
    return slots


def poll(budget: SendBudget, route_key: str, now: float) -> float:
    """A caller that never waits inline: it comes back when told, until it gets a slot now."""
    while True:
        grant = budget.acquire(BUCKET, route_key, now, 0.0)
        if grant.ok:
            return now + grant.wait_s
        now += grant.wait_s


def assert_spaced(slots: list[float], rate: float, burst: float = 1.0) -> None:
    """GCRA's guarantee: any ``m`` requests after one span at least ``(m - burst + 1) / rate``."""
    ordered = sorted(slots)
    for i, first in enumerate(ordered):
        for m, later in enumerate(ordered[i + 1:], start=1):
            assert later - first >= (m - burst + 1) / rate - EPS, (i, m)


def assert_at_most_per_second(slots: list[float], rate: float) -> None:
    """No window of one second holds more than ``rate`` slots."""
    ordered = sorted(slots)
    per_window = math.floor(rate + EPS)
    for i in range(len(ordered) - per_window):
        assert ordered[i + per_window] - ordered[i] >= 1.0 - EPS, ordered[i: i + per_window + 1]


# --- pure arithmetic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tat", "now", "burst", "slot"),
    [
        (0.0, 10.0, 1.0, 10.0),  # idle bucket: now
        (10.0, 10.0, 1.0, 10.0),  # due exactly now
        (10.4, 10.0, 1.0, 10.4),  # two slots booked ahead: wait for the line
        (10.4, 10.0, 3.0, 10.0),  # a burst of 3 tolerates two intervals ahead
        (10.6, 10.0, 3.0, 10.2),  # ... but not three
        (10.4, 12.0, 1.0, 12.0),  # the line emptied long ago
    ],
)
def test_earliest_slot(tat: float, now: float, burst: float, slot: float) -> None:
    state = BucketState(rate=5.0, tat=tat)
    assert earliest_slot(state, now, 0.2, burst) == pytest.approx(slot)


ACCOUNT_IDLE = BucketState(rate=5.0)


@pytest.mark.parametrize(
    ("account", "route", "max_wait_s", "grant", "account_tat", "route_tat"),
    [
        # account only
        (ACCOUNT_IDLE, None, 0.0, Grant(True, 0.0), 10.2, None),
        (BucketState(5.0, tat=10.4), None, 0.0, Grant(False, 0.4, "rate"), None, None),
        (BucketState(5.0, tat=10.4), None, 0.4, Grant(True, 0.4), 10.6, None),
        (BucketState(5.0, tat=10.4), None, 0.39, Grant(False, 0.4, "rate"), None, None),
        # a closed gate refuses however long the caller would wait, and books nothing
        (BucketState(5.0, gate_until=13.0), None, 60.0, Grant(False, 3.0, "gate"), None, None),
        (BucketState(5.0, gate_until=10.0), None, 0.0, Grant(True, 0.0), 10.2, None),
        # a route with its own rate: one slot, the later one, in both buckets
        (ACCOUNT_IDLE, BucketState(1.0), 0.0, Grant(True, 0.0), 10.2, 11.0),
        (BucketState(5.0, tat=10.2), BucketState(1.0, tat=10.0), 0.2,
         Grant(True, 0.2), 10.4, 11.2),
        (BucketState(5.0, tat=11.0), BucketState(1.0, tat=10.0), 1.0,
         Grant(True, 1.0), 11.2, 12.0),  # the account's line is longer: the route waits too
        # the route's line is longer: the account may be held one account interval, no more
        (ACCOUNT_IDLE, BucketState(1.0, tat=10.2), 1.0, Grant(True, 0.2), 10.4, 11.2),
        (ACCOUNT_IDLE, BucketState(1.0, tat=10.5), 1.0, Grant(False, 0.5, "rate"), None, None),
        (ACCOUNT_IDLE, BucketState(1.0, gate_until=12.0), 5.0,
         Grant(False, 2.0, "gate"), None, None),
    ],
)
def test_plan_acquire(
    account: BucketState,
    route: BucketState | None,
    max_wait_s: float,
    grant: Grant,
    account_tat: float | None,
    route_tat: float | None,
) -> None:
    plan = plan_acquire(BudgetLimits(), account, route, now=10.0, max_wait_s=max_wait_s,
                        route_rate=route.rate if route is not None else None)
    assert plan.grant.ok is grant.ok
    assert plan.grant.wait_s == pytest.approx(grant.wait_s)
    assert plan.grant.reason == grant.reason
    assert (plan.account.tat if plan.account else None) == pytest.approx(account_tat)
    assert (plan.route.tat if plan.route else None) == pytest.approx(route_tat)


UNLOCK_BOOKING = Booking(priority=True)
PRESSED = BucketState(5.0, tat=13.0, pressed_until=12.0)  # at 10.0: unlocks are waiting


@pytest.mark.parametrize(
    ("account", "booking", "max_wait_s", "grant", "tat", "pressed_until"),
    [
        # under pressure, a read takes no slot beyond the next one; it is told where the line
        # ends, and nothing is written
        (PRESSED, ANYONE, 25.0, Grant(False, 3.0, "rate"), None, None),
        (BucketState(5.0, tat=10.21, pressed_until=12.0), ANYONE, 25.0,
         Grant(False, 0.21, "rate"), None, None),
        # ... but a slot about to pass unused (one interval away at most) is its
        (BucketState(5.0, tat=10.2, pressed_until=12.0), ANYONE, 25.0, Grant(True, 0.2), 10.4,
         12.0),
        (BucketState(5.0, tat=9.0, pressed_until=12.0), ANYONE, 25.0, Grant(True, 0.0), 10.2,
         12.0),
        # an unlock takes the end of the line; its long wait keeps the pressure on
        (PRESSED, UNLOCK_BOOKING, 5.0, Grant(True, 3.0), 13.2, 12.0),
        (BucketState(5.0, tat=13.0, pressed_until=10.5), UNLOCK_BOOKING, 5.0, Grant(True, 3.0),
         13.2, 12.0),
        # one served within priority_wait_s changes nothing
        (BucketState(5.0, tat=10.4, pressed_until=10.5), UNLOCK_BOOKING, 5.0, Grant(True, 0.4),
         10.6, 10.5),
        # pressure over: reads book ahead again
        (BucketState(5.0, tat=13.0, pressed_until=10.0), ANYONE, 25.0, Grant(True, 3.0), 13.2,
         10.0),
        # a refused unlock starts the pressure: until it is back, and pressure_s (2 s) more
        (BucketState(5.0, tat=16.0), UNLOCK_BOOKING, 5.0, Grant(False, 6.0, "rate"), 16.0,
         18.0),
        (BucketState(5.0, tat=16.0, pressed_until=17.9), UNLOCK_BOOKING, 5.0,
         Grant(False, 6.0, "rate"), None, None),  # less than a slot longer: nothing written
        (BucketState(5.0, tat=16.0, pressed_until=17.7), UNLOCK_BOOKING, 5.0,
         Grant(False, 6.0, "rate"), 16.0, 18.0),
        # a refused read starts none
        (BucketState(5.0, tat=16.0), ANYONE, 5.0, Grant(False, 6.0, "rate"), None, None),
    ],
)
def test_plan_acquire_under_pressure(
    account: BucketState, booking: Booking, max_wait_s: float, grant: Grant,
    tat: float | None, pressed_until: float | None,
) -> None:
    plan = plan_acquire(BudgetLimits(pressure_s=2.0), account, now=10.0,
                        max_wait_s=max_wait_s, booking=booking)
    assert plan.grant.ok is grant.ok
    assert plan.grant.wait_s == pytest.approx(grant.wait_s)
    assert plan.grant.reason == grant.reason
    assert (plan.account.tat if plan.account else None) == pytest.approx(tat)
    assert (plan.account.pressed_until if plan.account else None) == pytest.approx(
        pressed_until)


def test_an_unlock_refused_for_its_share_starts_the_pressure_too() -> None:
    held = BucketState(5.0, tat=15.0, held=(("door-app", 15.0),))
    plan = plan_acquire(BudgetLimits(share_s=5.0, pressure_s=2.0), held, now=10.0,
                        max_wait_s=30.0, booking=Booking(priority=True, holder="door-app"))
    assert (plan.grant.ok, plan.grant.reason) == (False, "share")
    assert plan.account is not None
    assert plan.account.pressed_until == pytest.approx(10.0 + plan.grant.wait_s + 2.0)
    assert plan.account.tat == 15.0  # nothing booked


@pytest.mark.parametrize(
    ("retry_after_s", "close_gate", "gate_until"),
    [(None, True, 0.0), (3.0, True, 13.0), (3.0, False, 0.0), (0.0, True, 0.0)],
)
def test_a_confirmed_overload_slows_the_line_and_may_close_the_gate(
    retry_after_s: float | None, close_gate: bool, gate_until: float
) -> None:
    limits = BudgetLimits()
    state = BucketState(rate=5.0, tat=9.8)
    for now in (9.8, 9.9):
        state = after_throttle(state, 5.0, limits, now=now, retry_after_s=retry_after_s,
                               close_gate=close_gate)
    assert (state.rate, state.tat, state.gate_until, state.strikes) == (5.0, 9.8, 0.0, 2)
    state = after_throttle(state, 5.0, limits, now=10.0, retry_after_s=retry_after_s,
                           close_gate=close_gate)
    assert state == BucketState(rate=3.5, tat=pytest.approx(10.0 + 1 / 3.5),
                                gate_until=gate_until, lowered_at=10.0, updated_at=10.0,
                                peak=5.0)


def test_after_throttle_keeps_slots_already_granted_and_a_later_gate() -> None:
    state = BucketState(rate=5.0, tat=15.0, gate_until=30.0, strikes=2, struck_at=9.9)
    after = after_throttle(state, 5.0, BudgetLimits(), now=10.0, retry_after_s=3.0,
                           close_gate=True)
    assert after.rate == 3.5
    assert (after.tat, after.gate_until) == (15.0, 30.0)


def test_a_429_while_the_line_is_idle_is_not_ours() -> None:
    idle = BucketState(rate=5.0, tat=5.0)  # nothing booked for five seconds
    state = idle
    for now in (10.0, 10.1, 10.2):
        state = after_throttle(state, 5.0, BudgetLimits(), now=now, retry_after_s=1.0,
                               close_gate=True)
    assert (state.rate, state.gate_until, state.tat) == (5.0, 0.0, 5.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": 0.0}, {"rate": -1.0}, {"rate": math.inf}, {"burst": 0.5},
     {"route_rates": {EVENTS: 0.0}}, {"pace": 0.0}, {"pace": 1.5}, {"share_s": 0.0}],
)
def test_limits_reject_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        BudgetLimits(**kwargs)  # type: ignore[arg-type]


def test_bucket_id_is_a_hash_that_never_reveals_the_key() -> None:
    key = "kisi-secret-api-key-1234"
    bucket = bucket_id_for_key(key)
    assert bucket == bucket_id_for_key(key)
    assert bucket != bucket_id_for_key(key + "x")
    assert key not in bucket
    assert bucket.startswith("key-")
    assert len(bucket) == 4 + 32
    assert "#" not in bucket
    with pytest.raises(ValueError, match="empty"):
        bucket_id_for_key("")


# --- the in-memory budget -------------------------------------------------------------------


@pytest.mark.parametrize("burst", [1.0, 3.0])
def test_thousand_patient_callers_take_two_hundred_seconds(burst: float) -> None:
    budget = MemorySendBudget(rate=5.0, burst=burst)
    slots = slots_of(budget, GET, [0.0] * 1000, max_wait_s=math.inf)
    assert len(slots) == 1000
    assert slots == sorted(slots)
    # the first `burst` go at once, then one every 0.2 s: 1,000 requests need 200 s,
    # less at most `burst` intervals early
    assert slots[: int(burst)] == [0.0] * int(burst)
    assert slots[-1] == pytest.approx((1000 - burst) / 5.0)
    assert_spaced(slots, 5.0, burst)


def test_thousand_polling_callers_take_two_hundred_seconds() -> None:
    budget = MemorySendBudget(rate=5.0)
    now, slots = 0.0, []
    for _ in range(1000):
        slot = poll(budget, GET, now)
        slots.append(slot)
        now = slot
    assert slots[-1] == pytest.approx(199.8)
    assert_at_most_per_second(slots, 5.0)


def test_max_wait_decides_between_a_reservation_and_a_refusal() -> None:
    budget = MemorySendBudget(rate=5.0)
    assert budget.acquire(BUCKET, GET, 0.0) == Grant(True, 0.0)
    refused = budget.acquire(BUCKET, GET, 0.0)
    assert (refused.ok, refused.reason) == (False, "rate")
    assert refused.wait_s == pytest.approx(0.2)
    assert budget.acquire(BUCKET, GET, 0.0, max_wait_s=0.19) == refused  # still nothing reserved
    reserved = budget.acquire(BUCKET, GET, 0.0, max_wait_s=0.2)
    assert reserved.ok
    assert reserved.wait_s == pytest.approx(0.2)
    assert budget.acquire(BUCKET, GET, 0.0, max_wait_s=1.0).wait_s == pytest.approx(0.4)


def test_route_override_one_per_second() -> None:
    budget = MemorySendBudget(rate=5.0, route_rates=KISI_ROUTES)
    events = [poll(budget, EVENTS, 0.0) for _ in range(10)]
    assert events == pytest.approx([float(k) for k in range(10)])
    budget = MemorySendBudget(rate=5.0, route_rates=KISI_ROUTES)
    uploads = [poll(budget, UPLOADS, 0.0) for _ in range(3)]
    assert uploads == pytest.approx([0.0, 10.0, 20.0])


def test_route_override_shares_the_account_with_other_routes() -> None:
    budget = MemorySendBudget(rate=5.0, route_rates=KISI_ROUTES)
    granted: dict[str, list[float]] = {GET: [], EVENTS: []}
    # each second: three reads and two event sets, every caller willing to wait a second
    second = [(0.0, GET), (0.1, EVENTS), (0.3, GET), (0.5, EVENTS), (0.6, GET)]
    for t in range(10):
        for offset, route in second:
            now = t + offset
            grant = budget.acquire(BUCKET, route, now, max_wait_s=1.0)
            if grant.ok:
                granted[route].append(now + grant.wait_s)
    assert len(granted[GET]) == 30  # reads all go: the account has room for them
    assert len(granted[EVENTS]) == 10  # one event set a second, as Kisi allows
    assert_spaced(granted[EVENTS], 1.0)
    assert_spaced(granted[GET] + granted[EVENTS], 5.0)


def test_a_slow_route_never_holds_the_account_for_long() -> None:
    budget = MemorySendBudget(rate=5.0, route_rates=KISI_ROUTES)
    assert budget.acquire(BUCKET, UPLOADS, 0.0).ok
    refused = budget.acquire(BUCKET, UPLOADS, 0.0, max_wait_s=60.0)  # its slot is 10 s away
    assert (refused.ok, refused.reason, refused.wait_s) == (False, "rate", 10.0)
    assert budget.acquire(BUCKET, GET, 0.2) == Grant(True, 0.0)  # unlocks and reads carry on


def test_eight_threads_never_exceed_the_rate() -> None:
    budget = MemorySendBudget(rate=5.0)
    slots: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def caller(index: int) -> None:
        start.wait()
        for n in range(50):
            now = 1000.0 + n * 0.1 + index * 0.01  # each thread's own clock, interleaved
            slot = now + (grant := budget.acquire(BUCKET, GET, now, max_wait_s=math.inf)).wait_s
            assert grant.ok
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(slots) == 400
    assert len(set(slots)) == 400
    assert_at_most_per_second(slots, 5.0)
    assert_spaced(slots, 5.0)
    # every caller was willing to wait, so the line never broke: 400 slots back to back
    assert max(slots) - min(slots) == pytest.approx(399 * 0.2)


def overload(budget: MemorySendBudget, route_key: str, retry_after_s: float | None,
             now: float) -> None:
    """Kisi's bucket is empty: three requests in a row come back 429 while the line is busy."""
    budget.acquire(BUCKET, route_key, now - 0.3, max_wait_s=math.inf)
    for before in (0.2, 0.1, 0.0):
        budget.observe(BUCKET, route_key, THROTTLED, retry_after_s, now=now - before)


def test_an_overload_slows_the_bucket_and_time_restores_it() -> None:
    budget = MemorySendBudget(rate=5.0)
    overload(budget, GET, None, now=10.0)
    assert budget.state(BUCKET).rate == 3.5
    # given the overload, when callers line up, then they are spaced 1/3.5 s at first
    slots = slots_of(budget, GET, [10.0] * 3, max_wait_s=math.inf)
    assert slots[1] - slots[0] == pytest.approx(1 / 3.5)
    # no success needs to be written: CUBIC's curve is back at 5/s within two seconds
    assert slots_of(budget, GET, [20.0] * 3, max_wait_s=math.inf) == pytest.approx(
        [20.0, 20.2, 20.4]
    )


def test_isolated_429s_do_not_halve_the_rate() -> None:
    budget = MemorySendBudget(rate=5.0)
    for second in range(10, 20, 2):  # one 429 every other second, each after a booking
        budget.acquire(BUCKET, GET, second, max_wait_s=math.inf)
        budget.observe(BUCKET, GET, THROTTLED, 1.0, now=second + 0.05)
    state = budget.state(BUCKET)
    assert (state.rate, state.lowered_at, state.gate_until) == (5.0, None, 0.0)
    assert budget.acquire(BUCKET, GET, 20.0) == Grant(True, 0.0)


def test_retry_after_closes_the_gate_for_every_caller() -> None:
    budget = MemorySendBudget(rate=5.0)
    reserved = budget.acquire(BUCKET, GET, 10.0, max_wait_s=5.0)
    overload(budget, GET, 30.0, now=10.0)
    for now, route in ((10.0, GET), (25.0, "DELETE /users/{id}"), (39.9, GET)):
        grant = budget.acquire(BUCKET, route, now, max_wait_s=3600.0)
        assert (grant.ok, grant.reason) == (False, "gate")
        assert grant.wait_s == pytest.approx(40.0 - now)
    # A slot granted before the 429 stands: the line still holds it, so the next slot after
    # the gate is not earlier than one interval past it.
    assert reserved == Grant(True, 0.0)
    assert budget.state(BUCKET).tat >= 10.0 + 1 / 5.0
    assert budget.acquire(BUCKET, GET, 40.0) == Grant(True, 0.0)


def test_retry_after_on_a_limited_route_closes_that_route_only() -> None:
    budget = MemorySendBudget(rate=5.0, route_rates=KISI_ROUTES)
    overload(budget, EVENTS, 10.0, now=100.0)
    assert budget.acquire(BUCKET, EVENTS, 101.0, max_wait_s=30.0).reason == "gate"
    assert budget.acquire(BUCKET, GET, 101.0).ok
    assert budget.state(BUCKET, EVENTS).rate == pytest.approx(0.7)
    assert budget.state(BUCKET).rate == 3.5  # we cannot tell which limit Kisi applied: both slow


@pytest.mark.parametrize(
    "outcome",
    [classify_status(200), classify_status(404), classify_status(401), classify_status(503),
     classify_status(302),
     classify_transport(Transport.READ_TIMEOUT)],
)
def test_other_outcomes_leave_the_rate(outcome: object) -> None:
    budget = MemorySendBudget(rate=5.0)
    overload(budget, GET, None, now=1.0)
    before = budget.state(BUCKET)
    budget.observe(BUCKET, GET, outcome, 60.0, now=5.0)  # type: ignore[arg-type]
    assert budget.state(BUCKET) == before


def test_state_of_an_unknown_route_bucket_is_an_error() -> None:
    with pytest.raises(KeyError):
        MemorySendBudget().state(BUCKET, GET)


# --- properties -----------------------------------------------------------------------------

times = st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=60)
waits = st.sampled_from([0.0, 0.1, 0.5, 2.0, math.inf])


@settings(max_examples=150, deadline=None)
@given(arrivals=times, max_wait_s=waits,
       rate=st.sampled_from([0.1, 1.0, 2.5, 5.0, 10.0]),
       burst=st.sampled_from([1.0, 2.0, 5.0]))
def test_granted_slots_are_spaced_by_the_rate(
    arrivals: list[float], max_wait_s: float, rate: float, burst: float
) -> None:
    budget = MemorySendBudget(rate=rate, burst=burst)
    # arrival times in any order: Lambdas' clocks disagree a little
    slots = slots_of(budget, GET, arrivals, max_wait_s)
    assert slots  # the first caller always gets a slot
    assert_spaced(slots, rate, burst)


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(st.tuples(st.floats(0.0, 30.0), st.sampled_from([GET, EVENTS, UPLOADS]),
                                waits), min_size=1, max_size=60))
def test_route_and_account_spacing_hold_together(
    calls: list[tuple[float, str, float]]
) -> None:
    budget = MemorySendBudget(rate=5.0, route_rates=KISI_ROUTES)
    by_route: dict[str, list[float]] = {GET: [], EVENTS: [], UPLOADS: []}
    for now, route, max_wait_s in sorted(calls):
        grant = budget.acquire(BUCKET, route, now, max_wait_s)
        if grant.ok:
            assert grant.wait_s <= max_wait_s + 1e-6
            by_route[route].append(now + grant.wait_s)
    assert_spaced(by_route[GET] + by_route[EVENTS] + by_route[UPLOADS], 5.0)
    assert_spaced(by_route[EVENTS], 1.0)
    assert_spaced(by_route[UPLOADS], 0.1)
