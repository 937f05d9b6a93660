"""The DynamoDB send budget against moto: the same semantics as in memory, shared by Lambdas.

Each "Lambda" is a DynamoSendBudget with its own boto3 client over the same table and bucket.
Time is injected; nothing sleeps.
"""

import itertools
import json
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kisi_gateway.core.outcome import classify_status
from kisi_gateway.core.ratelimit import Booking, Grant, bucket_id_for_key
from kisi_gateway.stores.budget import DynamoSendBudget
from kisi_gateway.stores.memory import MemorySendBudget
from kisi_gateway.stores.ports import BudgetUnavailableError
from tests.harness import atomic_moto_dynamodb, aws_env, create_hash_table

BUCKET = "user-1"  # one Kisi user's bucket

TABLE = "kisi-gateway-budget"
API_KEY = "kisi-live-key-0123456789abcdef"
BUCKET = bucket_id_for_key(API_KEY)
GET = "GET /locks"
EVENTS = "POST /event_sets"
KISI_ROUTES = {EVENTS: 1.0, "POST /signed_upload_urls": 0.1}
NOW = 1_700_000_000.0
EPS = 1e-6
OK = classify_status(200)
THROTTLED = classify_status(429)

Factory = Callable[..., DynamoSendBudget]


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    aws_env(monkeypatch)
    # Concurrency tests check the budget's conditional writes, not moto's internals.
    atomic_moto_dynamodb(monkeypatch, ("get_item", "update_item", "transact_write_items", "scan"))
    with mock_aws():
        client = boto3.client("dynamodb")
        create_hash_table(client, TABLE, "pk")
        yield client


@pytest.fixture
def lambda_budget(dynamodb: Any) -> Factory:
    """A new budget with its own client, as a new Lambda execution environment would have."""

    def make(**kwargs: Any) -> DynamoSendBudget:
        kwargs.setdefault("route_rates", KISI_ROUTES)
        return DynamoSendBudget(boto3.client("dynamodb"), TABLE, **kwargs)

    return make


def item(client: Any, pk: str) -> dict[str, Any]:
    return client.get_item(TableName=TABLE, Key={"pk": {"S": pk}}, ConsistentRead=True)["Item"]


def number(client: Any, pk: str, name: str) -> float:
    return float(item(client, pk)[name]["N"])


def gaps(ordered: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(ordered)]


def count_calls(budget_client: Any) -> list[str]:
    """The DynamoDB operations a client makes from now on."""
    calls: list[str] = []
    budget_client.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
    )
    return calls


def test_slots_are_reserved_in_line(lambda_budget: Factory) -> None:
    budget = lambda_budget()
    assert budget.acquire(BUCKET, GET, NOW) == Grant(True, 0.0)
    refused = budget.acquire(BUCKET, GET, NOW)
    assert (refused.ok, refused.reason) == (False, "rate")
    assert refused.wait_s == pytest.approx(0.2)
    waits = [budget.acquire(BUCKET, GET, NOW, max_wait_s=1.0).wait_s for _ in range(5)]
    assert waits == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert not budget.acquire(BUCKET, GET, NOW, max_wait_s=1.0).ok


def overload(budget: DynamoSendBudget, retry_after_s: float | None, now: float) -> None:
    """Kisi's bucket is empty: a booking, then three 429s in a row while the line is busy."""
    budget.acquire(BUCKET, GET, now - 0.3, max_wait_s=math.inf)
    for before in (0.2, 0.1, 0.0):
        budget.observe(BUCKET, GET, THROTTLED, retry_after_s, now - before)


def test_one_round_trip_per_acquire(lambda_budget: Factory) -> None:
    budget, other = lambda_budget(), lambda_budget()
    calls = count_calls(budget._client)
    budget.acquire(BUCKET, GET, NOW)  # a new bucket: one conditional write, no read
    budget.acquire(BUCKET, GET, NOW + 1)  # planned from its own last write
    assert calls == ["UpdateItem"] * 2
    calls.clear()
    # another Lambda books meanwhile: the write that loses brings the item back with it
    assert other.acquire(BUCKET, GET, NOW + 2).ok
    assert budget.acquire(BUCKET, GET, NOW + 2, max_wait_s=1.0) == Grant(True, pytest.approx(0.2))
    assert calls == ["UpdateItem", "UpdateItem"]
    calls.clear()
    # a lost write that makes the answer a refusal costs nothing more: the item came back
    assert other.acquire(BUCKET, GET, NOW + 10).ok
    refused = budget.acquire(BUCKET, GET, NOW + 10)
    assert (refused.ok, refused.reason) == (False, "rate")
    assert calls == ["UpdateItem"]


