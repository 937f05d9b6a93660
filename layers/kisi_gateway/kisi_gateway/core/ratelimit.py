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

>>> plan_acquire(BudgetLimits(), BucketState(rate=5.0, tat=10.5), now=10.0, max_wait_s=1.0).grant
Grant(ok=True, wait_s=0.5, reason='')
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from kisi_gateway.core.ratecontrol import ControlState, RateControl

# Kisi: 5 requests per second per user, all of that user's logins together.
KISI_USER_RATE = 5.0
# The share of Kisi's rate the deployed line is booked at. Sending at exactly the limit, any
# sender that wakes late wastes tokens of Kisi's bucket that later on-time sends then miss,
# and the bucket drifts empty; 5 % of headroom lets it refill between such hiccups.
PACE = 0.95
# A slot this close past the caller's allowance still counts as within it: clocks are not that
# precise, and float sums of intervals (0.2 + 0.2 + 0.2 ...) drift by far less.
SLOT_TOLERANCE_S = 1e-6

# Reasons of a refused grant.
REASON_RATE = "rate"
REASON_GATE = "gate"
# A Retry-After longer than this is Kisi's deliberate instruction, not noise: it closes the gate
# for every sender of the user even when the 429 came alone (capped by the sender at MAX_GATE_S).
DELIBERATE_WAIT_S = 5.0
REASON_SHARE = "share"
# The bucket changed under every write this call tried: nothing was booked, and nothing is
# known about the line. Ask again after a short random pause (the losers of one race must not
# collide again in step); it says nothing about how long the line is.
REASON_BUSY = "busy"

