"""Waiting for a send slot on a clock that wakes late: never sent at or after the deadline,
and each caller is answered inline whenever its slot falls within its wait."""

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kisi_gateway.core.decisions import Defer, Expire, Send, Window
from kisi_gateway.core.identity import Credential, CredentialKind
from kisi_gateway.core.policy import PolicyTable
from kisi_gateway.pipeline.callers import Who
from kisi_gateway.pipeline.sending import Acting, Sender
from kisi_gateway.pipeline.telemetry import MemorySink, Telemetry
from kisi_gateway.stores.memory import MemoryGuard, MemorySendBudget

START = 1_000.0
TABLE = PolicyTable.default()
UNLOCK = TABLE.resolve("POST", "/locks/7/unlock")
READ = TABLE.resolve("GET", "/locks/7")


@dataclass
class LateClock:
    """A clock whose every sleep overshoots by up to ``late_s`` (Lambda timers are not exact)."""

    now_s: float
    late_s: float
    rng: random.Random

    def now(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.now_s += seconds + self.rng.uniform(0.0, self.late_s)


def acting(identity: str = "id-1") -> Acting:
    who = Who(tenant="t", caller="c", kind=CredentialKind.SERVICE,
              credential=Credential("KISI-LOGIN", "k"), identity=identity, scope="s",
              client=False)
    return Acting(who, "user-1")


def sender(clock: LateClock, budget: MemorySendBudget) -> Sender:
    def no_kisi() -> object:
        raise AssertionError("waiting for a turn never calls Kisi")

    return Sender(kisi_factory=no_kisi, budget=budget, guard=MemoryGuard(),  # type: ignore[arg-type]
                  telemetry=Telemetry(MemorySink()), clock=clock, rng=random.random)


def test_a_slot_missed_by_a_late_wake_up_expires_instead_of_sending_late() -> None:
    clock = LateClock(START, late_s=0.0, rng=random.Random(1))
    budget = MemorySendBudget(rate=5.0)
    for _ in range(10):  # the line is 2 s long
        budget.acquire("user-1", READ.key, START, 25.0)
    clock.late_s = 0.5  # every sleep overshoots by up to half a second
    deadline = START + 2.1  # the slot at START + 2.0 is in time; waking for it may not be
    turn = sender(clock, budget).wait_for_turn(
        UNLOCK, acting(), deadline=deadline, window=Window(START + 5.0, 25.0), asks=3,
        check_guard=True)
    assert isinstance(turn, Send | Expire)
    if isinstance(turn, Send):
        assert clock.now() < deadline
    else:
        assert turn == Expire("deadline")
        assert clock.now() >= deadline


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), queued=st.integers(0, 40),
       late_s=st.sampled_from([0.0, 0.05, 0.3, 1.0]), deadline_s=st.floats(0.5, 30.0))
def test_no_turn_is_ever_sent_at_or_after_its_deadline(
    seed: int, queued: int, late_s: float, deadline_s: float
) -> None:
    clock = LateClock(START, late_s=late_s, rng=random.Random(seed))
    budget = MemorySendBudget(rate=5.0)
    for _ in range(queued):
        budget.acquire("user-1", READ.key, START, 25.0)
    deadline = START + deadline_s
    turn = sender(clock, budget).wait_for_turn(
        UNLOCK, acting(), deadline=deadline, window=Window(START + 5.0, 25.0), asks=3,
        check_guard=True)
    if isinstance(turn, Send):
        assert clock.now() < deadline
    else:
        assert isinstance(turn, Expire | Defer)


@pytest.mark.parametrize("callers", [5, 20, 26])
def test_callers_whose_slot_falls_within_their_wait_are_all_sent_inline(callers: int) -> None:
    # callers arriving together, each willing to wait 5 s: all their slots fall within it
    budget = MemorySendBudget(rate=5.0)
    turns = []
    for n in range(callers):
        own = LateClock(START, late_s=0.0, rng=random.Random(n))  # each Lambda its own clock
        turns.append(sender(own, budget).wait_for_turn(
            READ, acting(f"id-{n % 4}"), deadline=START + 86_400.0,
            window=Window(START + 5.0, 25.0), asks=3, check_guard=True))
    assert all(isinstance(turn, Send) for turn in turns)


@dataclass
class StallingClock(LateClock):
    """Its first sleep overshoots by ``stall_s`` (a stalled process); later ones are exact."""

    stall_s: float = 0.0

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.now_s += seconds + self.stall_s
            self.stall_s = 0.0


def test_a_sender_that_wakes_well_after_its_slot_books_again_instead_of_bunching() -> None:
    budget = MemorySendBudget(rate=5.0)
    for _ in range(5):  # the line is 1 s long: the slot booked is at START + 1.0
        budget.acquire("user-1", READ.key, START, 25.0)
    clock = StallingClock(START, late_s=0.0, rng=random.Random(1), stall_s=0.7)
    booked_before = budget.state("user-1").tat
    turn = sender(clock, budget).wait_for_turn(
        READ, acting(), deadline=START + 60.0, window=Window(START + 5.0, 25.0), asks=1,
        check_guard=True)
    assert isinstance(turn, Send)
    # woke at START + 1.7 for the slot at START + 1.0: booked the next free one (its ask not
    # spent: asks=1 still sends) and goes out at it, not 0.7 s late into the next sender's
    assert clock.now() == pytest.approx(START + 1.7)
    assert budget.state("user-1").tat == pytest.approx(START + 1.7 + 0.2)
    assert booked_before == pytest.approx(START + 1.0)


def test_a_sender_a_little_late_sends_without_booking_again() -> None:
    budget = MemorySendBudget(rate=5.0)
    for _ in range(5):
        budget.acquire("user-1", READ.key, START, 25.0)
    clock = StallingClock(START, late_s=0.0, rng=random.Random(1), stall_s=0.1)
    turn = sender(clock, budget).wait_for_turn(
        READ, acting(), deadline=START + 60.0, window=Window(START + 5.0, 25.0), asks=1,
        check_guard=True)
    assert isinstance(turn, Send)
    assert budget.state("user-1").tat == pytest.approx(START + 1.2)  # one booking, its own
