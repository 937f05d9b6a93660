"""How the send budget's line is shared: callers answered within their wait, unlocks ahead of a
burst of reads, and no identity taking the whole line. In-memory budget, virtual time: every
assertion is on granted slots (``now + wait_s``), never on wall time.
"""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kisi_gateway.core.ratelimit import Booking, BudgetLimits
from kisi_gateway.stores.memory import MemorySendBudget

BUCKET = "user-1"
READ = "GET /locks/{id}"
UNLOCK = "POST /locks/{id}/unlock"
EPS = 1e-6


def unlock(holder: str = "door-app") -> Booking:
    return Booking(priority=True, holder=holder)


def read(holder: str) -> Booking:
    return Booking(priority=False, holder=holder)


def assert_spaced(slots: list[float], rate: float) -> None:
    """Any ``m`` slots after one span at least ``m / rate``: Kisi sees evenly spaced requests."""
    ordered = sorted(slots)
    for i, first in enumerate(ordered):
        for m, later in enumerate(ordered[i + 1:], start=1):
            assert later - first >= m / rate - EPS, (i, m)


def test_a_caller_is_answered_whenever_its_slot_falls_within_its_wait() -> None:
    # given 30 readers arriving together, each willing to wait 5 s
    budget = MemorySendBudget(rate=5.0)
    grants = [budget.acquire(BUCKET, READ, 0.0, 5.0, read(f"id-{n}")) for n in range(30)]
    # then everyone whose slot is within 5 s books it (not only the first second's worth)
    assert [g.ok for g in grants] == [True] * 26 + [False] * 4
    assert [g.wait_s for g in grants[:26]] == pytest.approx([0.2 * k for k in range(26)])
    assert all(g.reason == "rate" for g in grants[26:])


def test_unlocks_get_a_slot_within_a_second_in_a_burst_of_reads() -> None:
    budget = MemorySendBudget(rate=5.0)
    assert budget.acquire(BUCKET, UNLOCK, 0.0, 5.0, unlock()).ok  # unlocks are in use here
    reads: list[float] = []
    unlocks: list[float] = []
    # a burst: 60 reads from three identities at t=1, each will wait up to 20 s ...
    for n in range(60):
        grant = budget.acquire(BUCKET, READ, 1.0, 20.0, read(f"id-{n % 3}"))
        if grant.ok:
            reads.append(1.0 + grant.wait_s)
    assert len(reads) >= 40
    # ... then one unlock a second while the reads are still queued
    for k in range(10):
        now = 1.3 + k
        grant = budget.acquire(BUCKET, UNLOCK, now, 30.0, unlock())
        assert grant.ok
        assert grant.wait_s <= 1.0 + EPS, (k, grant)
        unlocks.append(now + grant.wait_s)
    assert_spaced(reads + unlocks + [0.0], 5.0)


def test_once_an_unlock_is_refused_reads_keep_off_the_line_ahead() -> None:
    budget = MemorySendBudget(rate=5.0)
    for n in range(40):  # no unlock seen yet: 8 s of reads, no slot left free
        budget.acquire(BUCKET, READ, 0.0, 25.0, read(f"id-{n % 4}"))
    refused = budget.acquire(BUCKET, UNLOCK, 0.5, 5.0, unlock())
    assert (refused.ok, refused.reason) == (False, "rate")
    assert refused.wait_s == pytest.approx(7.5)
    # reads that come after it book nothing ahead; they are told when the line ends
    later = budget.acquire(BUCKET, READ, 0.6, 25.0, read("id-4"))
    assert (later.ok, later.reason) == (False, "rate")
    assert later.wait_s == pytest.approx(7.4)
    assert budget.state(BUCKET).tat == pytest.approx(8.0)
    # so the unlock, back when the slot is within its wait, gets the end of the line
    grant = budget.acquire(BUCKET, UNLOCK, 3.0, 5.0, unlock())
    assert grant.ok
    assert grant.wait_s == pytest.approx(5.0)