def test_a_send_writes_only_what_changed_and_every_lambda_reads_the_same(
    lambda_budget: Factory,
) -> None:
    budget, reader = lambda_budget(), lambda_budget()
    expressions: list[str] = []
    budget._client.meta.events.register(
        "provide-client-params.dynamodb.UpdateItem",
        lambda params, **_: expressions.append(params["UpdateExpression"]),
    )
    budget.acquire(BUCKET, GET, NOW)  # a new item: every attribute
    budget.acquire(BUCKET, GET, NOW + 1)  # over its own write: what the booking moved
    first, second = expressions
    assert "#rate" in first
    assert "#gate_until" in first
    assert "#rate" not in second
    assert "#gate_until" not in second
    assert "#tat" in second
    assert "#version" in second
    # what is stored is what the writer holds, and another Lambda books right after it
    stored, version = lambda_budget()._read(BUCKET, budget._limits.rate)
    assert (stored, version) == budget._seen[BUCKET]
    assert reader.acquire(BUCKET, GET, NOW + 1, max_wait_s=1.0).wait_s == pytest.approx(0.2)


def test_item_layout_never_contains_the_key(dynamodb: Any, lambda_budget: Factory) -> None:
    budget = lambda_budget()
    budget.acquire(BUCKET, GET, NOW)
    budget.acquire(BUCKET, EVENTS, NOW + 1)
    overload(budget, 5.0, NOW + 2)
    stored = dynamodb.scan(TableName=TABLE)["Items"]
    assert sorted(i["pk"]["S"] for i in stored) == [BUCKET, f"{BUCKET}#{EVENTS}"]
    account = item(dynamodb, BUCKET)
    assert set(account) == {"pk", "tat", "rate", "gate_until", "lowered_at", "updated_at",
                            "peak", "strikes", "reserved_at", "pressed_until", "version"}
    assert all("N" in value for name, value in account.items() if name != "pk")
    assert float(account["gate_until"]["N"]) == NOW + 7.0
    dumped = json.dumps(stored)
    assert API_KEY not in dumped
    assert API_KEY[:12] not in dumped


def test_unlock_pressure_is_shared_by_lambdas_as_in_memory(
    dynamodb: Any, lambda_budget: Factory
) -> None:
    # given two Lambdas and the in-memory budget, fed the same calls
    lambdas = [lambda_budget(), lambda_budget()]
    memory = MemorySendBudget(route_rates=KISI_ROUTES)
    unlock = Booking(priority=True, holder="door-app")
    script: list[tuple[float, float, Booking]] = [
        (NOW, 25.0, Booking(holder=f"id-{n % 4}")) for n in range(40)  # reads, 8 s ahead
    ]
    script += [(NOW + 0.5, 5.0, unlock)]  # refused: from here the line ahead is for unlocks
    script += [(NOW + 0.6 + k / 10, 25.0, Booking(holder="id-4")) for k in range(5)]
    script += [(NOW + 3.0, 5.0, unlock), (NOW + 7.9, 25.0, Booking(holder="id-4"))]
    script += [(NOW + 10.0 + k / 10, 25.0, Booking(holder="id-5")) for k in range(5)]
    # when each call goes to either Lambda
    for n, (now, max_wait_s, booking) in enumerate(script):
        expected = memory.acquire(BUCKET, GET, now, max_wait_s, booking)
        got = lambdas[n % 2].acquire(BUCKET, GET, now, max_wait_s, booking)
        # then every answer is the memory budget's, and so is the stored pressure
        assert got.ok is expected.ok, n
        assert got.reason == expected.reason, n
        assert got.wait_s == pytest.approx(expected.wait_s), n
        if memory.state(BUCKET).pressed_until:
            assert number(dynamodb, BUCKET, "pressed_until") == pytest.approx(
                memory.state(BUCKET).pressed_until)
    assert memory.state(BUCKET).pressed_until == pytest.approx(NOW + 0.5 + 7.5 + 2.0)