@dataclass(frozen=True, slots=True)
class Grant:
    """The budget's answer to one caller.

    ``ok``: a slot was reserved; the caller must send ``wait_s`` seconds from ``now`` (0 means
    at once) and not before. Not ok: nothing was reserved; try again after about ``wait_s``
    seconds. ``reason`` says why not: ``"rate"`` (the next slot this caller may take is further
    away than it would wait, or, while unlocks wait, further than the next one),
    ``"share"`` (its identity holds its fair share of the line) or ``"gate"`` (Kisi sent a
    ``Retry-After`` that has not passed yet).
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
class BucketState:
    """One bucket.

    The line: ``tat`` (theoretical arrival time: the first slot nobody holds), ``gate_until``
    (no request before this; from a confirmed overload's ``Retry-After``). The rate
    controller's memory (:class:`~kisi_gateway.core.ratecontrol.ControlState`): ``rate``,
    ``peak``, ``lowered_at``, ``strikes``, ``struck_at``. The shares: ``holes`` (free slots
    inside the line, kept for priority requests), ``reserved_at`` (the last hole left),
    ``priority_at`` (the last priority booking), ``held`` (per holder, the end of its own
    backlog: one identity's slots ahead, for its fair share) and ``pressed_until`` (until then
    unlocks are waiting, and the slots ahead are theirs). ``updated_at``: last change.
    """

    rate: float
    tat: float = 0.0
    gate_until: float = 0.0
    lowered_at: float | None = None
    updated_at: float = 0.0
    peak: float | None = None
    strikes: int = 0
    struck_at: float | None = None
    holes: tuple[float, ...] = ()
    reserved_at: float = 0.0
    priority_at: float | None = None
    held: tuple[tuple[str, float], ...] = ()
    pressed_until: float = 0.0

    @property
    def control(self) -> ControlState:
        """The rate controller's part of the bucket."""
        return ControlState(self.rate, self.peak, self.lowered_at, self.strikes, self.struck_at)

    def with_control(self, control: ControlState, now: float) -> BucketState:
        return replace(
            self, rate=control.rate, peak=control.peak, lowered_at=control.lowered_at,
            strikes=control.strikes, struck_at=control.struck_at, updated_at=now,
        )


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """The configured rates and how the line is shared.

    ``rate``: the account's (Kisi's per-user limit); ``route_rates``: routes with a stricter
    one of their own (``{"POST /event_sets": 1.0}``). ``pace``: the share of the rate the line
    is booked at; below 1, Kisi's bucket keeps a little headroom, so senders that wake late
    and then send close together (Lambda timers are not exact) do not empty it.
    ``priority_wait_s``: the longest a priority request (an unlock) should wait in a burst of
    others; while priority requests were seen in the last ``priority_memory_s``, the line
    keeps one free slot per ``priority_wait_s`` for them. ``pressure_s``: how long after a
    priority request last found no slot within ``priority_wait_s`` (beyond its own return)
    the others keep off the line ahead. ``share_s``: one holder (an identity) may hold at
    most this many seconds of the line ahead of now.
    """

    rate: float = KISI_USER_RATE
    route_rates: Mapping[str, float] = field(default_factory=dict)
    burst: float = 1.0
    control: RateControl = field(default_factory=RateControl)
    pace: float = 1.0
    priority_wait_s: float = 1.0
    priority_memory_s: float = 60.0
    share_s: float = 5.0
    pressure_s: float = 2.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError("rate must be a positive number")
        for route_key, rate in self.route_rates.items():
            if not (math.isfinite(rate) and rate > 0):
                raise ValueError(f"rate of {route_key!r} must be a positive number")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError("burst must be at least 1")
        if not 0 < self.pace <= 1:
            raise ValueError("pace must be in (0, 1]")
        if not (self.priority_wait_s > 0 and self.priority_memory_s >= 0 and self.share_s > 0):
            raise ValueError("priority_wait_s and share_s must be positive")
        if not (math.isfinite(self.pressure_s) and self.pressure_s >= 0):
            raise ValueError("pressure_s must be a finite number, 0 or more")

    def route_rate(self, route_key: str) -> float | None:
        return self.route_rates.get(route_key)

    def fresh(self, configured: float) -> BucketState:
        """A bucket nobody has used yet: full rate, free now."""
        return BucketState(rate=configured)

    def interval(self, state: BucketState, configured: float, now: float) -> float:
        """Seconds between two slots of ``state`` at ``now`` (the controller's rate, paced)."""
        return 1.0 / (self.control.rate_at(state.control, configured, now) * self.pace)


@dataclass(frozen=True, slots=True)
class Booking:
    """Who asks: ``priority`` (a route that must not wait behind a burst: unlocks) and the
    ``holder`` whose fair share the slot counts against (an identity; ``None``: nobody's)."""

    priority: bool = False
    holder: str | None = None


ANYONE = Booking()  # a request with no priority, counted in nobody's share


def earliest_slot(state: BucketState, now: float, interval: float, burst: float = 1.0) -> float:
    """The first free slot at the end of the line, for a request arriving at ``now``.

    ``burst`` requests may go back to back (GCRA's tolerance ``(burst - 1) * interval``); with
    the default of 1, requests are spaced exactly one interval apart, as Kisi advises.

    >>> earliest_slot(BucketState(rate=5.0, tat=10.4), now=10.0, interval=0.2)
    10.4
    >>> earliest_slot(BucketState(rate=5.0, tat=10.4), now=10.0, interval=0.2, burst=3.0)
    10.0
    """
    return max(now, state.tat - (burst - 1.0) * interval)


@dataclass(frozen=True, slots=True)
class Plan:
    """What :func:`plan_acquire` decided: the grant, and the states to store if it is ok."""

    grant: Grant
    account: BucketState | None = None
    route: BucketState | None = None


def plan_acquire(
    limits: BudgetLimits,
    account: BucketState,
    route: BucketState | None = None,
    *,
    now: float,
    max_wait_s: float,
    route_rate: float | None = None,
    booking: Booking = ANYONE,
) -> Plan:
    """Decide one acquisition against the account bucket and, if the route has its own rate
    (``route`` and ``route_rate``), the route bucket.

    In order: a closed gate refuses (``"gate"``); a holder past its fair share refuses
    (``"share"``, come back when its backlog has shrunk); then the slot is the earliest of

    - a hole (a slot kept free inside the line): a priority request takes any hole within its
      wait, anyone else only one that is about to pass unused (or any, while no priority
      request was seen lately);
    - the end of the line, where a request that is not priority, landing beyond
      ``priority_wait_s``, leaves a hole first if the last one is ``priority_wait_s`` back.

    A slot further away than ``max_wait_s`` refuses (``"rate"``) and books nothing.

    Pressure: holes serve unlocks that come one at a time, not a wave of them; reads that
    keep coming (deferred ones above all) would book the line ahead in arrival order, and
    unlocks with 30 s to live would expire behind reads with a day to spare. So a priority
    request that gets no slot within ``priority_wait_s`` (refused, or booked further out)
    puts the bucket under pressure until it comes back (its ``wait_s``) and ``pressure_s``
    more. Meanwhile anyone else takes only a slot about to pass unused (one interval away at
    most) and is told to ask again just before the end of the line: the slots ahead go to
    unlocks, none is left idle while reads keep asking, and once unlocks are served within
    ``priority_wait_s`` for ``pressure_s`` reads book ahead again. Slots already granted
    stand (their holders may be sending).

    The request goes out at one moment, so it takes the same slot in the account and its
    route bucket; a route-limited request may keep the account's line waiting at most one
    interval.

    >>> plan_acquire(BudgetLimits(), BucketState(rate=5.0), now=1.0, max_wait_s=0.0).grant
    Grant(ok=True, wait_s=0.0, reason='')
    """
    gate = max(account.gate_until, route.gate_until if route is not None else 0.0)
    if gate > now:
        return Plan(Grant(False, gate - now, REASON_GATE))
    interval = limits.interval(account, limits.rate, now)
    held = {holder: end for holder, end in account.held if end > now}
    holder = booking.holder
    if holder is not None:
        backlog = max(now, held.get(holder, now)) + interval - now
        if backlog > limits.share_s + SLOT_TOLERANCE_S:
            return _refuse(limits, account, booking, now, interval,
                           Grant(False, backlog - limits.share_s, REASON_SHARE))
    not_before = now
    if route is not None and route_rate is not None:
        not_before = earliest_slot(route, now, limits.interval(route, route_rate, now))
    account_slot = earliest_slot(account, now, interval, limits.burst)
    line = max(account_slot, not_before)
    if line - account_slot > interval + SLOT_TOLERANCE_S:
        return Plan(Grant(False, line - now, REASON_RATE))
    pressed = now < account.pressed_until
    reserving = booking.priority or pressed or (
        account.priority_at is not None and now - account.priority_at <= limits.priority_memory_s
    )
    holes = tuple(hole for hole in account.holes if hole >= now - SLOT_TOLERANCE_S)
    hole = _usable_hole(holes, not_before, now, interval, booking.priority, reserving,
                        max_wait_s)
    tat, reserved_at = account.tat, account.reserved_at
    if hole is not None and hole < line:
        slot = hole
        holes = tuple(h for h in holes if h != hole)
    else:
        slot = line
        if pressed and not booking.priority and slot - now > interval + SLOT_TOLERANCE_S:
            # Unlocks are waiting: this slot is theirs. Ask again just before it; if no
            # unlock has taken it by then, it is about to pass unused and yours.
            return Plan(Grant(False, slot - now, REASON_RATE))
        keep = limits.priority_wait_s - interval  # a hole at most this far behind the last
        if (reserving and not booking.priority and slot - now > keep
                and slot - reserved_at >= keep - SLOT_TOLERANCE_S):
            holes, reserved_at, slot = (*holes, slot), slot, slot + interval
        tat = max(tat, slot) + interval
    wait = slot - now
    if wait > max_wait_s + SLOT_TOLERANCE_S:
        return _refuse(limits, account, booking, now, interval, Grant(False, wait, REASON_RATE))
    if holder is not None:
        held[holder] = max(now, held.get(holder, now)) + interval
    # An unlock booked further out than it should wait: the next ones need the line free too.
    waited_long = booking.priority and wait > limits.priority_wait_s + SLOT_TOLERANCE_S
    booked = replace(
        account, tat=tat, holes=holes, reserved_at=reserved_at, updated_at=now,
        held=tuple(sorted(held.items())),
        priority_at=now if booking.priority else account.priority_at,
        pressed_until=max(account.pressed_until, now + limits.pressure_s) if waited_long
        else account.pressed_until,
    )
    route_after = None
    if route is not None and route_rate is not None:
        route_interval = limits.interval(route, route_rate, now)
        route_after = replace(route, tat=max(route.tat, slot) + route_interval, updated_at=now)
    return Plan(Grant(True, wait), account=booked, route=route_after)


def _refuse(
    limits: BudgetLimits, account: BucketState, booking: Booking, now: float, interval: float,
    grant: Grant,
) -> Plan:
    """A refusal; a priority request's also puts the bucket under pressure (see
    :func:`plan_acquire`), stored only when that extends it by more than a slot: a write per
    refusal would cost a round trip each and fail other senders' conditional writes."""
    if not booking.priority:
        return Plan(grant)
    until = now + grant.wait_s + limits.pressure_s
    if until <= account.pressed_until + interval:
        return Plan(grant)
    noted = replace(account, priority_at=now, pressed_until=until, updated_at=now)
    return Plan(grant, account=noted)


def _usable_hole(
    holes: tuple[float, ...], not_before: float, now: float, interval: float, priority: bool,
    reserving: bool, max_wait_s: float,
) -> float | None:
    """The earliest hole this request may take (see :func:`plan_acquire`), or ``None``."""
    for hole in sorted(holes):
        if hole < not_before - SLOT_TOLERANCE_S or hole - now > max_wait_s + SLOT_TOLERANCE_S:
            continue
        if priority or not reserving or hole - now <= interval + SLOT_TOLERANCE_S:
            return hole
    return None


def after_throttle(
    state: BucketState,
    configured: float,
    limits: BudgetLimits,
    *,
    now: float,
    retry_after_s: float | None,
    close_gate: bool,
) -> BucketState:
    """The bucket after Kisi answered 429 at ``now``.

    The controller (:meth:`RateControl.throttled`) decides whether it was the gateway's own
    overload. Only then does the rate drop, the next new slot move at least one (new) interval
    away, and, with a ``Retry-After`` and ``close_gate``, the gate close until then: one
    isolated 429 stops nobody (its own request still honours its ``Retry-After``), unless its
    ``Retry-After`` is longer than ``DELIBERATE_WAIT_S``: a wait Kisi asked for on purpose. Slots
    already granted stand: their holders may be sending right now.

    >>> limits = BudgetLimits()
    >>> once = after_throttle(BucketState(rate=5.0, tat=9.5), 5.0, limits, now=10.0,
    ...                       retry_after_s=3.0, close_gate=True)
    >>> once.rate, once.gate_until, once.strikes
    (5.0, 0.0, 1)
    >>> twice = after_throttle(once, 5.0, limits, now=10.1, retry_after_s=3.0, close_gate=True)
    >>> thrice = after_throttle(twice, 5.0, limits, now=10.2, retry_after_s=3.0,
    ...                         close_gate=True)
    >>> thrice.rate, thrice.gate_until, round(thrice.tat, 3)
    (3.5, 13.2, 10.486)
    >>> asked = after_throttle(BucketState(rate=5.0, tat=9.5), 5.0, limits, now=10.0,
    ...                        retry_after_s=900.0, close_gate=True)
    >>> asked.rate, asked.gate_until
    (5.0, 910.0)
    """
    control = limits.control
    busy = control.is_busy(state.tat, now)
    after, overload = control.throttled(state.control, configured, now=now, busy=busy)
    changed = state.with_control(after, now)
    wait = retry_after_s or 0.0
    gate_until = state.gate_until
    if close_gate and wait > 0 and (overload or wait > DELIBERATE_WAIT_S):
        gate_until = max(gate_until, now + wait)
    if not overload:  # a long wait Kisi asked for still stops every sender of the user
        return replace(changed, gate_until=gate_until)
    interval = limits.interval(changed, configured, now)
    return replace(changed, tat=max(state.tat, now + interval), gate_until=gate_until)


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
