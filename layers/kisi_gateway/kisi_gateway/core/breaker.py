"""The guard's rules: a circuit breaker over bad requests, so the gateway stops sending what
Kisi rejects.

Kisi may suspend an integrator that sends "too many bad requests" and publishes no threshold
(KISI_API.md, "Suspension"). Retrying cannot fix a 401 (an expired or revoked key: logins
expire after inactivity) or a 403/404/422 storm on one route (Kisi answers 403 for ids that do
not exist), so the gateway stops *sending* them: a check before every send, an observation
after every answer from Kisi. This module decides; :mod:`kisi_gateway.stores.guard` keeps the
state in DynamoDB and :class:`kisi_gateway.stores.memory.MemoryGuard` in memory, both with
these functions.

Scopes belong to one identity (:mod:`kisi_gateway.core.identity`: a keyed hash of one
credential), so nobody's storm pauses anybody else: ``<identity>`` (a 401 storm: that key is
bad, every route would fail for it) and ``<identity>|<METHOD> <template>``, e.g.
``id-0a1b...|PATCH /users/{id}`` (a 403/404/422 storm: that identity's ids or rights on that
route are bad, the rest is fine).

Transitions (``now`` is always an argument; the store writes each with a condition so exactly
one writer wins):

* closed --(account: ``consecutive_401`` reaches the threshold)--> open for ``cooldown_s``
* closed --(``open()``, the alarm path or an operator)--> open for the given cooldown
* open, ``now < until`` --> every check pauses, ``Retry-After = ceil(until - now)``
* open, ``now >= until`` --> half_open: one check fleet-wide wins the conditional write
  (``probe_until`` absent or lapsed) and sends the probe; the others pause briefly
* half_open --(answer of the kind that opened it: 401 for the account, 403/404/422 for a
  route)--> open again, cooldown doubled (capped at ``max_cooldown_s``)
* half_open --(an answer proving the scope works)--> closed, counter reset
* half_open --(429, 5xx or network error: says nothing)--> still half_open; the probe's lease
  is released so the next check elects a new probe at once
* any --(``close()`` / ``reset()``)--> closed

Evidence per outcome (:func:`evidence`): for the account, a 401 is bad; 2xx, 3xx and any
other 4xx are good (Kisi authenticated the key before rejecting the request); 429, 5xx and
network errors are neutral, because Kisi rate-limits and fails unauthenticated callers too
(KISI_API.md, "Rate limits"), so they prove nothing about the key; they neither count nor reset
the 401 streak. For a route, 403/404/422 are bad; 401 is neutral (the account guard counts
it); 429/5xx/network are neutral; anything else is good. Neutral answers are left to the
budget and the backoff.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from kisi_gateway.core.outcome import Outcome, OutcomeClass

ROUTE_SEPARATOR = "|"

UNAUTHORIZED = 401
# Kisi answers 403 for ids that do not exist (KISI_API.md, "Error bodies"), 404 and 422 for
# missing resources and invalid bodies: a storm of these on one route is the caller's data.
ROUTE_BAD_STATUSES = frozenset({403, 404, 422})
# Kisi rate-limits and fails unauthenticated callers too: these say nothing about a key or
# a route. (``status_class`` puts anything outside 2xx-4xx under SERVER_ERROR.)
_NEUTRAL_CLASSES = frozenset(
    {OutcomeClass.RATE_LIMITED, OutcomeClass.SERVER_ERROR, OutcomeClass.NETWORK_ERROR}
)

# Retry-After for checks that lose the probe election: a probe's answer usually lands within a
# second or two, and a 30-second unlock deadline must still have room after a few such waits.
HALF_OPEN_RETRY_S = 2

_ROUTE_KEY = re.compile(r"^[A-Z]+ /\S*$")
_IDENTITY = re.compile(r"^[a-z]+-[0-9a-f]{8,64}$")


class GuardState(StrEnum):
    """The state of one scope's breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Pause:
    """Traffic for ``scope`` must not be sent now: answer 503 or requeue after the delay.

    ``retry_after_s`` is whole seconds, at least 1 (it becomes ``Retry-After`` and an SQS
    delay, both counted in seconds).
    """

    scope: str
    reason: str
    retry_after_s: int

    def __post_init__(self) -> None:
        if self.retry_after_s < 1:
            raise ValueError("retry_after_s must be at least 1")


def account_scope(identity: str) -> str:
    """The scope of one identity's credential as a whole (a 401 storm: a revoked key)."""
    return identity


def route_scope(identity: str, route_key: str) -> str:
    """The scope of one route for one identity (a 403/404/422 storm: its ids or rights).

    >>> route_scope("id-0a1b2c3d", "PATCH /users/{id}")
    'id-0a1b2c3d|PATCH /users/{id}'
    """
    return f"{identity}{ROUTE_SEPARATOR}{route_key}"


