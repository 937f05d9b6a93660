"""The shared send budget: every Lambda using one Kisi user stays under that user's rate limit.

Kisi allows 5 requests per second per user, shared by all of that user's keys, and less on some
routes (``POST /event_sets`` 1/s, ``POST /signed_upload_urls`` 1 per 10 s; KISI_API.md "Rate
limits"). Every 429 counts against the account as a failed request, so the gateway spends its
effort on sending at the right rate rather than on retrying fast.

The algorithm is GCRA (the "virtual scheduling" form of a token bucket) with reservations. A
bucket holds one number, the theoretical arrival time ``tat``: the earliest moment the next
request may go out. A caller that can wait reserves a slot in the future instead of polling, so
callers queue in slot order and Kisi sees evenly spaced requests however many Lambdas run. The
arithmetic is pure (:func:`plan_acquire`, :func:`after_throttle`, :func:`after_success`,
:class:`AdaptiveRate`) and takes ``now`` as an argument; two adapters keep the state:
:class:`DynamoSendBudget` (one DynamoDB item per bucket, optimistic concurrency) and
:class:`InMemorySendBudget` (a lock, for tests and the benchmark simulation).

>>> budget = InMemorySendBudget(rate=5.0)
>>> budget.acquire("GET /locks", now=0.0)
Grant(ok=True, wait_s=0.0, reason='')
>>> budget.acquire("GET /locks", now=0.0)
Grant(ok=False, wait_s=0.2, reason='rate')
>>> budget.acquire("GET /locks", now=0.0, max_wait_s=1.0)
Grant(ok=True, wait_s=0.2, reason='')
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from kisi_gateway.core.outcome import Outcome, OutcomeClass

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_LOG = logging.getLogger(__name__)

# Kisi: 5 requests per second per user, all of that user's logins together.
KISI_USER_RATE = 5.0
# A slot this close past the caller's allowance still counts as within it: clocks are not that
# precise, and float sums of intervals (0.2 + 0.2 + 0.2 ...) drift by far less.
SLOT_TOLERANCE_S = 1e-6
# Optimistic writes that lose a race re-read and try again this many times in all. Losing five
# times in a row means the bucket is busy: the caller is told to come back one interval later.
MAX_WRITE_ATTEMPTS = 5
# How long a caller should wait when the budget's store cannot be reached (fail closed).
UNAVAILABLE_RETRY_S = 1.0

# Reasons of a refused grant.
REASON_RATE = "rate"
REASON_GATE = "gate"


@dataclass(frozen=True, slots=True)
class Grant:
    """The budget's answer to one caller.

    ``ok``: a slot was reserved; the caller must send ``wait_s`` seconds from ``now`` (0 means
    at once) and not before. Not ok: nothing was reserved; try again after about ``wait_s``
    seconds. ``reason`` says why not: ``"rate"`` (the next free slot is further away than the
    caller would wait) or ``"gate"`` (Kisi sent a ``Retry-After`` that has not passed yet).
    """

    ok: bool
    wait_s: float
    reason: str = ""


class BudgetUnavailableError(Exception):
    """The budget's store could not be read or written: do not send, try again shortly.

    The budget fails closed. Sending without it, every Lambda would send at its own full rate
    exactly when the fleet can no longer coordinate, and each resulting 429 counts against the
    account. The caller answers 503 with ``Retry-After`` or requeues the request; nothing was
    sent and no attempt is spent.
    """

    def __init__(self, message: str, retry_after_s: float = UNAVAILABLE_RETRY_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SendBudget(Protocol):
    """The port the request pipeline uses: ask before sending, report what Kisi answered."""

    def acquire(self, route_key: str, now: float, max_wait_s: float = 0.0) -> Grant:
        """Reserve a slot for one request to ``route_key`` (``"POST /event_sets"``)."""
        ...

    def observe(
        self, route_key: str, outcome: Outcome, retry_after_s: float | None, now: float
    ) -> None:
        """Adapt to what Kisi answered: a 429 slows the bucket, a success speeds it up."""
        ...


def bucket_id_for_key(api_key: str) -> str:
    """The budget bucket of a Kisi API key: a hash, so the key itself is never stored.

    Kisi's quota is per user; where the user behind a key is unknown the key stands in for it.
    The hash is domain-separated, so it matches no other use of the key's SHA-256.

    >>> bucket_id_for_key("secret")
    'key-60db6ed9d903cd9be03ef2b0afd09ce4'
    """
    if not api_key:
        raise ValueError("api_key must not be empty")
    digest = hashlib.sha256(b"kisi-gateway/send-budget\x00" + api_key.encode()).hexdigest()
    return f"key-{digest[:32]}"  # 128 bits: collisions are not a concern at any fleet size


# --- pure arithmetic ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdaptiveRate:
    """AIMD on a bucket's rate, in the spirit of botocore's adaptive retry mode.

    A 429 multiplies the rate by ``decrease_factor``, never below ``floor_fraction`` of the
    configured rate (a trickle must go on, or no success could ever prove Kisi recovered). 429s
    within ``cooldown_s`` of the last decrease do not decrease again: requests already on the
    wire at the old rate report the same overload, and Kisi's limits are per second. Each
    success adds ``increase_fraction`` of the configured rate, up to the configured rate.

    AIMD rather than CUBIC: the ceiling is known (Kisi documents it), so there is no unknown
    capacity to probe for, and additive steps per success give exact, reviewable sequences.
    With 5/s: 429 -> 2.5; 429 a second later -> 1.25; then -> 1.0 (floor); 16 successes back
    to 5.0.
    """

    decrease_factor: float = 0.5
    floor_fraction: float = 0.2
    increase_fraction: float = 0.05
    cooldown_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.decrease_factor < 1:
            raise ValueError("decrease_factor must be between 0 and 1")
        if not 0 < self.floor_fraction <= 1:
            raise ValueError("floor_fraction must be in (0, 1]")
        if not self.increase_fraction > 0:
            raise ValueError("increase_fraction must be positive")
        if not self.cooldown_s >= 0:
            raise ValueError("cooldown_s must not be negative")

    def floor(self, configured: float) -> float:
        return configured * self.floor_fraction

    def lowered(
        self, rate: float, configured: float, lowered_at: float | None, now: float
    ) -> tuple[float, float | None]:
        """The rate after a 429 at ``now``, and when it was last lowered.

        >>> AdaptiveRate().lowered(5.0, 5.0, None, now=10.0)
        (2.5, 10.0)
        >>> AdaptiveRate().lowered(2.5, 5.0, 10.0, now=10.5)  # same overload, already counted
        (2.5, 10.0)
        """
        if lowered_at is not None and now - lowered_at < self.cooldown_s:
            return rate, lowered_at
        return max(rate * self.decrease_factor, self.floor(configured)), now

    def raised(self, rate: float, configured: float) -> float:
        """The rate after a success.

        >>> AdaptiveRate().raised(1.0, 5.0)
        1.25
        """
        return min(rate + configured * self.increase_fraction, configured)

    def clamp(self, rate: float, configured: float) -> float:
        """A stored rate kept within today's configuration (it may have changed since)."""
        return min(max(rate, self.floor(configured)), configured)


