"""Account safety's DynamoDB parts against moto: known-bad entries in the requests table, and
the operator's ``gate status|reopen`` over the send budget's table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kisi_gateway.core.known_bad import MAX_ENTRIES_PER_PATH, KnownAnswer
from kisi_gateway.core.outcome import classify_status
from kisi_gateway.stores.budget import DynamoSendBudget
from kisi_gateway.stores.guard import DynamoGuard
from kisi_gateway.stores.known_bad import DynamoKnownBad
from kisi_gateway.stores.ports import KnownBadStoreError
from ops.cli import main
from tests.harness import aws_env, create_hash_table

REQUESTS, BUDGET, GUARD = "requests", "budget", "guard"
NOW = 1_700_000_000.0
ME, THEM = "id-0a1b2c3d", "id-99887766"


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    aws_env(monkeypatch)
    with mock_aws():
        client = boto3.client("dynamodb")
        create_hash_table(client, REQUESTS, "request_id")
        create_hash_table(client, BUDGET, "pk")
        create_hash_table(client, GUARD, "scope")
        yield client


def refusal(status: int = 422, until: float = NOW + 60) -> KnownAnswer:
    return KnownAnswer(status, "application/json", b'{"errors": {"email": ["is invalid"]}}',
                       until)


def test_entries_are_found_per_identity_request_and_window(dynamodb: Any) -> None:
    store = DynamoKnownBad(dynamodb, REQUESTS)
    store.remember(ME, "/users", "a" * 32, refusal())
    store.remember(ME, "/users", "b" * 32, refusal(409))
    assert store.find(ME, "/users", "a" * 32, NOW) == refusal()
    assert store.find(ME, "/users", "b" * 32, NOW + 59).status == 409  # type: ignore[union-attr]
    assert store.find(ME, "/users", "a" * 32, NOW + 60) is None  # the window is over
    assert store.find(THEM, "/users", "a" * 32, NOW) is None
    assert store.find(ME, "/groups", "a" * 32, NOW) is None
    # The item's TTL lets DynamoDB delete it after the newest entry's window.
    items = dynamodb.scan(TableName=REQUESTS)["Items"]
    assert [item["expires_at"]["N"] for item in items] == [str(int(NOW + 60) + 1)]


def test_a_successful_write_forgets_the_path_and_creates_nothing(dynamodb: Any) -> None:
    store = DynamoKnownBad(dynamodb, REQUESTS)
    store.remember(ME, "/users", "a" * 32, refusal())
    store.forget(ME, "/users")
    assert store.find(ME, "/users", "a" * 32, NOW) is None
    store.remember(ME, "/users", "c" * 32, refusal())  # a map removed is started afresh
    assert store.find(ME, "/users", "c" * 32, NOW) is not None
    store.forget(THEM, "/never")  # no entries there: no item is made up
    assert dynamodb.scan(TableName=REQUESTS)["Count"] == 1


def test_a_full_path_starts_over_with_the_newest_refusal(dynamodb: Any) -> None:
    store = DynamoKnownBad(dynamodb, REQUESTS)
    for index in range(MAX_ENTRIES_PER_PATH):
        store.remember(ME, "/users", f"{index:032x}", refusal())
    store.remember(ME, "/users", "f" * 32, refusal())
    assert store.find(ME, "/users", "f" * 32, NOW) is not None
    assert store.find(ME, "/users", f"{0:032x}", NOW) is None


def test_an_unreachable_table_is_a_store_error(dynamodb: Any) -> None:
    store = DynamoKnownBad(dynamodb, "no-such-table")
    with pytest.raises(KnownBadStoreError):
        store.find(ME, "/users", "a" * 32, NOW)


def test_gate_status_and_reopen(dynamodb: Any, capsys: pytest.CaptureFixture[str]) -> None:
    budget = DynamoSendBudget(dynamodb, BUDGET)
    budget.observe("user-1", "GET /locks", classify_status(429), 900.0, NOW)
    budget.observe("user-2", "GET /locks", classify_status(429), 30.0, NOW)
    clock = lambda: NOW + 10  # noqa: E731

    assert main(["gate", "status", "--table", BUDGET], client=dynamodb, clock=clock) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["bucket"], row["seconds_left"]) for row in rows] == [
        ("user-1", 890.0), ("user-2", 20.0)]

    assert main(["gate", "reopen", "--bucket", "user-1", "--table", BUDGET], client=dynamodb,
                clock=clock) == 0
    assert json.loads(capsys.readouterr().out) == {"reopened": ["user-1"]}
    assert budget.acquire("user-1", "GET /locks", NOW + 11).ok  # a new read sees it open
    assert main(["gate", "reopen", "--table", BUDGET], client=dynamodb, clock=clock) == 0
    assert json.loads(capsys.readouterr().out) == {"reopened": ["user-2"]}
    assert main(["gate", "status", "--table", BUDGET], client=dynamodb, clock=clock) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["gate", "status", "--table", "no-such-table"], client=dynamodb) == 1


def test_the_lambda_that_wins_the_probe_election_knows_it(dynamodb: Any) -> None:
    mine, other = DynamoGuard(dynamodb, GUARD), DynamoGuard(boto3.client("dynamodb"), GUARD)
    for _ in range(5):
        mine.observe(ME, "GET /locks", classify_status(401), NOW)
    assert mine.check(ME, "GET /locks", NOW + 61) is None  # elected: the probe is its to send
    assert mine.probing(ME, "GET /locks") == [ME]
    assert other.check(ME, "GET /locks", NOW + 61) is not None
    assert other.probing(ME, "GET /locks") == []
    mine.observe(ME, "GET /login", classify_status(200), NOW + 62)  # the probe's answer
    assert mine.probing(ME, "GET /locks") == []
    assert other.check(ME, "GET /locks", NOW + 62) is None


def test_the_guard_hints_which_identities_have_known_bad_entries(dynamodb: Any) -> None:
    """The hint rides on the account item the guard reads anyway; a view older than
    ``hint_max_age_s`` (or none) says "maybe", so the screen looks up."""
    here = DynamoGuard(dynamodb, GUARD, cache_s=0.0, hint_max_age_s=1.0)
    there = DynamoGuard(dynamodb, GUARD, cache_s=0.0, hint_max_age_s=1.0)
    route = "POST /users"
    assert there.may_know_bad(ME, NOW)  # no view yet: look up
    assert there.check(ME, route, NOW) is None
    assert there.check(THEM, route, NOW) is None
    assert not there.may_know_bad(ME, NOW + 0.5)  # a fresh view with nothing noted
    here.note_known_bad(ME, NOW + 60, NOW + 0.5)
    assert here.may_know_bad(ME, NOW + 0.5)  # the noting Lambda knows at once
    assert not there.may_know_bad(ME, NOW + 0.9)  # the bound: at most hint_max_age_s stale
    assert there.may_know_bad(ME, NOW + 1.0)  # aged view: look up
    assert there.check(ME, route, NOW + 1.0) is None  # a note pauses nothing
    assert there.may_know_bad(ME, NOW + 1.0)
    assert there.check(THEM, route, NOW + 1.0) is None
    assert not there.may_know_bad(THEM, NOW + 1.0)  # nobody else is affected
    assert there.check(ME, route, NOW + 61) is None
    assert not there.may_know_bad(ME, NOW + 61)  # the entry's window is over
    states = {state["scope"]: state["state"] for state in here.states(NOW + 61)}
    assert states[ME] == "closed"


def test_a_lost_hint_is_logged_not_raised(dynamodb: Any, caplog: pytest.LogCaptureFixture) -> None:
    guard = DynamoGuard(dynamodb, "no-such-table", cache_s=0.0)
    guard.note_known_bad(ME, NOW + 60, NOW)
    assert "known-bad hint not written" in caplog.text
    assert guard.may_know_bad(ME, NOW)  # nothing seen: the screen looks up
