"""The life of a request record in one table: state x event -> next state, and the store
condition that guards each transition.

Every writer (api_call, any number of retry workers, duplicate SQS deliveries, a repeat of an
``Idempotency-Key``) says which state it saw and what happened; the store applies the change
only if the stored record still matches the row's condition, so exactly one writer wins each
transition and nothing moves a record that has ended. The table is the only place these rules
are written: :class:`~kisi_gateway.stores.records.DynamoRecordStore` renders a row's condition
as a DynamoDB ``ConditionExpression``, :class:`~kisi_gateway.stores.memory.MemoryRecordStore`
evaluates it with :func:`permits`, and the tests walk every row against both.

========  ===========  ===========  ================================================
state     event        next         condition (besides "the state is still this")
========  ===========  ===========  ================================================
(none)    start        sending      no record with this id (a keyed api_call begins)
(none)    queue        queued       no record with this id (an api_call defers)
sending   take_over    sending      the api_call's lease lapsed (it vanished mid-send)
sending   defer        queued       no attempt recorded since the writer looked
sending   finish       ended        no attempt recorded since the writer looked
sending   withdraw     (deleted)    none: nothing was sent that Kisi may have acted on
queued    claim        queued       attempts unchanged, and attempt n is not claimed or
                                    its claim lapsed (a worker vanished)
queued    reschedule   queued       attempts unchanged (the claimed attempt is recorded)
queued    finish       ended        attempts unchanged
queued    withdraw     (deleted)    no worker ever claimed it (so no message was seen)
ended     (any)        -            none: an ended record never changes
========  ===========  ===========  ================================================

"ended" is succeeded, failed or expired.

>>> row(RecordStatus.QUEUED, Event.CLAIM).condition.attempt_free
True
>>> row(RecordStatus.SUCCEEDED, Event.FINISH) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from kisi_gateway.core.records import (
    TERMINAL,
    AttemptEntry,
    RecordStatus,
    RequestRecord,
    StoredResponse,
)


class Event(StrEnum):
    """What happened to a request."""

    START = "start"  # a call with an Idempotency-Key begins its inline run
    QUEUE = "queue"  # a call without one is handed to the retry queue
    TAKE_OVER = "take_over"  # a repeat of the key finds the first api_call gone
    DEFER = "defer"  # the inline run ran out of time: to the retry queue
    CLAIM = "claim"  # a worker takes the next attempt
    RESCHEDULE = "reschedule"  # that attempt failed retryably: back to the queue
    FINISH = "finish"  # it ended (succeeded, failed or expired), sent or not
    WITHDRAW = "withdraw"  # the api_call failed before anyone acted: forget it


@dataclass(frozen=True, slots=True)
class Condition:
    """What the stored record must look like for a transition to apply."""

    absent: bool = False  # no record with this id exists
    same_attempts: bool = False  # exactly ``Change.done`` attempts are recorded
    lease_lapsed: bool = False  # ``claim_until`` is in the past
    attempt_free: bool = False  # attempt done+1 is not claimed, or its claim lapsed
    never_claimed: bool = False  # no worker ever claimed an attempt


@dataclass(frozen=True, slots=True)
class Row:
    """One allowed transition. ``state`` ``None``: no record yet; ``after`` ``None``: deleted."""

    state: RecordStatus | None
    event: Event
    after: frozenset[RecordStatus] | None
    condition: Condition


_QUEUED = frozenset({RecordStatus.QUEUED})
_SENDING = frozenset({RecordStatus.SENDING})
_UNCHANGED = Condition(same_attempts=True)

LIFE: tuple[Row, ...] = (
    Row(None, Event.START, _SENDING, Condition(absent=True)),
    Row(None, Event.QUEUE, _QUEUED, Condition(absent=True)),
    Row(RecordStatus.SENDING, Event.TAKE_OVER, _SENDING, Condition(lease_lapsed=True)),
    Row(RecordStatus.SENDING, Event.DEFER, _QUEUED, _UNCHANGED),
    Row(RecordStatus.SENDING, Event.FINISH, TERMINAL, _UNCHANGED),
    Row(RecordStatus.SENDING, Event.WITHDRAW, None, Condition()),
    Row(RecordStatus.QUEUED, Event.CLAIM, _QUEUED,
        Condition(same_attempts=True, attempt_free=True)),
    Row(RecordStatus.QUEUED, Event.RESCHEDULE, _QUEUED, _UNCHANGED),
    Row(RecordStatus.QUEUED, Event.FINISH, TERMINAL, _UNCHANGED),
    Row(RecordStatus.QUEUED, Event.WITHDRAW, None, Condition(never_claimed=True)),
)

_BY_KEY: dict[tuple[RecordStatus | None, Event], Row] = {(r.state, r.event): r for r in LIFE}


def row(state: RecordStatus | None, event: Event) -> Row | None:
    """The table's row for ``event`` in ``state``, or ``None`` if it may not happen there."""
    return _BY_KEY.get((state, event))


