"""The shared send budget in DynamoDB: every Lambda of one Kisi user books its slots here.

The arithmetic is :mod:`kisi_gateway.core.ratelimit`'s; this module keeps its state, one item
per bucket, with optimistic conditional writes (:func:`kisi_gateway.stores.dynamo.conditional`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from kisi_gateway.core.outcome import Outcome, OutcomeClass
from kisi_gateway.core.ratelimit import (
    KISI_USER_RATE,
    REASON_RATE,
    AdaptiveRate,
    BucketState,
    BudgetLimits,
    Grant,
    after_success,
    after_throttle,
    buckets,
    plan_acquire,
    throttle_targets,
)
from kisi_gateway.stores.dynamo import Lost, conditional, n, number, read
from kisi_gateway.stores.ports import UNAVAILABLE_RETRY_S, BudgetUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_LOG = logging.getLogger(__name__)

# Optimistic writes that lose a race re-read and try again this many times in all. Losing five
# times in a row means the bucket is busy: the caller is told to come back one interval later.
MAX_WRITE_ATTEMPTS = 5


Stored = tuple[BucketState, int]  # the state and the item's version
NO_ITEM = 0  # the version of a bucket that has no item yet
UNVERSIONED = -1  # an item without a version (written by hand): matched on its absence


def _next_version(version: int) -> int:
    return max(version, NO_ITEM) + 1


class DynamoSendBudget:
    """A :class:`SendBudget` shared by every Lambda through one DynamoDB table.

    One item per bucket, ``pk`` = the bucket (one per Kisi user) or ``bucket#route_key`` (a
    route with its own rate), holding ``tat``, ``rate``, ``gate_until``, ``lowered_at``,
    ``updated_at`` (numbers) and ``version``. Every write is conditional on the ``version``
    it read (or on the item being absent) and retried with a fresh read when it loses: cheap,
    and no slot is ever booked twice. A version rather than ``tat`` alone, so that a rate
    lowered or a gate closed between the read and the write is never overwritten.

    Calls per acquire in the common case: one consistent GetItem and one UpdateItem. A route
    with its own rate reads two items and books both in one TransactWriteItems, so a slot is
    taken in both buckets or in neither (nothing to give back). A success observed while the
    bucket is at full rate makes no call at all: the rate seen by this process's last read
    decides, and a stale view can only skip an increase, never a decrease. A 429 always reads
    fresh and writes.

    Deleting an item resets its bucket (full rate, gate open): the operator's reset.
    """

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        rate: float = KISI_USER_RATE,
        route_rates: Mapping[str, float] | None = None,
        burst: float = 1.0,
        adaptive: AdaptiveRate | None = None,
        max_attempts: int = MAX_WRITE_ATTEMPTS,
        unavailable_retry_s: float = UNAVAILABLE_RETRY_S,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = client
        self._table = table_name
        self._limits = BudgetLimits(
            rate, dict(route_rates or {}), burst, adaptive or AdaptiveRate()
        )
        self._max_attempts = max_attempts
        self._unavailable_retry_s = unavailable_retry_s
        self._seen: dict[str, Stored] = {}  # last state read or written, per pk

    @staticmethod
    def pk(bucket: str, route_key: str | None = None) -> str:
        """The item key of ``bucket`` (a Kisi user's), or of ``route_key``'s own bucket in it."""
        if not bucket or "#" in bucket:
            raise ValueError("a bucket must be non-empty and contain no '#'")
        return bucket if route_key is None else f"{bucket}#{route_key}"

    def acquire(self, bucket: str, route_key: str, now: float, max_wait_s: float = 0.0) -> Grant:
        """Reserve a slot; raises :class:`BudgetUnavailableError` when DynamoDB fails."""
        limits = self._limits
        route_rate = limits.route_rate(route_key)
        for _ in range(self._max_attempts):
            account, account_version = self._read(self.pk(bucket), limits.rate)
            route: Stored | None = None
            if route_rate is not None:
                route = self._read(self.pk(bucket, route_key), route_rate)
            plan = plan_acquire(
                account,
                route[0] if route is not None else None,
                now=now,
                max_wait_s=max_wait_s,
                burst=limits.burst,
            )
            if not plan.grant.ok or plan.account is None:
                return plan.grant
            writes = [(self.pk(bucket), plan.account, account_version)]
            if route is not None and plan.route is not None:
                writes.append((self.pk(bucket, route_key), plan.route, route[1]))
            if self._write(writes):
                return plan.grant
        # Lost every race: the bucket is busy. Nothing was reserved.
        return Grant(False, 1.0 / limits.rate, REASON_RATE)

    def observe(
        self, bucket: str, route_key: str, outcome: Outcome, retry_after_s: float | None,
        now: float,
    ) -> None:
        """Adapt the rate; never raises.

        Kisi has already answered when this runs; failing here would make the caller mistake
        bookkeeping for a failed send (and, for a create, send twice). A lost update is logged:
        the next 429 lowers the rate again.
        """
        limits = self._limits
        try:
            if outcome.cls is OutcomeClass.RATE_LIMITED:
                for key, configured, close_gate in throttle_targets(limits, route_key):
                    throttled = partial(
                        after_throttle, configured=configured, adaptive=limits.adaptive,
                        now=now, retry_after_s=retry_after_s, close_gate=close_gate,
                    )
                    self._change(self.pk(bucket, key), configured, throttled, seen=None)
            elif outcome.cls is OutcomeClass.SUCCESS:
                for key, configured in buckets(limits, route_key):
                    pk = self.pk(bucket, key)
                    seen = self._seen.get(pk)
                    if seen is not None and seen[0].rate >= configured:
                        continue  # at full rate: nothing to raise, no call
                    raised = partial(
                        after_success, configured=configured, adaptive=limits.adaptive, now=now
                    )
                    self._change(pk, configured, raised, seen=seen)
        except BudgetUnavailableError as exc:
            _LOG.warning("send budget not adapted to %s: %s", outcome.cls.value, exc)

    def _change(
        self,
        pk: str,
        configured: float,
        change: Callable[[BucketState], BucketState | None],
        seen: Stored | None,
    ) -> None:
        """Read (unless ``seen`` is given), change, write conditionally; retry lost races."""
        for _ in range(self._max_attempts):
            state, version = seen if seen is not None else self._read(pk, configured)
            changed = change(state)
            if changed is None:
                return
            if self._write([(pk, changed, version)]):
                return
            seen = None
        raise BudgetUnavailableError(f"bucket kept changing under {self._max_attempts} writes")

    def _unavailable(self, code: str) -> BudgetUnavailableError:
        return BudgetUnavailableError(
            f"send budget table unavailable: {code}", self._unavailable_retry_s
        )

    def _read(self, pk: str, configured: float) -> Stored:
        request = {"TableName": self._table, "Key": {"pk": {"S": pk}}, "ConsistentRead": True}
        item: Mapping[str, Any] | None = read(
            self._client.get_item, request, self._unavailable
        ).get("Item")
        stored = _from_item(item, configured, self._limits.adaptive)
        self._seen[pk] = stored
        return stored

    def _write(self, writes: list[tuple[str, BucketState, int]]) -> bool:
        """Store new states, each only if its item is unchanged since read; all or none.

        ``False`` when another writer changed a bucket first (nothing was written).
        """
        requests = [self._update_request(pk, state, version) for pk, state, version in writes]
        if len(requests) == 1:
            answer = conditional(self._client.update_item, requests[0], self._unavailable)
        else:
            transaction: list[Any] = [{"Update": request} for request in requests]
            answer = conditional(
                self._client.transact_write_items, {"TransactItems": transaction},
                self._unavailable,
            )
        if isinstance(answer, Lost):
            return False
        for pk, state, version in writes:
            self._seen[pk] = (state, _next_version(version))
        return True

    def _update_request(self, pk: str, state: BucketState, version: int) -> dict[str, Any]:
        names = {
            "#tat": "tat",
            "#rate": "rate",
            "#gate": "gate_until",
            "#updated": "updated_at",
            "#version": "version",
        }
        values: dict[str, Any] = {
            ":tat": n(state.tat),
            ":rate": n(state.rate),
            ":gate": n(state.gate_until),
            ":updated": n(state.updated_at),
            ":next": {"N": str(_next_version(version))},
        }
        sets = [
            "#tat = :tat",
            "#rate = :rate",
            "#gate = :gate",
            "#updated = :updated",
            "#version = :next",
        ]
        if state.lowered_at is not None:
            names["#lowered"] = "lowered_at"
            values[":lowered"] = n(state.lowered_at)
            sets.append("#lowered = :lowered")
        if version == NO_ITEM:
            names["#pk"] = "pk"
            condition = "attribute_not_exists(#pk)"
        elif version == UNVERSIONED:
            names["#pk"] = "pk"
            condition = "attribute_exists(#pk) AND attribute_not_exists(#version)"
        else:
            values[":version"] = {"N": str(version)}
            condition = "#version = :version"
        return {
            "TableName": self._table,
            "Key": {"pk": {"S": pk}},
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }



def _from_item(
    item: Mapping[str, Any] | None, configured: float, adaptive: AdaptiveRate
) -> Stored:
    """The state in a stored item; missing or unreadable attributes take their defaults, so an
    item edited by hand degrades to a fresh bucket rather than blocking every send."""
    if not item:
        return BucketState(rate=configured), NO_ITEM
    rate = number(item, "rate")
    version = number(item, "version")
    state = BucketState(
        rate=adaptive.clamp(rate, configured) if rate is not None and rate > 0 else configured,
        tat=number(item, "tat") or 0.0,
        gate_until=number(item, "gate_until") or 0.0,
        lowered_at=number(item, "lowered_at"),
        updated_at=number(item, "updated_at") or 0.0,
    )
    return state, int(version) if version is not None else UNVERSIONED
