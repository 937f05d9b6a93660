"""The send budget's arithmetic: GCRA slots, the adaptive rate, Kisi's ``Retry-After`` gate.

Kisi allows 5 requests per second per user, shared by all of that user's keys, and less on some
routes (``POST /event_sets`` 1/s, ``POST /signed_upload_urls`` 1 per 10 s; KISI_API.md "Rate
limits"). Every 429 counts against the account as a failed request, so the gateway spends its
effort on sending at the right rate rather than on retrying fast.

The algorithm is GCRA (the "virtual scheduling" form of a token bucket) with reservations. A
bucket holds one number, the theoretical arrival time ``tat``: the earliest moment the next
request may go out. A caller that can wait reserves a slot in the future instead of polling, so
callers queue in slot order and Kisi sees evenly spaced requests however many Lambdas run.
Everything here is pure and takes ``now`` as an argument; the stores keep the state
(:class:`~kisi_gateway.stores.budget.DynamoSendBudget` shared by every Lambda,
:class:`~kisi_gateway.stores.memory.MemorySendBudget` for tests and the benchmark).

>>> plan_acquire(BucketState(rate=5.0, tat=10.5), None, now=10.0, max_wait_s=1.0).grant
Grant(ok=True, wait_s=0.5, reason='')
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

# Kisi: 5 requests per second per user, all of that user's logins together.
KISI_USER_RATE = 5.0
# A slot this close past the caller's allowance still counts as within it: clocks are not that
# precise, and float sums of intervals (0.2 + 0.2 + 0.2 ...) drift by far less.
SLOT_TOLERANCE_S = 1e-6

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


def throttle_targets(
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


def buckets(limits: BudgetLimits, route_key: str) -> list[tuple[str | None, float]]:
    route_rate = limits.route_rate(route_key)
    buckets: list[tuple[str | None, float]] = [(None, limits.rate)]
    if route_rate is not None:
        buckets.append((route_key, route_rate))
    return buckets