class TransitionError(ValueError):
    """A change the table does not allow: a bug in the writer, never a race."""


@dataclass(frozen=True, slots=True)
class Change:
    """What a writer wants to happen, and what it saw when it decided.

    ``state`` and ``done`` are the writer's view (the record's status and how many attempts
    it held); the store applies the change only while they still hold. ``lease_until`` is the
    new claim of a ``take_over`` or ``claim``; ``now`` decides whether an old one lapsed.
    """

    event: Event
    state: RecordStatus
    done: int = 0
    status: RecordStatus | None = None  # the state after; None for claim/take_over/withdraw
    entries: tuple[AttemptEntry, ...] = ()
    next_attempt_at: float | None = None
    reason: str | None = None
    response: StoredResponse | None = None
    lease_until: float = 0.0
    now: float = 0.0
    sealed: bytes | None = field(default=None, repr=False)  # a caller's credential, deferred

    @property
    def row(self) -> Row:
        """The row this change follows; raises :class:`TransitionError` if there is none."""
        found = row(self.state, self.event)
        if found is None:
            raise TransitionError(f"no transition {self.event} from {self.state}")
        if found.after is None:
            allowed = self.status is None
        elif self.event in (Event.CLAIM, Event.TAKE_OVER):
            allowed = self.status in (None, self.state)
        else:
            allowed = self.status in found.after
        if not allowed:
            raise TransitionError(f"{self.event} from {self.state} cannot end {self.status}")
        return found

    @property
    def claimed_attempt(self) -> int:
        """The attempt number a ``claim`` takes: the next one."""
        return self.done + 1


def permits(record: RequestRecord | None, change: Change) -> bool:
    """Does the stored ``record`` (``None``: absent) still admit ``change``?"""
    condition = change.row.condition
    if condition.absent or record is None:
        return condition.absent and record is None
    if record.status is not change.state:
        return False
    if condition.same_attempts and record.attempt_count != change.done:
        return False
    if condition.lease_lapsed and not record.claim_until < change.now:
        return False
    if condition.attempt_free and not (
        record.claimed_attempt < change.claimed_attempt or record.claim_until < change.now
    ):
        return False
    return not (condition.never_claimed and record.claimed_attempt != 0)


def applied(record: RequestRecord, change: Change) -> RequestRecord | None:
    """The record after ``change`` (``None`` once withdrawn): what every store writes."""
    event = change.row.event
    if event is Event.WITHDRAW:
        return None
    if event is Event.TAKE_OVER:
        return replace(record, claim_until=change.lease_until)
    if event is Event.CLAIM:
        return replace(record, claimed_attempt=change.claimed_attempt,
                       claim_until=change.lease_until)
    assert change.status is not None  # checked by Change.row
    return replace(
        record,
        status=change.status,
        attempts=record.attempts + change.entries,
        next_attempt_at=change.next_attempt_at,
        reason=change.reason,
        response=change.response if change.response is not None else record.response,
        claim_until=0.0,
        # A caller's sealed credential lives exactly as long as its request.
        sealed=None if change.status in TERMINAL else (change.sealed or record.sealed),
    )


def created_by(record: RequestRecord) -> Event:
    """The event that writes a new ``record``: ``start`` (sending) or ``queue`` (queued)."""
    if record.status is RecordStatus.SENDING:
        return Event.START
    if record.status is RecordStatus.QUEUED:
        return Event.QUEUE
    raise TransitionError(f"a record cannot be created {record.status}")
