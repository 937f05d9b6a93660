"""The guard against DynamoDB (moto): fleet-wide 401 counting, one probe, reopen, reset, CLI.

Every "Lambda" is its own DynamoGuard (its own cache and probe leases) with its own client.
Time is injected: nothing sleeps.
"""

import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from kisi_gateway.core.breaker import GuardState, Pause, account_scope, route_scope
from kisi_gateway.core.outcome import Transport, classify_status, classify_transport
from kisi_gateway.stores.guard import DynamoGuard
from ops.cli import main
from tests.harness import atomic_moto_dynamodb, aws_env, create_hash_table

IDENTITY = "id-0a1b2c3d4e5f6a7b"  # one identity's scopes
ACCOUNT = account_scope(IDENTITY)

TABLE = "kisi-gateway-guard"
T0 = 1_700_000_000.0
UNLOCK = "POST /locks/{id}/unlock"
PATCH_USER = "PATCH /users/{id}"
R_UNLOCK = route_scope(IDENTITY, UNLOCK)
R_PATCH = route_scope(IDENTITY, PATCH_USER)
R_LOCKS = route_scope(IDENTITY, "GET /locks")
UNAUTHORIZED = classify_status(401)
OK = classify_status(200)


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto DynamoDB with the guard's table (hash key ``scope``), dummy credentials."""
    aws_env(monkeypatch)
    with mock_aws():
        client = boto3.client("dynamodb")
        create_hash_table(client, TABLE, "scope")
        yield client