@dataclass(frozen=True, slots=True)
class BucketState:
    """One bucket: ``tat`` (theoretical arrival time of the next request), the current
    ``rate`` (requests per second, adapted), ``gate_until`` (no request before this; set from a
    ``Retry-After``), ``lowered_at`` (last decrease, for the cooldown) and ``updated_at``."""

    rate: float
    tat: float = 0.0
    gate_until: float = 0.0
    lowered_at: float | None = None
    updated_at: float = 0.0

    @property
    def interval(self) -> float:
        """Seconds between two requests at the current rate."""
        return 1.0 / self.rate


def earliest_slot(state: BucketState, now: float, burst: float = 1.0) -> float:
    """The earliest moment a request arriving at ``now`` may be sent.

    ``burst`` requests may go back to back (GCRA's tolerance ``(burst - 1) * interval``); with
    the default of 1, requests are spaced exactly one interval apart, as Kisi advises.

    >>> earliest_slot(BucketState(rate=5.0, tat=10.4), now=10.0)
    10.4
    >>> earliest_slot(BucketState(rate=5.0, tat=10.4), now=10.0, burst=3.0)
    10.0
    """
    return max(now, state.tat - (burst - 1.0) * state.interval)


def reserve(state: BucketState, slot: float, now: float) -> BucketState:
    """The bucket once a request is booked at ``slot``: the next one is an interval later.

    >>> reserve(BucketState(rate=5.0, tat=10.0), slot=10.0, now=9.0).tat
    10.2
    """
    return replace(state, tat=max(state.tat, slot) + state.interval, updated_at=now)


