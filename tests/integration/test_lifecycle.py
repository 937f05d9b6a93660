"""The record's life table, walked row by row against both record stores.

For every row of :data:`kisi_gateway.core.lifecycle.LIFE`: the change applies from its state
(and writes exactly what :func:`lifecycle.applied` says), and the same change is refused from
every other state. Then each extra condition is broken on purpose and must refuse the write:
an attempt recorded meanwhile, a lease still running, an attempt already claimed, a worker that
already claimed. The DynamoDB store renders the same table as ConditionExpressions, on moto.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kisi_gateway.core.lifecycle import (
    LIFE,
    Change,
    Event,
    Row,
    TransitionError,
    applied,
    permits,
)
from kisi_gateway.core.records import (
    TERMINAL,
    AttemptEntry,
    RecordStatus,
    RequestRecord,
    StoredResponse,
)
from kisi_gateway.stores.memory import MemoryRecordStore
from kisi_gateway.stores.ports import RecordStore
from kisi_gateway.stores.records import DynamoRecordStore
from tests.harness import aws_env, create_hash_table

NOW = 1_800_000_000.0
ALL_STATES = [*RecordStatus]
ENTRY = AttemptEntry(NOW, "server_error", 503, 2)


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryRecordStore()
        return
    aws_env(monkeypatch)
    with mock_aws():
        client = boto3.client("dynamodb")
        create_hash_table(client, "requests", "request_id")
        yield DynamoRecordStore(client, "requests")


def stored(status: RecordStatus, **extra: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "request_id": "r1", "status": status, "method": "GET", "path": "/locks/1",
        "route": "GET /locks/{id}", "policy": "read", "created_at": NOW - 10,
        "deadline": NOW + 3600, "expires_at": int(NOW + 86_400),
        "attempts": (AttemptEntry(NOW - 5, "server_error", 503, 2),), "claim_until": NOW - 1,
        "claimed_attempt": 1, "scope": "s", "fields_hash": "h",
    }
    fields.update(extra)
    return RequestRecord(**fields)


def put(store: RecordStore, record: RequestRecord) -> None:
    """Any record, in any state: through ``create`` and then, for the others, the table."""
    if record.status in (RecordStatus.SENDING, RecordStatus.QUEUED):
        assert store.create(record)
        return
    assert store.create(replace(record, status=RecordStatus.QUEUED))
    done = store.apply(record.request_id, Change(
        Event.FINISH, state=RecordStatus.QUEUED, done=record.attempt_count,
        status=record.status, reason="why"))
    assert done is not None


def change_for(row: Row) -> Change:
    """A change that satisfies ``row``'s conditions against :func:`stored`'s record."""
    after = None if row.after is None else sorted(row.after)[0]
    if row.event in (Event.CLAIM, Event.TAKE_OVER):
        after = None
    return Change(
        row.event, state=row.state or RecordStatus.QUEUED, done=1, status=after,
        entries=(ENTRY,) if row.event in (Event.DEFER, Event.RESCHEDULE, Event.FINISH) else (),
        next_attempt_at=NOW + 2 if after is RecordStatus.QUEUED else None,
        reason="attempts_exhausted" if after in TERMINAL else None,
        response=StoredResponse(503, {"retry-after": "1"}, b"{}") if after in TERMINAL else None,
        lease_until=NOW + 60, now=NOW,
    )


UPDATE_ROWS = [row for row in LIFE if row.state is not None]


@pytest.mark.parametrize("row", UPDATE_ROWS, ids=lambda r: f"{r.state}-{r.event}")
def test_each_row_applies_from_its_state(store: RecordStore, row: Row) -> None:
    assert row.state is not None
    extra = {"claimed_attempt": 0} if row.event is Event.WITHDRAW else {}
    before = stored(row.state, **extra)
    put(store, before)
    change = change_for(row)

    result = store.apply("r1", change)

    assert result is not None
    assert result.before == before
    assert result.after == applied(before, change)
    assert store.get("r1") == result.after  # what the store holds is what the table says
    if row.after is None:
        assert store.get("r1") is None
    else:
        assert result.after is not None
        assert result.after.status in row.after


@pytest.mark.parametrize("row", UPDATE_ROWS, ids=lambda r: f"{r.state}-{r.event}")
def test_no_update_applies_to_a_record_that_is_not_there(row: Row) -> None:
    assert permits(None, change_for(row)) is False


KEPT_ROWS = [row for row in UPDATE_ROWS if row.event is not Event.WITHDRAW]


@pytest.mark.parametrize("row", KEPT_ROWS, ids=lambda r: f"{r.state}-{r.event}")
def test_a_change_without_an_answer_keeps_the_one_recorded(store: RecordStore, row: Row) -> None:
    assert row.state is not None
    earlier = StoredResponse(503, {"retry-after": "1"}, b"{}")
    before = stored(row.state, response=earlier)
    put(store, before)
    change = replace(change_for(row), response=None)

    result = store.apply("r1", change)

    assert result is not None
    assert result.after == applied(before, change)
    assert result.after is not None
    assert result.after.response == earlier


@pytest.mark.parametrize("row", UPDATE_ROWS, ids=lambda r: f"{r.state}-{r.event}")
@pytest.mark.parametrize("other", ALL_STATES)
def test_each_row_is_refused_from_every_other_state(
    store: RecordStore, row: Row, other: RecordStatus
) -> None:
    if other is row.state:
        return
    put(store, stored(other, claimed_attempt=0))
    kept = store.get("r1")

    assert store.apply("r1", change_for(row)) is None
    assert store.get("r1") == kept


@pytest.mark.parametrize(
    ("state", "event", "breaks"),
    [
        # someone recorded an attempt since the writer looked
        (RecordStatus.SENDING, Event.DEFER, {"attempts": ()}),
        (RecordStatus.SENDING, Event.FINISH, {"attempts": ()}),
        (RecordStatus.QUEUED, Event.RESCHEDULE, {"attempts": (ENTRY, ENTRY)}),
        (RecordStatus.QUEUED, Event.FINISH, {"attempts": (ENTRY, ENTRY)}),
        (RecordStatus.QUEUED, Event.CLAIM, {"attempts": ()}),
        # the first api_call's lease still runs (to its last instant)
        (RecordStatus.SENDING, Event.TAKE_OVER, {"claim_until": NOW}),
        # attempt 2 is claimed by a worker whose lease still runs (to its last instant)
        (RecordStatus.QUEUED, Event.CLAIM, {"claimed_attempt": 2, "claim_until": NOW + 1}),
        (RecordStatus.QUEUED, Event.CLAIM, {"claimed_attempt": 2, "claim_until": NOW}),
        # a worker has claimed it: a message was seen, the request is not the api_call's
        (RecordStatus.QUEUED, Event.WITHDRAW, {"claimed_attempt": 1}),
    ],
)
def test_a_broken_condition_refuses_the_write(
    store: RecordStore, state: RecordStatus, event: Event, breaks: dict[str, Any]
) -> None:
    put(store, stored(state, **breaks))
    row = next(r for r in LIFE if r.state is state and r.event is event)
    assert store.apply("r1", change_for(row)) is None


def test_a_lapsed_claim_of_the_same_attempt_can_be_taken_and_says_so(store: RecordStore) -> None:
    """A worker that vanished with attempt 2: the next one takes it and can tell."""
    put(store, stored(RecordStatus.QUEUED, claimed_attempt=2, claim_until=NOW - 0.001))
    row = next(r for r in LIFE if r.event is Event.CLAIM)
    result = store.apply("r1", change_for(row))
    assert result is not None
    assert result.after is not None
    assert result.before.claimed_attempt == result.after.claimed_attempt == 2


@pytest.mark.parametrize("status", [RecordStatus.SENDING, RecordStatus.QUEUED])
def test_creation_happens_once(store: RecordStore, status: RecordStatus) -> None:
    assert store.create(stored(status))
    assert not store.create(stored(status, path="/locks/2"))
    assert store.get("r1") == stored(status)


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_an_ended_record_cannot_be_created(store: RecordStore, status: RecordStatus) -> None:
    with pytest.raises(TransitionError):
        store.create(stored(status))


@pytest.mark.parametrize(
    "change",
    [
        Change(Event.FINISH, state=RecordStatus.QUEUED, status=RecordStatus.QUEUED),
        Change(Event.DEFER, state=RecordStatus.QUEUED, status=RecordStatus.QUEUED),
        Change(Event.CLAIM, state=RecordStatus.SUCCEEDED),
        Change(Event.WITHDRAW, state=RecordStatus.QUEUED, status=RecordStatus.QUEUED),
    ],
)
def test_a_change_the_table_does_not_have_is_a_bug_not_a_race(
    store: RecordStore, change: Change
) -> None:
    put(store, stored(RecordStatus.QUEUED))
    with pytest.raises(TransitionError):
        store.apply("r1", change)