@pytest.fixture
def atomic_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB applies each UpdateItem atomically; moto holds no lock between its condition
    check and its write. Serialise moto's update_item so that the threads below test the
    guard's condition expression, not moto's thread safety."""
    atomic_moto_dynamodb(monkeypatch, ("update_item",))


def lambda_guard(**kwargs: Any) -> DynamoGuard:
    """A guard as one Lambda holds it: its own client, its own cache."""
    return DynamoGuard(boto3.client("dynamodb"), TABLE, **kwargs)


def state_of(guard: DynamoGuard, scope: str, now: float) -> dict[str, Any]:
    return next(row for row in guard.states(now) if row["scope"] == scope)


def trip_account(guard: DynamoGuard, at: float) -> None:
    for _ in range(5):
        guard.observe(IDENTITY, UNLOCK, UNAUTHORIZED, at)
    assert state_of(guard, ACCOUNT, at)["state"] == "open"


def test_five_consecutive_401_across_two_lambdas_open_the_account(dynamodb: Any) -> None:
    # given two Lambdas, each with its own cache, sharing the table
    first, second = lambda_guard(), lambda_guard()
    # when they see four 401s between them
    for n in range(4):
        (first if n % 2 == 0 else second).observe(IDENTITY, UNLOCK, UNAUTHORIZED, T0 + n)
    # then the account still sends
    assert first.check(IDENTITY, UNLOCK, T0 + 4) is None
    assert second.check(IDENTITY, "GET /locks", T0 + 4) is None
    # when the fifth arrives
    second.observe(IDENTITY, "GET /locks", UNAUTHORIZED, T0 + 4)
    # then both Lambdas pause every route, with a Retry-After to the end of the cooldown
    for guard in (first, second):
        pause = guard.check(IDENTITY, "GET /users", T0 + 5)
        assert pause == Pause(
            scope=ACCOUNT,
            reason="5 consecutive 401 from Kisi: the key looks expired or revoked",
            retry_after_s=59,
        )
    row = state_of(first, ACCOUNT, T0 + 5)
    assert (row["state"], row["opened_at"], row["until"], row["consecutive_401"]) == (
        "open", T0 + 4, T0 + 64, 5,
    )


def test_an_answer_proving_the_key_breaks_the_streak(dynamodb: Any) -> None:
    first, second = lambda_guard(), lambda_guard()
    for n in range(4):
        (first if n % 2 == 0 else second).observe(IDENTITY, UNLOCK, UNAUTHORIZED, T0 + n)
    first.observe(IDENTITY, UNLOCK, classify_status(403), T0 + 5)  # Kisi knew the key: not expired
    assert state_of(first, ACCOUNT, T0 + 5)["consecutive_401"] == 0
    for n in range(4):
        second.observe(IDENTITY, UNLOCK, UNAUTHORIZED, T0 + 6 + n)
    assert second.check(IDENTITY, UNLOCK, T0 + 10) is None


def test_429_and_5xx_neither_count_nor_reset_the_streak(dynamodb: Any) -> None:
    guard = lambda_guard()
    for n in range(3):
        guard.observe(IDENTITY, UNLOCK, UNAUTHORIZED, T0 + n)
    guard.observe(IDENTITY, UNLOCK, classify_status(429), T0 + 3)
    guard.observe(IDENTITY, UNLOCK, classify_status(503), T0 + 3)
    guard.observe(IDENTITY, UNLOCK, classify_transport(Transport.READ_TIMEOUT), T0 + 3)
    assert state_of(guard, ACCOUNT, T0 + 3)["consecutive_401"] == 3
    guard.observe(IDENTITY, UNLOCK, UNAUTHORIZED, T0 + 4)
    guard.observe(IDENTITY, UNLOCK, UNAUTHORIZED, T0 + 4)
    assert isinstance(guard.check(IDENTITY, UNLOCK, T0 + 5), Pause)


def test_after_the_cooldown_exactly_one_of_eight_lambdas_probes(
    dynamodb: Any, atomic_updates: None
) -> None:
    # given an account opened at T0 for 60 s
    trip_account(lambda_guard(), T0)
    guards = [lambda_guard() for _ in range(8)]
    results: list[Pause | None] = [None] * 8
    start = threading.Barrier(8)

    def lambda_check(index: int) -> None:
        start.wait()
        results[index] = guards[index].check(IDENTITY, UNLOCK, T0 + 60)

    # when eight Lambdas check at once once the cooldown is over
    threads = [threading.Thread(target=lambda_check, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then exactly one is elected probe and the rest wait briefly
    probes = [i for i, result in enumerate(results) if result is None]
    assert len(probes) == 1
    paused = [result for result in results if result is not None]
    assert all(p.scope == ACCOUNT and 1 <= p.retry_after_s <= 2 for p in paused)
    assert state_of(guards[0], ACCOUNT, T0 + 60)["state"] == "half_open"

    # when the probe succeeds, the guard closes for everyone and the streak is reset
    guards[probes[0]].observe(IDENTITY, UNLOCK, OK, T0 + 61)
    row = state_of(guards[0], ACCOUNT, T0 + 61)
    assert (row["state"], row["consecutive_401"], row["until"]) == ("closed", 0, None)
    assert all(guard.check(IDENTITY, UNLOCK, T0 + 62) is None for guard in guards)


def test_a_probe_401_reopens_with_the_cooldown_doubled_up_to_the_cap(dynamodb: Any) -> None:
    guard = lambda_guard(max_cooldown_s=200.0)
    trip_account(guard, T0)
    # the probe answers 401 again: open for 120 s
    assert guard.check(IDENTITY, UNLOCK, T0 + 60) is None
    guard.observe(IDENTITY, UNLOCK, UNAUTHORIZED, T0 + 61)
    pause = guard.check(IDENTITY, UNLOCK, T0 + 62)
    assert pause is not None
    assert pause.retry_after_s == 119
    assert "probe answered 401 again" in pause.reason
    row = state_of(guard, ACCOUNT, T0 + 62)
    assert (row["state"], row["cooldown_s"], row["until"]) == ("open", 120, T0 + 181)
    # and again: 240 s would pass the cap, so 200 s
    assert guard.check(IDENTITY, UNLOCK, T0 + 181) is None
    guard.observe(IDENTITY, UNLOCK, UNAUTHORIZED, T0 + 181)
    assert state_of(guard, ACCOUNT, T0 + 181)["cooldown_s"] == 200


def test_a_probe_that_learns_nothing_hands_the_probe_on(dynamodb: Any) -> None:
    first, second = lambda_guard(), lambda_guard()
    trip_account(first, T0)
    assert first.check(IDENTITY, UNLOCK, T0 + 60) is None  # elected
    assert isinstance(second.check(IDENTITY, UNLOCK, T0 + 60), Pause)
    first.observe(IDENTITY, UNLOCK, classify_status(503), T0 + 61)  # neither opens nor closes
    assert state_of(first, ACCOUNT, T0 + 61)["state"] == "half_open"
    assert second.check(IDENTITY, UNLOCK, T0 + 61) is None  # elected at once, not after the lease


def test_a_route_opened_by_the_alarm_pauses_only_that_route(dynamodb: Any) -> None:
    metrics, sender = lambda_guard(), lambda_guard()
    metrics.open(R_PATCH, "alarm: 40 x 403 in 5 min", T0, cooldown_s=300)

    pause = sender.check(IDENTITY, PATCH_USER, T0 + 1)
    assert pause == Pause(R_PATCH, "alarm: 40 x 403 in 5 min", 299)
    assert sender.check(IDENTITY, "GET /users/{id}", T0 + 1) is None
    assert sender.check(IDENTITY, UNLOCK, T0 + 1) is None

    # a 403 probe reopens the route with a doubled cooldown; the account is untouched
    assert sender.check(IDENTITY, PATCH_USER, T0 + 300) is None
    sender.observe(IDENTITY, PATCH_USER, classify_status(403), T0 + 301)
    row = state_of(sender, R_PATCH, T0 + 301)
    assert (row["state"], row["cooldown_s"]) == ("open", 600)
    assert [row["scope"] for row in sender.states(T0 + 301)] == [R_PATCH]
    assert sender.check(IDENTITY, UNLOCK, T0 + 301) is None

    # a 204 probe closes it
    assert sender.check(IDENTITY, PATCH_USER, T0 + 901) is None
    sender.observe(IDENTITY, PATCH_USER, classify_status(204), T0 + 902)
    assert metrics.check(IDENTITY, PATCH_USER, T0 + 903) is None


def test_reset_closes_every_scope(dynamodb: Any) -> None:
    guard = lambda_guard()
    trip_account(guard, T0)
    guard.open(R_PATCH, "alarm", T0)
    guard.open(R_UNLOCK, "alarm", T0)

    closed = guard.reset(None, T0 + 1)

    assert sorted(closed) == sorted([ACCOUNT, R_PATCH, R_UNLOCK])
    assert {row["state"] for row in guard.states(T0 + 1)} == {GuardState.CLOSED.value}
    assert guard.check(IDENTITY, PATCH_USER, T0 + 1) is None
    assert guard.reset(None, T0 + 2) == []
    assert guard.reset(f"{IDENTITY}|GET /never", T0 + 2) == []  # no item is made up for it


def test_cli_status_and_reset(dynamodb: Any, capsys: pytest.CaptureFixture[str]) -> None:
    guard = lambda_guard()
    trip_account(guard, T0)
    guard.open(R_PATCH, "alarm: 403 storm", T0)

    assert main(["guard", "status", "--table", TABLE]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["scope"], row["state"]) for row in rows] == [
        (ACCOUNT, "open"), (R_PATCH, "open"),
    ]
    assert rows[0]["consecutive_401"] == 5
    assert rows[1]["reason"] == "alarm: 403 storm"

    assert main(["guard", "reset", "--scope", R_PATCH, "--table", TABLE]) == 0
    assert json.loads(capsys.readouterr().out) == {"closed": [R_PATCH]}
    assert main(["guard", "reset", "--table", TABLE]) == 0
    assert json.loads(capsys.readouterr().out) == {"closed": [ACCOUNT]}
    assert guard.check(IDENTITY, UNLOCK, T0 + 1) is None

    assert main(["guard", "status", "--table", "no-such-table"]) == 1
    assert "ResourceNotFoundException" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["guard", "reset", "--scope", "users", "--table", TABLE])


def test_check_fails_open_when_dynamodb_throws(
    dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    guard = DynamoGuard(dynamodb, "no-such-table")
    with caplog.at_level(logging.WARNING, logger="kisi_gateway.stores.guard"):
        assert guard.check(IDENTITY, UNLOCK, T0) is None
        guard.observe(IDENTITY, UNLOCK, UNAUTHORIZED, T0)  # logged, not raised
    assert "failing open" in caplog.text
    assert "could not record 401" in caplog.text


def test_check_fails_open_when_dynamodb_is_unreachable(
    dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(connect_timeout=1, retries={"total_max_attempts": 1}),
    )
    guard = DynamoGuard(client, TABLE)
    with caplog.at_level(logging.WARNING, logger="kisi_gateway.stores.guard"):
        assert guard.check(IDENTITY, UNLOCK, T0) is None
    assert "failing open" in caplog.text
