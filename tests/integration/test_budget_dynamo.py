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
from kisi_gateway.core.ratelimit import Grant, bucket_id_for_key
from kisi_gateway.stores.budget import DynamoSendBudget
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


def test_one_get_and_one_update_per_acquire(lambda_budget: Factory) -> None:
    budget = lambda_budget()
    calls = count_calls(budget._client)
    budget.acquire(BUCKET, GET, NOW)
    budget.acquire(BUCKET, GET, NOW + 1)
    assert calls == ["GetItem", "UpdateItem"] * 2
    calls.clear()
    budget.acquire(BUCKET, GET, NOW + 1)  # refused: nothing to write
    assert calls == ["GetItem"]


def test_item_layout_never_contains_the_key(dynamodb: Any, lambda_budget: Factory) -> None:
    budget = lambda_budget()
    budget.acquire(BUCKET, GET, NOW)
    budget.acquire(BUCKET, EVENTS, NOW + 1)
    budget.observe(BUCKET, GET, THROTTLED, 5.0, NOW + 2)
    stored = dynamodb.scan(TableName=TABLE)["Items"]
    assert sorted(i["pk"]["S"] for i in stored) == [BUCKET, f"{BUCKET}#{EVENTS}"]
    account = item(dynamodb, BUCKET)
    assert set(account) == {"pk", "tat", "rate", "gate_until", "lowered_at", "updated_at",
                            "version"}
    assert all("N" in value for name, value in account.items() if name != "pk")
    assert float(account["gate_until"]["N"]) == NOW + 7.0
    dumped = json.dumps(stored)
    assert API_KEY not in dumped
    assert API_KEY[:12] not in dumped


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
                assert grant.reason == "rate"  # lost every race this round: ask again
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
    assert sender.acquire(BUCKET, GET, NOW).ok
    # given Kisi answers 429 with Retry-After: 10
    sender.observe(BUCKET, GET, THROTTLED, 10.0, NOW)
    assert number(dynamodb, BUCKET, "rate") == 2.5
    # then every Lambda, on every route, is held at the gate until it opens
    for budget, route, now in ((other, GET, NOW + 1), (other, "PUT /users/{id}", NOW + 9),
                               (sender, GET, NOW + 9.9)):
        grant = budget.acquire(BUCKET, route, now, max_wait_s=3600.0)
        assert (grant.ok, grant.reason) == (False, "gate")
        assert grant.wait_s == pytest.approx(NOW + 10.0 - now)
    # and once it opens, requests are spaced at the lowered rate
    waits = [other.acquire(BUCKET, GET, NOW + 10, max_wait_s=5.0).wait_s for _ in range(3)]
    assert waits == pytest.approx([0.0, 0.4, 0.8])
    # when successes come back, the rate climbs back to Kisi's 5/s, one step each
    rates = []
    for n in range(12):
        sender.observe(BUCKET, GET, OK, None, NOW + 11 + n)
        rates.append(number(dynamodb, BUCKET, "rate"))
    assert rates == [2.75, 3.0, 3.25, 3.5, 3.75, 4.0, 4.25, 4.5, 4.75, 5.0, 5.0, 5.0]


def test_success_at_full_rate_makes_no_call(lambda_budget: Factory) -> None:
    budget = lambda_budget()
    budget.acquire(BUCKET, GET, NOW)
    calls = count_calls(budget._client)
    for n in range(5):
        budget.observe(BUCKET, GET, OK, None, NOW + n)
    budget.observe(BUCKET, GET, classify_status(404), None, NOW + 6)
    assert calls == []


def test_throttles_in_one_second_lower_the_rate_once(
    dynamodb: Any, lambda_budget: Factory
) -> None:
    lambdas = [lambda_budget() for _ in range(3)]
    for budget in lambdas:  # three requests already on the wire all come back 429
        budget.observe(BUCKET, GET, THROTTLED, None, NOW + 0.1)
    assert number(dynamodb, BUCKET, "rate") == 2.5
    lambdas[0].observe(BUCKET, GET, THROTTLED, None, NOW + 1.5)
    lambdas[1].observe(BUCKET, GET, THROTTLED, None, NOW + 3.0)
    lambdas[2].observe(BUCKET, GET, THROTTLED, None, NOW + 4.0)
    assert number(dynamodb, BUCKET, "rate") == 1.0  # 1.25, then the floor: 20 % of 5/s


def test_deleting_the_item_resets_the_bucket(dynamodb: Any, lambda_budget: Factory) -> None:
    budget = lambda_budget()
    budget.observe(BUCKET, GET, THROTTLED, 600.0, NOW)
    assert budget.acquire(BUCKET, GET, NOW + 1).reason == "gate"
    dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": BUCKET}})
    assert budget.acquire(BUCKET, GET, NOW + 1) == Grant(True, 0.0)


def test_unreachable_table_fails_closed_and_observe_carries_on(dynamodb: Any) -> None:
    budget = DynamoSendBudget(boto3.client("dynamodb"), "no-such-table")
    with pytest.raises(BudgetUnavailableError) as raised:
        budget.acquire(BUCKET, GET, NOW)
    assert raised.value.retry_after_s == 1.0
    assert "ResourceNotFoundException" in str(raised.value)
    assert API_KEY not in str(raised.value)
    budget.observe(BUCKET, GET, THROTTLED, 5.0, NOW)  # logged, not raised: Kisi already answered
    budget.observe(BUCKET, GET, OK, None, NOW)