def is_account(scope: str) -> bool:
    return ROUTE_SEPARATOR not in scope


def scopes_of(identity: str, route_key: str) -> tuple[str, str]:
    """The two scopes a call on ``route_key`` must find closed: its identity's, its route's."""
    return account_scope(identity), route_scope(identity, route_key)


def parse_scope(text: str) -> str:
    """A scope from operator input: ``id-...`` or ``id-...|PATCH /users/{id}``."""
    identity, separator, route_key = text.partition(ROUTE_SEPARATOR)
    if not _IDENTITY.match(identity) or (separator and not _ROUTE_KEY.match(route_key)):
        raise ValueError(
            f"{text!r} is not an identity like 'id-0a1b2c3d' or "
            "'id-0a1b2c3d|PATCH /users/{id}'"
        )
    return text


# -- pure decisions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuardRules:
    """The guard's numbers; defaults match ``Settings`` (GUARD_401_THRESHOLD and friends)."""

    consecutive_401_threshold: int = 5
    cooldown_s: float = 60.0
    max_cooldown_s: float = 3600.0
    cache_s: float = 2.0
    probe_lease_s: float = 30.0

    def __post_init__(self) -> None:
        if self.consecutive_401_threshold < 1:
            raise ValueError("consecutive_401_threshold must be at least 1")
        if not self.cooldown_s > 0 or not self.probe_lease_s > 0:
            raise ValueError("cooldown_s and probe_lease_s must be positive")
        if self.max_cooldown_s < self.cooldown_s:
            raise ValueError("max_cooldown_s must not be below cooldown_s")
        if self.cache_s < 0:
            raise ValueError("cache_s must not be negative")


@dataclass(frozen=True, slots=True)
class ScopeItem:
    """One scope's item, as stored. A scope with no item is closed with no history."""

    scope: str
    state: GuardState = GuardState.CLOSED
    reason: str = ""
    opened_at: float | None = None
    until: float | None = None
    cooldown_s: float | None = None
    consecutive_401: int = 0
    probe_until: float | None = None
    updated_at: float | None = None
    # Account only: the end of the newest known-bad entry of this identity (a hint that lets
    # the known-bad screen skip its lookup while the identity has none; see KnownBadHints).
    known_bad_until: float | None = None

    def summary(self, now: float) -> dict[str, Any]:
        """A JSON-ready view for notifications, dashboards and the CLI."""
        verdict = admit(self, now)
        traffic = verdict.value if isinstance(verdict, Admit) else "paused"
        return {
            "scope": self.scope,
            "state": self.state.value,
            "reason": self.reason,
            "opened_at": self.opened_at,
            "until": self.until,
            "cooldown_s": self.cooldown_s,
            "consecutive_401": self.consecutive_401,
            "probe_until": self.probe_until,
            "updated_at": self.updated_at,
            "traffic": traffic,
            "retry_after_s": verdict.retry_after_s if isinstance(verdict, Pause) else None,
        }


class Evidence(StrEnum):
    """What one answer from Kisi says about one scope."""

    BAD = "bad"  # the kind of answer that opens this scope
    GOOD = "good"  # proves the scope works: closes a half-open scope, ends a 401 streak
    NEUTRAL = "neutral"  # says nothing about it (429, 5xx, network): budget and backoff's job


def evidence(scope: str, outcome: Outcome) -> Evidence:
    """What ``outcome`` says about ``scope``.

    >>> from kisi_gateway.core.outcome import classify_status
    >>> forbidden = classify_status(403)  # the key works; the id or the rights do not
    >>> evidence("id-0a1b2c3d", forbidden), evidence("id-0a1b2c3d|GET /locks/{id}", forbidden)
    (<Evidence.GOOD: 'good'>, <Evidence.BAD: 'bad'>)
    """
    status = outcome.status
    if status is None or outcome.cls in _NEUTRAL_CLASSES:
        return Evidence.NEUTRAL
    if is_account(scope):
        return Evidence.BAD if status == UNAUTHORIZED else Evidence.GOOD
    if status in ROUTE_BAD_STATUSES:
        return Evidence.BAD
    if status == UNAUTHORIZED:
        return Evidence.NEUTRAL  # the key's problem, counted on the account
    return Evidence.GOOD


class Admit(StrEnum):
    """What a check may do for one scope, when it need not pause."""

    SEND = "send"
    PROBE_DUE = "probe_due"  # the cooldown is over: try to be the one half-open probe


def retry_after(until: float, now: float) -> int:
    """Whole seconds until ``until``, at least 1: ``retry_after(1060.2, 1000.0) == 61``."""
    return max(1, math.ceil(until - now))