@dataclass(frozen=True, slots=True)
class Plan:
    """What :func:`plan_acquire` decided: the grant, and the states to store if it is ok."""

    grant: Grant
    account: BucketState | None = None
    route: BucketState | None = None


def plan_acquire(
    account: BucketState,
    route: BucketState | None,
    *,
    now: float,
    max_wait_s: float,
    burst: float = 1.0,
) -> Plan:
    """Decide one acquisition against the account bucket and, if the route has its own rate,
    the route bucket.

    The request goes out at one moment, so it takes the *same* slot in both buckets: the later
    of the two earliest slots. (Booking each bucket at its own earliest slot and sending at the
    later one would break the account's spacing.) A slot later than the account's own earliest
    one leaves a hole in the account's line that nobody else can use, because GCRA keeps a
    single ``tat``; so a route-limited request may keep the account waiting at most one account
    interval, and is otherwise told to come back when its route is free. Unlocks never queue
    behind a slow route.

    ``burst`` applies to the account only: a route limit such as "1 per second" forbids two
    requests in the same second, which is exactly what a burst would send.

    >>> plan_acquire(BucketState(rate=5.0), None, now=1.0, max_wait_s=0.0).grant
    Grant(ok=True, wait_s=0.0, reason='')
    """
    gate = max(account.gate_until, route.gate_until if route is not None else 0.0)
    if gate > now:
        return Plan(Grant(False, gate - now, REASON_GATE))
    account_slot = earliest_slot(account, now, burst)
    slot = account_slot
    if route is not None:
        slot = max(slot, earliest_slot(route, now))
    wait = slot - now
    if wait > max_wait_s + SLOT_TOLERANCE_S:
        return Plan(Grant(False, wait, REASON_RATE))
    if slot - account_slot > account.interval + SLOT_TOLERANCE_S:
        return Plan(Grant(False, wait, REASON_RATE))
    return Plan(
        Grant(True, wait),
        account=reserve(account, slot, now),
        route=reserve(route, slot, now) if route is not None else None,
    )


def after_throttle(
    state: BucketState,
    configured: float,
    adaptive: AdaptiveRate,
    *,
    now: float,
    retry_after_s: float | None,
    close_gate: bool,
) -> BucketState:
    """The bucket after Kisi answered 429 at ``now``.

    The rate is lowered (:meth:`AdaptiveRate.lowered`); the next new slot is at least one
    (lowered) interval away, since the 429 says the line was already too full; with a
    ``Retry-After`` and ``close_gate``, nobody may send before ``now + retry_after_s``.
    Slots already granted stand: their holders may be sending right now.

    >>> after_throttle(BucketState(rate=5.0, tat=9.0), 5.0, AdaptiveRate(), now=10.0,
    ...                retry_after_s=3.0, close_gate=True)
    BucketState(rate=2.5, tat=10.4, gate_until=13.0, lowered_at=10.0, updated_at=10.0)
    """
    rate, lowered_at = adaptive.lowered(state.rate, configured, state.lowered_at, now)
    gate_until = state.gate_until
    if close_gate and retry_after_s is not None and retry_after_s > 0:
        gate_until = max(gate_until, now + retry_after_s)
    return BucketState(
        rate=rate,
        tat=max(state.tat, now + 1.0 / rate),
        gate_until=gate_until,
        lowered_at=lowered_at,
        updated_at=now,
    )