def test_eight_lambdas_never_book_a_slot_twice(lambda_budget: Factory) -> None:
    budgets = [lambda_budget() for _ in range(8)]  # each with its own client
    slots: list[float] = []
    lock = threading.Lock()
    tickets = iter(range(100))
    start = threading.Barrier(8)

    def take_ticket() -> bool:
        with lock:
            return next(tickets, None) is not None

    def lambda_fn(budget: DynamoSendBudget) -> None:
        start.wait()
        while take_ticket():
            while not (grant := budget.acquire(BUCKET, GET, NOW, max_wait_s=math.inf)).ok:
                assert grant.reason == "busy"  # lost every race this round: ask again
            with lock:
                slots.append(NOW + grant.wait_s)

    threads = [threading.Thread(target=lambda_fn, args=(b,)) for b in budgets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ordered = sorted(slots)
    assert len(ordered) == 100
    assert len(set(ordered)) == 100
    assert min(gaps(ordered)) >= 0.2 - EPS
    assert ordered == pytest.approx([NOW + k * 0.2 for k in range(100)])


def test_route_with_its_own_rate_books_both_buckets(
    dynamodb: Any, lambda_budget: Factory
) -> None:
    budget = lambda_budget()
    calls = count_calls(budget._client)
    assert budget.acquire(BUCKET, EVENTS, NOW) == Grant(True, 0.0)
    assert calls == ["GetItem", "GetItem", "TransactWriteItems"]
    assert number(dynamodb, f"{BUCKET}#{EVENTS}", "tat") == NOW + 1.0
    assert number(dynamodb, BUCKET, "tat") == NOW + 0.2
    refused = budget.acquire(BUCKET, EVENTS, NOW + 0.5, max_wait_s=0.2)
    assert (refused.ok, refused.reason) == (False, "rate")
    assert refused.wait_s == pytest.approx(0.5)
    assert budget.acquire(BUCKET, GET, NOW + 0.5) == Grant(True, 0.0)  # other routes unaffected
    other = lambda_budget()
    assert other.acquire(BUCKET, EVENTS, NOW + 1.0) == Grant(True, 0.0)


def test_concurrent_route_bookings_are_atomic_in_both_buckets(lambda_budget: Factory) -> None:
    budgets = [lambda_budget() for _ in range(4)]
    event_slots: list[float] = []
    read_slots: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def lambda_fn(index: int, budget: DynamoSendBudget) -> None:
        start.wait()
        now = NOW
        for n in range(10):
            route = EVENTS if (index + n) % 2 else GET
            while not (grant := budget.acquire(BUCKET, route, now, max_wait_s=0.5)).ok:
                now += grant.wait_s  # come back when told, on this Lambda's own clock
            with lock:
                (event_slots if route == EVENTS else read_slots).append(now + grant.wait_s)

    threads = [threading.Thread(target=lambda_fn, args=pair) for pair in enumerate(budgets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events, everything = sorted(event_slots), sorted(event_slots + read_slots)
    assert (len(events), len(everything)) == (20, 40)
    assert min(gaps(events)) >= 1.0 - EPS
    assert min(gaps(everything)) >= 0.2 - EPS


def test_throttle_gate_and_recovery_across_lambdas(
    dynamodb: Any, lambda_budget: Factory
) -> None:
    sender, other = lambda_budget(), lambda_budget()
    # given Kisi's bucket is empty: two 429s in a row, with Retry-After: 10
    overload(sender, 10.0, NOW)
    assert number(dynamodb, BUCKET, "rate") == 3.5
    # then every Lambda, on every route, is held at the gate until it opens
    for budget, route, now in ((other, GET, NOW + 1), (other, "PUT /users/{id}", NOW + 9),
                               (sender, GET, NOW + 9.9)):
        grant = budget.acquire(BUCKET, route, now, max_wait_s=3600.0)
        assert (grant.ok, grant.reason) == (False, "gate")
        assert grant.wait_s == pytest.approx(NOW + 10.0 - now)
    # and once it opens, the rate has recovered along its curve, with no write for it
    calls = count_calls(sender._client)
    for n in range(5):
        sender.observe(BUCKET, GET, OK, None, NOW + 3 + n)
    assert calls == []
    waits = [other.acquire(BUCKET, GET, NOW + 10, max_wait_s=5.0).wait_s for _ in range(3)]
    assert waits == pytest.approx([0.0, 0.2, 0.4])


def test_successes_and_other_answers_make_no_call(lambda_budget: Factory) -> None:
    budget = lambda_budget()
    budget.acquire(BUCKET, GET, NOW)
    calls = count_calls(budget._client)
    for n in range(5):
        budget.observe(BUCKET, GET, OK, None, NOW + n)
    budget.observe(BUCKET, GET, classify_status(404), None, NOW + 6)
    assert calls == []


def test_an_isolated_429_is_written_down_but_slows_nobody(
    dynamodb: Any, lambda_budget: Factory
) -> None:
    lambdas = [lambda_budget() for _ in range(2)]
    lambdas[0].acquire(BUCKET, GET, NOW)
    lambdas[0].observe(BUCKET, GET, THROTTLED, 1.0, NOW + 0.1)
    assert (number(dynamodb, BUCKET, "rate"), number(dynamodb, BUCKET, "strikes")) == (5.0, 1)
    assert lambdas[1].acquire(BUCKET, GET, NOW + 0.2) == Grant(True, 0.0)  # no gate closed
    # two more from another Lambda, each within a second of the last, confirm the overload
    lambdas[1].observe(BUCKET, GET, THROTTLED, 1.0, NOW + 0.3)
    assert number(dynamodb, BUCKET, "rate") == 5.0
    lambdas[1].observe(BUCKET, GET, THROTTLED, 1.0, NOW + 0.4)
    assert number(dynamodb, BUCKET, "rate") == 3.5
    assert number(dynamodb, BUCKET, "gate_until") == NOW + 1.4


def test_throttles_in_one_second_lower_the_rate_once(
    dynamodb: Any, lambda_budget: Factory
) -> None:
    lambdas = [lambda_budget() for _ in range(4)]
    lambdas[0].acquire(BUCKET, GET, NOW)
    for budget in lambdas:  # four requests already on the wire all come back 429
        budget.observe(BUCKET, GET, THROTTLED, None, NOW + 0.1)
    assert number(dynamodb, BUCKET, "rate") == 3.5
    lambdas[0].acquire(BUCKET, GET, NOW + 1.4, max_wait_s=5.0)
    for n, budget in enumerate(lambdas[1:]):
        budget.observe(BUCKET, GET, THROTTLED, None, NOW + 1.5 + n * 0.05)
    # lowered again, from where its recovery had got to (back at about 5/s after 1.4 s)
    assert number(dynamodb, BUCKET, "rate") == pytest.approx(3.5, abs=0.01)
    assert number(dynamodb, BUCKET, "peak") < 5.0


def test_deleting_the_item_resets_the_bucket(dynamodb: Any, lambda_budget: Factory) -> None:
    budget = lambda_budget()
    overload(budget, 600.0, NOW)
    assert budget.acquire(BUCKET, GET, NOW + 1).reason == "gate"
    dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": BUCKET}})
    calls = count_calls(budget._client)
    # this Lambda's own view still shows the gate: a refusal from an old view is read again
    assert budget.acquire(BUCKET, GET, NOW + 1) == Grant(True, 0.0)
    assert calls == ["GetItem", "UpdateItem"]


def test_unreachable_table_fails_closed_and_observe_carries_on(dynamodb: Any) -> None:
    budget = DynamoSendBudget(boto3.client("dynamodb"), "no-such-table")
    with pytest.raises(BudgetUnavailableError) as raised:
        budget.acquire(BUCKET, GET, NOW)
    assert raised.value.retry_after_s == 1.0
    assert "ResourceNotFoundException" in str(raised.value)
    assert API_KEY not in str(raised.value)
    budget.observe(BUCKET, GET, THROTTLED, 5.0, NOW)  # logged, not raised: Kisi already answered
    budget.observe(BUCKET, GET, OK, None, NOW)


def test_a_call_that_loses_every_race_is_told_busy_at_a_random_moment(
    lambda_budget: Factory,
) -> None:
    """Nothing is booked, and the losers of one race come back apart: the wait is drawn from
    the injected random source, up to two intervals, with reason "busy" (not "rate": it says
    nothing about the line)."""
    winner = lambda_budget()
    loser = lambda_budget(max_attempts=1, rng=lambda: 0.25)
    assert loser.acquire(BUCKET, GET, NOW, max_wait_s=5.0).ok  # its view of the bucket
    assert winner.acquire(BUCKET, GET, NOW, max_wait_s=5.0).ok  # changes it under that view
    grant = loser.acquire(BUCKET, GET, NOW, max_wait_s=5.0)
    assert (grant.ok, grant.reason) == (False, "busy")
    assert grant.wait_s == pytest.approx(2 * 0.25 / 5.0)
    assert loser.acquire(BUCKET, GET, NOW, max_wait_s=5.0).ok  # it now knows the bucket