def admit(item: ScopeItem, now: float) -> Admit | Pause:
    """Whether traffic for ``item``'s scope may be sent at ``now``."""
    if item.state is GuardState.CLOSED:
        return Admit.SEND
    if item.until is not None and now < item.until:
        return Pause(item.scope, item.reason, retry_after(item.until, now))
    if item.probe_until is not None and now < item.probe_until:
        return Pause(
            item.scope,
            f"{item.reason} (a probe request is testing whether Kisi accepts it again)",
            min(retry_after(item.probe_until, now), HALF_OPEN_RETRY_S),
        )
    return Admit.PROBE_DUE


def next_cooldown(previous: float | None, rules: GuardRules) -> float:
    """The cooldown after a failed probe: doubled, capped at ``max_cooldown_s``.

    An explicit cooldown already above the cap (an operator's choice) is never shortened.
    """
    base = previous if previous is not None and previous > 0 else rules.cooldown_s
    return max(base, min(2 * base, rules.max_cooldown_s))


@dataclass(frozen=True, slots=True)
class Trip:
    """Open the scope for ``cooldown_s``, if it is still in ``expect`` (one writer wins)."""

    reason: str
    cooldown_s: float
    expect: GuardState


@dataclass(frozen=True, slots=True)
class Recover:
    """Close a half-open scope: its probe was answered the way a healthy scope answers."""

    reason: str


@dataclass(frozen=True, slots=True)
class ResetStreak:
    """Zero the account's 401 streak: an answer proved the key works."""


@dataclass(frozen=True, slots=True)
class ReleaseProbe:
    """Give up this Lambda's probe lease: its answer said nothing (429, 5xx, network)."""


Transition = Trip | Recover | ResetStreak | ReleaseProbe


def transition(
    item: ScopeItem, outcome: Outcome, rules: GuardRules, *, holds_probe: bool = False
) -> Transition | None:
    """What Kisi's answer does to a scope, given its item (for a 401: after the increment).

    An open scope ignores answers (stragglers sent before it opened): only a half-open probe's
    answer, or the cooldown, moves it. A route never opens here: one 403 is not a storm, the
    alarm path counts volumes.
    """
    kind = evidence(item.scope, outcome)
    account = is_account(item.scope)
    if item.state is GuardState.HALF_OPEN:
        if kind is Evidence.BAD:
            cooldown = next_cooldown(item.cooldown_s, rules)
            return Trip(reopen_reason(item.scope, outcome), cooldown, GuardState.HALF_OPEN)
        if kind is Evidence.GOOD:
            return Recover(f"probe answered {outcome.status}: closed")
        return ReleaseProbe() if holds_probe else None
    if item.state is GuardState.CLOSED and account:
        if kind is Evidence.BAD and item.consecutive_401 >= rules.consecutive_401_threshold:
            return Trip(
                f"{item.consecutive_401} consecutive 401 from Kisi: "
                "the key looks expired or revoked",
                rules.cooldown_s,
                GuardState.CLOSED,
            )
        if kind is Evidence.GOOD and item.consecutive_401 > 0:
            return ResetStreak()
    return None


def reopen_reason(scope: str, outcome: Outcome) -> str:
    """Why a failed probe reopened ``scope``."""
    if is_account(scope):
        return f"probe answered {outcome.status} again: the key still looks expired or revoked"
    return (
        f"probe answered {outcome.status} again: Kisi still rejects this route "
        "(a 403 often means an id that does not exist)"
    )


def opened(item: ScopeItem, reason: str, cooldown_s: float, now: float) -> ScopeItem:
    """``item`` opened at ``now`` for ``cooldown_s`` (any probe lease is dropped)."""
    return replace(item, state=GuardState.OPEN, reason=reason, opened_at=now,
                   until=now + cooldown_s, cooldown_s=cooldown_s, probe_until=None,
                   updated_at=now)


def closed(item: ScopeItem, reason: str, now: float) -> ScopeItem:
    """``item`` closed at ``now``: history cleared, 401 streak reset."""
    return replace(item, state=GuardState.CLOSED, reason=reason, opened_at=None, until=None,
                   cooldown_s=None, probe_until=None, consecutive_401=0, updated_at=now)


def elected(item: ScopeItem, now: float, rules: GuardRules) -> ScopeItem:
    """``item`` half-open with this check as its probe, leased for ``probe_lease_s``."""
    return replace(item, state=GuardState.HALF_OPEN, probe_until=now + rules.probe_lease_s,
                   updated_at=now)


def apply_transition(item: ScopeItem, change: Transition, now: float) -> ScopeItem:
    """The item after ``change`` (what the adapter writes, conditionally)."""
    match change:
        case Trip(reason=reason, cooldown_s=cooldown):
            return opened(item, reason, cooldown, now)
        case Recover(reason=reason):
            return closed(item, reason, now)
        case ResetStreak():
            return replace(item, consecutive_401=0, updated_at=now)
        case ReleaseProbe():
            return replace(item, probe_until=now, updated_at=now)
    raise AssertionError(f"unknown transition {change!r}")  # pragma: no cover