def test_while_unlocks_wait_they_get_every_slot_reads_do_not_need() -> None:
    budget = MemorySendBudget(rate=5.0)
    for n in range(40):  # a burst of reads booked 8 s ahead, before any unlock was seen
        budget.acquire(BUCKET, READ, 0.0, 25.0, read(f"id-{n % 4}"))
    assert not budget.acquire(BUCKET, UNLOCK, 0.5, 5.0, unlock()).ok  # pressure from here
    slots: list[float] = [0.2 * k for k in range(40)]
    unlock_waits: list[float] = []
    # then, while the pressure lasts (to 10 s: the unlock's return, then pressure_s), reads
    # keep coming, ten a second, and a wave of unlocks, two a second
    for step in range(6, 100):
        now = step / 10
        if step >= 70 and step % 5 == 0:
            grant = budget.acquire(BUCKET, UNLOCK, now, 5.0, unlock())
            assert grant.ok, now
            unlock_waits.append(grant.wait_s)
        else:
            grant = budget.acquire(BUCKET, READ, now, 25.0, read(f"id-{step % 4}"))
        if grant.ok:
            slots.append(now + grant.wait_s)
    assert max(unlock_waits) <= 1.0 + EPS  # each unlock within priority_wait_s
    assert_spaced(slots, 5.0)
    # and no slot went unused: reads took every one the unlocks left (8 s to 10 s: 10 slots)
    assert sum(1 for slot in slots if 8.0 - EPS <= slot < 10.0 - EPS) == 10


def test_reads_book_ahead_again_once_unlocks_are_served_in_time() -> None:
    limits = BudgetLimits(rate=5.0, pressure_s=2.0)
    budget = MemorySendBudget(limits=limits)
    for n in range(40):
        budget.acquire(BUCKET, READ, 0.0, 25.0, read(f"id-{n % 4}"))
    assert not budget.acquire(BUCKET, UNLOCK, 0.5, 5.0, unlock()).ok
    pressed_until = budget.state(BUCKET).pressed_until
    assert pressed_until == pytest.approx(0.5 + 7.5 + 2.0)  # its return, then pressure_s
    assert not budget.acquire(BUCKET, READ, 1.0, 25.0, read("id-1")).ok
    # pressure over: a read books as far ahead as it may wait, past free slots kept for unlocks
    waits = [budget.acquire(BUCKET, READ, pressed_until, 25.0, read("id-1")).wait_s
             for _ in range(10)]
    assert waits[0] == pytest.approx(0.0)
    assert max(waits) > 1.0


def test_fair_shares_hold_for_unlocks_under_pressure() -> None:
    budget = MemorySendBudget(limits=BudgetLimits(rate=5.0, share_s=5.0))
    for n in range(40):
        budget.acquire(BUCKET, READ, 0.0, 25.0, read(f"id-{n % 4}"))
    # a flood of unlocks from one identity under pressure: five seconds of the line at most
    flood = [budget.acquire(BUCKET, UNLOCK, 8.0, 30.0, unlock("flood")) for _ in range(40)]
    assert sum(g.ok for g in flood) == 25
    assert flood[25].reason == "share"
    # another identity's unlock still gets the slot after the flood's share
    other = budget.acquire(BUCKET, UNLOCK, 8.0, 30.0, unlock("door-app"))
    assert other.ok
    assert other.wait_s == pytest.approx(5.0)


def test_without_unlocks_reads_get_the_whole_line() -> None:
    budget = MemorySendBudget(rate=5.0)
    slots = [budget.acquire(BUCKET, READ, 0.0, 25.0, read("id")).wait_s for _ in range(25)]
    assert slots == pytest.approx([0.2 * k for k in range(25)])  # no slot left empty


