"""The shared send budget in DynamoDB: every Lambda of one Kisi user books its slots here.

The arithmetic is :mod:`kisi_gateway.core.ratelimit`'s; this module keeps its state, one item
per bucket, with optimistic conditional writes (:func:`kisi_gateway.stores.dynamo.conditional`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from kisi_gateway.core.outcome import Outcome, OutcomeClass
from kisi_gateway.core.ratelimit import (
    ANYONE,
    KISI_USER_RATE,
    REASON_BUSY,
    Booking,
    BucketState,
    BudgetLimits,
    Grant,
    after_throttle,
    plan_acquire,
    throttle_targets,
)
from kisi_gateway.stores.dynamo import Expression, Lost, conditional, n, number, read
from kisi_gateway.stores.ports import UNAVAILABLE_RETRY_S, BudgetUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_LOG = logging.getLogger(__name__)

# Optimistic writes that lose a race try again with what beat them this many times in all.
# Losing five times in a row means the bucket is busy: the caller is told to come back after
# a random pause of up to two intervals (``busy``), which costs it none of its asks.
MAX_WRITE_ATTEMPTS = 5


Stored = tuple[BucketState, int]  # the state and the item's version
NO_ITEM = 0  # the version of a bucket that has no item yet
UNVERSIONED = -1  # an item without a version (written by hand): matched on its absence
# The bucket's number attributes besides ``version``: stored when set, removed when not.
_NUMBERS = ("tat", "rate", "gate_until", "updated_at", "lowered_at", "peak", "strikes",
            "struck_at", "reserved_at", "priority_at", "pressed_until")


def _next_version(version: int) -> int:
    return max(version, NO_ITEM) + 1


class DynamoSendBudget:
    """A :class:`SendBudget` shared by every Lambda through one DynamoDB table.

    One item per bucket, ``pk`` = the bucket (one per Kisi user) or ``bucket#route_key`` (a
    route with its own rate), holding the :class:`BucketState` numbers, its ``holes`` (a list)
    and ``held`` (a map, holder -> end of its backlog), and ``version``. Every write is
    conditional on the ``version`` it planned from (or on the item being absent), so no slot
    is ever booked twice and a rate lowered or a gate closed meanwhile is never overwritten.

    One round trip per acquire on the happy path: the plan is made from this process's last
    view of the bucket and written conditionally; when another Lambda changed the bucket
    first, the failed write returns the item as it is now
    (``ReturnValuesOnConditionCheckFailure``), and the next try plans from that, still without
    a read. A refusal planned from an old view is checked with one fresh read (the truth can
    only be better after an operator's reset). A route with its own rate reads both items and
    books both in one TransactWriteItems, so a slot is taken in both buckets or in neither.
    A success makes no call: the rate recovers as a function of time. A 429 reads fresh and
    writes. Deleting an item resets its bucket (full rate, gate open): the operator's reset.
    """

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        rate: float = KISI_USER_RATE,
        route_rates: Mapping[str, float] | None = None,
        burst: float = 1.0,
        limits: BudgetLimits | None = None,
        max_attempts: int = MAX_WRITE_ATTEMPTS,
        unavailable_retry_s: float = UNAVAILABLE_RETRY_S,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = client
        self._table = table_name
        self._limits = limits or BudgetLimits(rate, dict(route_rates or {}), burst)
        self._max_attempts = max_attempts
        self._unavailable_retry_s = unavailable_retry_s
        self._rng = rng  # spreads the losers of a race apart (tests inject their own)
        self._seen: dict[str, Stored] = {}  # last state read or written, per pk

    @staticmethod
    def pk(bucket: str, route_key: str | None = None) -> str:
        """The item key of ``bucket`` (a Kisi user's), or of ``route_key``'s own bucket in it."""
        if not bucket or "#" in bucket:
            raise ValueError("a bucket must be non-empty and contain no '#'")
        return bucket if route_key is None else f"{bucket}#{route_key}"

    def acquire(
        self, bucket: str, route_key: str, now: float, max_wait_s: float = 0.0,
        booking: Booking = ANYONE,
    ) -> Grant:
        """Reserve a slot; raises :class:`BudgetUnavailableError` when DynamoDB fails."""
        limits = self._limits
        route_rate = limits.route_rate(route_key)
        account_pk = self.pk(bucket)
        route_pk = self.pk(bucket, route_key) if route_rate is not None else None
        fresh = False
        for _ in range(self._max_attempts):
            if route_pk is not None and route_rate is not None:
                account, route = self._read(account_pk, limits.rate), self._read(
                    route_pk, route_rate)
                fresh = True
            else:
                seen = self._seen.get(account_pk)
                account = seen if seen is not None else (limits.fresh(limits.rate), NO_ITEM)
                route = None
            plan = plan_acquire(
                limits, account[0], route[0] if route is not None else None, now=now,
                max_wait_s=max_wait_s, route_rate=route_rate, booking=booking,
            )
            if not plan.grant.ok or plan.account is None:
                if not fresh:
                    self._read(account_pk, limits.rate)  # refused from an old view: check
                    fresh = True
                    continue
                if plan.account is not None:  # a priority request's pressure: best effort
                    self._write([(account_pk, plan.account, account[1])])
                return plan.grant
            writes = [(account_pk, plan.account, account[1])]
            if route is not None and route_pk is not None and plan.route is not None:
                writes.append((route_pk, plan.route, route[1]))
            if self._write(writes):
                return plan.grant
            fresh = True  # what beat us is now in _seen (or will be read)
        # Lost every race: the bucket is busy. Nothing was reserved; come back at a random
        # moment within two intervals, so that this round's losers do not race again in step.
        return Grant(False, 2.0 * self._rng() / limits.rate, REASON_BUSY)

    def observe(
        self, bucket: str, route_key: str, outcome: Outcome, retry_after_s: float | None,
        now: float,
    ) -> None:
        """Adapt to a 429; never raises. Other outcomes change nothing (and cost no call).

        Kisi has already answered when this runs; failing here would make the caller mistake
        bookkeeping for a failed send (and, for a create, send twice). A lost update is logged:
        the next 429 counts again.
        """
        if outcome.cls is not OutcomeClass.RATE_LIMITED:
            return
        limits = self._limits
        try:
            for key, configured, close_gate in throttle_targets(limits, route_key):
                throttled = partial(
                    after_throttle, configured=configured, limits=limits, now=now,
                    retry_after_s=retry_after_s, close_gate=close_gate,
                )
                self._change(self.pk(bucket, key), configured, throttled)
        except BudgetUnavailableError as exc:
            _LOG.warning("send budget not adapted to %s: %s", outcome.cls.value, exc)

    def _change(
        self, pk: str, configured: float, change: Callable[[BucketState], BucketState]
    ) -> None:
        """Read, change, write conditionally; a lost race retries from what beat it."""
        stored = self._read(pk, configured)
        for _ in range(self._max_attempts):
            if self._write([(pk, change(stored[0]), stored[1])]):
                return
            stored = self._seen.get(pk) or self._read(pk, configured)
        raise BudgetUnavailableError(f"bucket kept changing under {self._max_attempts} writes")

    def _holds(self, pk: str, version: int) -> BucketState | None:
        """The state item ``pk`` holds at ``version``, if this process wrote it or read it
        (a read's view is normalised, which reads of the item repeat)."""
        seen = self._seen.get(pk)
        if seen is None or seen[1] != version or version in (NO_ITEM, UNVERSIONED):
            return None
        return seen[0]

    def _unavailable(self, code: str) -> BudgetUnavailableError:
        return BudgetUnavailableError(
            f"send budget table unavailable: {code}", self._unavailable_retry_s
        )

    def _configured(self, pk: str) -> float:
        route_key = pk.partition("#")[2]
        route_rate = self._limits.route_rate(route_key) if route_key else None
        return route_rate if route_rate is not None else self._limits.rate

    def _read(self, pk: str, configured: float) -> Stored:
        request = {"TableName": self._table, "Key": {"pk": {"S": pk}}, "ConsistentRead": True}
        item: Mapping[str, Any] | None = read(
            self._client.get_item, request, self._unavailable
        ).get("Item")
        stored = _from_item(item, configured, self._limits)
        self._seen[pk] = stored
        return stored

    def _write(self, writes: list[tuple[str, BucketState, int]]) -> bool:
        """Store new states, each only if its item is unchanged since planned; all or none.

        ``False`` when another writer changed a bucket first (nothing was written); the
        winner's item, when DynamoDB returns it, replaces this process's view.
        """
        requests = [_update_request(self._table, pk, state, version, self._holds(pk, version))
                    for pk, state, version in writes]
        if len(requests) == 1:
            answer = conditional(self._client.update_item, requests[0], self._unavailable)
        else:
            for request in requests:
                del request["ReturnValues"]  # not part of a transaction's Update
            transaction: list[Any] = [{"Update": request} for request in requests]
            answer = conditional(
                self._client.transact_write_items, {"TransactItems": transaction},
                self._unavailable,
            )
        if isinstance(answer, Lost):
            for pk, _, _ in writes:
                self._seen.pop(pk, None)
            if answer.item is not None and len(writes) == 1:
                pk = writes[0][0]
                self._seen[pk] = _from_item(answer.item, self._configured(pk), self._limits)
            return False
        for pk, state, version in writes:
            self._seen[pk] = (state, _next_version(version))
        return True


def _update_request(
    table: str, pk: str, state: BucketState, version: int, before: BucketState | None = None
) -> dict[str, Any]:
    """A conditional UpdateItem storing ``state`` over ``version``. ``before``: the state the
    item holds at ``version``, when known; then only what differs is written (the condition
    makes sure the item is still that one), which keeps a send's one write small."""
    expr = Expression()
    for attr in _NUMBERS:
        value = getattr(state, attr)
        if before is None or getattr(before, attr) != value:
            expr.set_or_remove(attr, n(value) if value is not None else None)
    if before is None or before.holes != state.holes:
        if state.holes:
            expr.set("holes", {"L": [n(hole) for hole in state.holes]})
        else:
            expr.removes.append(expr.name("holes"))
    if before is None or before.held != state.held:
        if state.held:
            expr.set("held", {"M": {holder: n(end) for holder, end in state.held}})
        else:
            expr.removes.append(expr.name("held"))
    expr.set("version", {"N": str(_next_version(version))})
    if version == NO_ITEM:
        condition = f"attribute_not_exists({expr.name('pk')})"
    elif version == UNVERSIONED:
        condition = (f"attribute_exists({expr.name('pk')})"
                     f" AND attribute_not_exists({expr.name('version')})")
    else:
        condition = f"{expr.name('version')} = {expr.value('expected', {'N': str(version)})}"
    return expr.update(table, {"pk": {"S": pk}}, condition, return_values="NONE")


def _from_item(item: Mapping[str, Any] | None, configured: float, limits: BudgetLimits
               ) -> Stored:
    """The state in a stored item; missing or unreadable attributes take their defaults, so an
    item edited by hand degrades to a fresh bucket rather than blocking every send."""
    if not item:
        return limits.fresh(configured), NO_ITEM
    rate = number(item, "rate")
    version = number(item, "version")
    peak = number(item, "peak")
    state = BucketState(
        rate=limits.control.clamp(rate, configured) if rate is not None and rate > 0
        else configured,
        tat=number(item, "tat") or 0.0,
        gate_until=number(item, "gate_until") or 0.0,
        lowered_at=number(item, "lowered_at"),
        updated_at=number(item, "updated_at") or 0.0,
        peak=peak if peak is not None and peak > 0 else None,
        strikes=int(number(item, "strikes") or 0),
        struck_at=number(item, "struck_at"),
        holes=tuple(sorted(_numbers(item.get("holes"), "L"))),
        reserved_at=number(item, "reserved_at") or 0.0,
        priority_at=number(item, "priority_at"),
        held=tuple(sorted(_held(item.get("held")))),
        pressed_until=number(item, "pressed_until") or 0.0,
    )
    return state, int(version) if version is not None else UNVERSIONED


def _numbers(raw: object, kind: str) -> list[float]:
    if not isinstance(raw, Mapping) or not isinstance(raw.get(kind), list):
        return []
    values = [number({"v": entry}, "v") for entry in raw[kind]]
    return [value for value in values if value is not None]


def _held(raw: object) -> list[tuple[str, float]]:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("M"), Mapping):
        return []
    found = [(str(holder), number({"v": end}, "v")) for holder, end in raw["M"].items()]
    return [(holder, end) for holder, end in found if end is not None]