def after_success(
    state: BucketState, configured: float, adaptive: AdaptiveRate, *, now: float
) -> BucketState | None:
    """The bucket after a success, or ``None`` when nothing changes (already at full rate).

    >>> after_success(BucketState(rate=5.0), 5.0, AdaptiveRate(), now=1.0) is None
    True
    >>> after_success(BucketState(rate=2.5), 5.0, AdaptiveRate(), now=1.0).rate
    2.75
    """
    if state.rate >= configured:
        return None
    return replace(state, rate=adaptive.raised(state.rate, configured), updated_at=now)


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """The configured rates: the account's, and the routes that have a stricter one of their
    own (``{"POST /event_sets": 1.0}``; ``config.Settings.rates()`` supplies Kisi's)."""

    rate: float = KISI_USER_RATE
    route_rates: Mapping[str, float] = field(default_factory=dict)
    burst: float = 1.0
    adaptive: AdaptiveRate = field(default_factory=AdaptiveRate)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError("rate must be a positive number")
        for route_key, rate in self.route_rates.items():
            if not (math.isfinite(rate) and rate > 0):
                raise ValueError(f"rate of {route_key!r} must be a positive number")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError("burst must be at least 1")

    def route_rate(self, route_key: str) -> float | None:
        return self.route_rates.get(route_key)

    def fresh(self, configured: float) -> BucketState:
        """A bucket nobody has used yet: full rate, free now."""
        return BucketState(rate=configured)


def _throttle_targets(
    limits: BudgetLimits, route_key: str
) -> list[tuple[str | None, float, bool]]:
    """Which buckets a 429 on ``route_key`` slows, and which one its ``Retry-After`` closes.

    Kisi's 429 does not say which limit was hit, so every bucket the request used is slowed
    (each 429 counts against the account, so err towards slower). The ``Retry-After`` closes
    only the narrowest bucket: on a route with its own limit it most likely describes that
    limit (10 s is exactly ``POST /signed_upload_urls``' interval), and closing the whole
    account for it would stop every unlock.
    """
    route_rate = limits.route_rate(route_key)
    if route_rate is None:
        return [(None, limits.rate, True)]
    return [(route_key, route_rate, True), (None, limits.rate, False)]


def _buckets(limits: BudgetLimits, route_key: str) -> list[tuple[str | None, float]]:
    route_rate = limits.route_rate(route_key)
    buckets: list[tuple[str | None, float]] = [(None, limits.rate)]
    if route_rate is not None:
        buckets.append((route_key, route_rate))
    return buckets


# --- in memory ------------------------------------------------------------------------------


class InMemorySendBudget:
    """A :class:`SendBudget` for one process: the same arithmetic, state under a lock.

    For unit tests and the benchmark's virtual-time simulation; thread-safe. Not for Lambdas:
    each execution environment would have its own budget, and together they would exceed
    Kisi's limit.
    """

    def __init__(
        self,
        *,
        rate: float = KISI_USER_RATE,
        route_rates: Mapping[str, float] | None = None,
        burst: float = 1.0,
        adaptive: AdaptiveRate | None = None,
    ) -> None:
        self._limits = BudgetLimits(
            rate, dict(route_rates or {}), burst, adaptive or AdaptiveRate()
        )
        self._lock = threading.Lock()
        self._states: dict[str | None, BucketState] = {}

    def state(self, route_key: str | None = None) -> BucketState:
        """The account bucket, or the own bucket of ``route_key`` (for inspection)."""
        configured = self._limits.rate
        if route_key is not None:
            route_rate = self._limits.route_rate(route_key)
            if route_rate is None:
                raise KeyError(f"{route_key!r} has no rate of its own")
            configured = route_rate
        with self._lock:
            return self._states.get(route_key) or self._limits.fresh(configured)

    def acquire(self, route_key: str, now: float, max_wait_s: float = 0.0) -> Grant:
        limits = self._limits
        route_rate = limits.route_rate(route_key)
        with self._lock:
            account = self._states.get(None) or limits.fresh(limits.rate)
            route = None
            if route_rate is not None:
                route = self._states.get(route_key) or limits.fresh(route_rate)
            plan = plan_acquire(
                account, route, now=now, max_wait_s=max_wait_s, burst=limits.burst
            )
            if plan.account is not None:
                self._states[None] = plan.account
            if plan.route is not None:
                self._states[route_key] = plan.route
            return plan.grant

    def observe(
        self, route_key: str, outcome: Outcome, retry_after_s: float | None, now: float
    ) -> None:
        limits = self._limits
        with self._lock:
            if outcome.cls is OutcomeClass.RATE_LIMITED:
                for key, configured, close_gate in _throttle_targets(limits, route_key):
                    state = self._states.get(key) or limits.fresh(configured)
                    self._states[key] = after_throttle(
                        state, configured, limits.adaptive, now=now,
                        retry_after_s=retry_after_s, close_gate=close_gate,
                    )
            elif outcome.cls is OutcomeClass.SUCCESS:
                for key, configured in _buckets(limits, route_key):
                    state = self._states.get(key) or limits.fresh(configured)
                    raised = after_success(state, configured, limits.adaptive, now=now)
                    if raised is not None:
                        self._states[key] = raised