def test_a_free_slot_about_to_pass_goes_to_whoever_asks() -> None:
    budget = MemorySendBudget(rate=5.0)
    budget.acquire(BUCKET, UNLOCK, 0.0, 5.0, unlock())
    waits = [budget.acquire(BUCKET, READ, 0.0, 25.0, read("id")).wait_s for _ in range(10)]
    kept = budget.state(BUCKET).holes
    assert kept  # the reads left slots free for unlocks
    # nobody took the first free slot; one interval before it passes, a read may have it
    hole = kept[0]
    assert hole not in waits
    grant = budget.acquire(BUCKET, READ, hole - 0.1, 25.0, read("late"))
    assert grant.ok
    assert grant.wait_s == pytest.approx(0.1)
    assert hole not in budget.state(BUCKET).holes


def test_one_identity_cannot_take_the_whole_line() -> None:
    limits = BudgetLimits(rate=5.0, share_s=5.0)
    budget = MemorySendBudget(limits=limits)
    greedy = [budget.acquire(BUCKET, READ, 0.0, math.inf, read("greedy")) for _ in range(100)]
    granted = [g for g in greedy if g.ok]
    assert len(granted) == 25  # five seconds of the line, not twenty
    refused = greedy[25]
    assert (refused.ok, refused.reason) == (False, "share")
    assert refused.wait_s == pytest.approx(0.2)  # its next slot frees in one interval
    # another identity arriving now is served right after the greedy one's share
    other = budget.acquire(BUCKET, READ, 0.0, 25.0, read("other"))
    assert other.ok
    assert other.wait_s == pytest.approx(5.0)
    # the greedy identity books again once some of its slots have passed
    assert budget.acquire(BUCKET, READ, 1.0, math.inf, read("greedy")).ok


def test_fair_share_refusal_makes_an_inline_caller_ask_again_not_defer() -> None:
    from kisi_gateway.core.decisions import AskAgain, Window, before_attempt  # noqa: PLC0415

    budget = MemorySendBudget(rate=5.0)
    for _ in range(25):
        budget.acquire(BUCKET, READ, 0.0, 25.0, read("greedy"))
    grant = budget.acquire(BUCKET, READ, 0.0, 25.0, read("greedy"))
    step = before_attempt(now=0.0, deadline=100.0, window=Window(25.0, 25.0), pause=None,
                          grant=grant, asks_left=3, fresh=True)
    assert step == AskAgain(pytest.approx(0.2))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), readers=st.integers(1, 6))
def test_random_mixed_bursts_keep_priority_shares_and_spacing(seed: int, readers: int) -> None:
    rng = random.Random(seed)
    budget = MemorySendBudget(rate=5.0)
    budget.acquire(BUCKET, UNLOCK, 0.0, 5.0, unlock())
    slots: list[float] = [0.0]
    held: dict[str, list[tuple[float, float]]] = {}
    next_unlock = 1.0
    now = 0.0
    while now < 30.0:
        now += rng.expovariate(8.0)
        if now >= next_unlock:  # unlocks at most one a second
            grant = budget.acquire(BUCKET, UNLOCK, now, 30.0, unlock())
            assert grant.ok, now
            assert grant.wait_s <= 1.0 + EPS, (now, grant)
            slots.append(now + grant.wait_s)
            next_unlock = now + 1.0 + rng.random()
            continue
        holder = f"id-{rng.randrange(readers)}"
        wait = rng.choice([1.0, 5.0, 25.0])
        grant = budget.acquire(BUCKET, READ, now, wait, read(holder))
        if grant.ok:
            assert grant.wait_s <= wait + EPS
            slots.append(now + grant.wait_s)
            held.setdefault(holder, []).append((now, now + grant.wait_s))
    assert_spaced(slots, 5.0)
    # fair share: at no booking did one identity hold more than 5 s of the line ahead. A share
    # counts line time booked, so slots pushed back by the free slots kept for unlocks (one
    # per priority_wait_s at most) can add one each inside the identity's span.
    keep_every = BudgetLimits().priority_wait_s
    for bookings in held.values():
        for at, _ in bookings:
            ahead = [slot for booked, slot in bookings if booked <= at and slot > at]
            kept = math.ceil((max(ahead, default=at) - at) / keep_every)
            assert len(ahead) <= 25 + 1 + kept