# --- DynamoDB -------------------------------------------------------------------------------


class _LostRaceError(Exception):
    """A conditional write found the item changed since it was read."""


# DynamoDB's answers that mean "someone else wrote first", as opposed to "cannot write".
_RACE_CODES = frozenset({"ConditionalCheckFailedException", "TransactionConflictException"})
_RACE_REASONS = frozenset({"ConditionalCheckFailed", "TransactionConflict", "None"})

Stored = tuple[BucketState, int]  # the state and the item's version
NO_ITEM = 0  # the version of a bucket that has no item yet
UNVERSIONED = -1  # an item without a version (written by hand): matched on its absence


def _next_version(version: int) -> int:
    return max(version, NO_ITEM) + 1


class DynamoSendBudget:
    """A :class:`SendBudget` shared by every Lambda through one DynamoDB table.

    One item per bucket, ``pk`` = ``bucket_id`` (the account) or ``bucket_id#route_key`` (a
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
        bucket_id: str,
        *,
        rate: float = KISI_USER_RATE,
        route_rates: Mapping[str, float] | None = None,
        burst: float = 1.0,
        adaptive: AdaptiveRate | None = None,
        max_attempts: int = MAX_WRITE_ATTEMPTS,
        unavailable_retry_s: float = UNAVAILABLE_RETRY_S,
    ) -> None:
        if not bucket_id or "#" in bucket_id:
            raise ValueError("bucket_id must be non-empty and contain no '#'")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = client
        self._table = table_name
        self._bucket_id = bucket_id
        self._limits = BudgetLimits(
            rate, dict(route_rates or {}), burst, adaptive or AdaptiveRate()
        )
        self._max_attempts = max_attempts
        self._unavailable_retry_s = unavailable_retry_s
        self._seen: dict[str, Stored] = {}  # last state read or written, per pk

    def pk(self, route_key: str | None = None) -> str:
        """The item key of the account bucket, or of ``route_key``'s own bucket."""
        return self._bucket_id if route_key is None else f"{self._bucket_id}#{route_key}"

    def acquire(self, route_key: str, now: float, max_wait_s: float = 0.0) -> Grant:
        """Reserve a slot; raises :class:`BudgetUnavailableError` when DynamoDB fails."""
        limits = self._limits
        route_rate = limits.route_rate(route_key)
        for _ in range(self._max_attempts):
            account, account_version = self._read(self.pk(), limits.rate)
            route: Stored | None = None
            if route_rate is not None:
                route = self._read(self.pk(route_key), route_rate)
            plan = plan_acquire(
                account,
                route[0] if route is not None else None,
                now=now,
                max_wait_s=max_wait_s,
                burst=limits.burst,
            )
            if not plan.grant.ok or plan.account is None:
                return plan.grant
            writes = [(self.pk(), plan.account, account_version)]
            if route is not None and plan.route is not None:
                writes.append((self.pk(route_key), plan.route, route[1]))
            try:
                self._write(writes)
            except _LostRaceError:
                continue
            return plan.grant
        # Lost every race: the bucket is busy. Nothing was reserved.
        return Grant(False, 1.0 / limits.rate, REASON_RATE)

    def observe(
        self, route_key: str, outcome: Outcome, retry_after_s: float | None, now: float
    ) -> None:
        """Adapt the rate; never raises.

        Kisi has already answered when this runs; failing here would make the caller mistake
        bookkeeping for a failed send (and, for a create, send twice). A lost update is logged:
        the next 429 lowers the rate again.
        """
        limits = self._limits
        try:
            if outcome.cls is OutcomeClass.RATE_LIMITED:
                for key, configured, close_gate in _throttle_targets(limits, route_key):
                    throttled = partial(
                        after_throttle, configured=configured, adaptive=limits.adaptive,
                        now=now, retry_after_s=retry_after_s, close_gate=close_gate,
                    )
                    self._change(self.pk(key), configured, throttled, seen=None)
            elif outcome.cls is OutcomeClass.SUCCESS:
                for key, configured in _buckets(limits, route_key):
                    pk = self.pk(key)
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
            try:
                self._write([(pk, changed, version)])
            except _LostRaceError:
                seen = None
                continue
            return
        raise BudgetUnavailableError(f"bucket kept changing under {self._max_attempts} writes")

    def _unavailable(self, exc: Exception) -> BudgetUnavailableError:
        return BudgetUnavailableError(
            f"send budget table unavailable: {_error_code(exc)}", self._unavailable_retry_s
        )

    def _read(self, pk: str, configured: float) -> Stored:
        try:
            response = self._client.get_item(
                TableName=self._table, Key={"pk": {"S": pk}}, ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from exc
        item: Mapping[str, Any] | None = response.get("Item")
        stored = _from_item(item, configured, self._limits.adaptive)
        self._seen[pk] = stored
        return stored

    def _write(self, writes: list[tuple[str, BucketState, int]]) -> None:
        """Store new states, each only if its item is unchanged since read; all or none."""
        requests = [self._update_request(pk, state, version) for pk, state, version in writes]
        try:
            if len(requests) == 1:
                self._client.update_item(**requests[0])
            else:
                transaction: list[Any] = [{"Update": request} for request in requests]
                self._client.transact_write_items(TransactItems=transaction)
        except ClientError as exc:
            if _is_race(exc):
                raise _LostRaceError from exc
            raise self._unavailable(exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable(exc) from exc
        for pk, state, version in writes:
            self._seen[pk] = (state, _next_version(version))

    def _update_request(self, pk: str, state: BucketState, version: int) -> dict[str, Any]:
        names = {
            "#tat": "tat",
            "#rate": "rate",
            "#gate": "gate_until",
            "#updated": "updated_at",
            "#version": "version",
        }
        values: dict[str, Any] = {
            ":tat": _number(state.tat),
            ":rate": _number(state.rate),
            ":gate": _number(state.gate_until),
            ":updated": _number(state.updated_at),
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
            values[":lowered"] = _number(state.lowered_at)
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


def _number(value: float) -> dict[str, str]:
    """A DynamoDB number: the float's shortest exact decimal, never in exponent form."""
    if not math.isfinite(value):
        raise ValueError(f"cannot store {value!r}")
    return {"N": format(Decimal(repr(value)), "f")}


def _read_number(item: Mapping[str, Any], name: str) -> float | None:
    raw = item.get(name)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("N"), str):
        return None
    try:
        value = float(raw["N"])
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _from_item(
    item: Mapping[str, Any] | None, configured: float, adaptive: AdaptiveRate
) -> Stored:
    """The state in a stored item; missing or unreadable attributes take their defaults, so an
    item edited by hand degrades to a fresh bucket rather than blocking every send."""
    if not item:
        return BucketState(rate=configured), NO_ITEM
    rate = _read_number(item, "rate")
    version = _read_number(item, "version")
    state = BucketState(
        rate=adaptive.clamp(rate, configured) if rate is not None and rate > 0 else configured,
        tat=_read_number(item, "tat") or 0.0,
        gate_until=_read_number(item, "gate_until") or 0.0,
        lowered_at=_read_number(item, "lowered_at"),
        updated_at=_read_number(item, "updated_at") or 0.0,
    )
    return state, int(version) if version is not None else UNVERSIONED


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def _is_race(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    if code in _RACE_CODES:
        return True
    if code == "TransactionCanceledException":
        reasons = exc.response.get("CancellationReasons") or []
        codes = {str(reason.get("Code", "None")) for reason in reasons}
        return bool(codes) and codes <= _RACE_REASONS
    return False
