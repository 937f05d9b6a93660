"""The guard: a circuit breaker over bad requests, so the gateway stops sending what Kisi rejects.

Kisi may suspend an integrator that sends "too many bad requests" and publishes no threshold
(KISI_API.md, "Suspension"). Retrying cannot fix a 401 (an expired or revoked key: logins
expire after inactivity) or a 403/404/422 storm on one route (Kisi answers 403 for ids that do
not exist), so the gateway stops *sending* them: ``check`` before every send, ``observe`` after
every answer from Kisi.

Scopes. ``account`` (a 401 storm: the key is bad, every route would fail) and
``route:<METHOD> <template>``, e.g. ``route:PATCH /users/{id}`` (a 403/404/422 storm: that
route's ids or rights are bad, the rest of the API is fine).

Two paths trip it (DESIGN.md, "Send budget and guard"). The fast path runs in every sending
Lambda: each 401 atomically increments ``consecutive_401`` on the account item, so five 401s
spread over any number of Lambdas open the account within a handful of requests, not minutes.
The alarm path is the metrics Lambda: it watches bad-request rates and volumes per route and
calls :meth:`DynamoGuard.open` / :meth:`DynamoGuard.close`.

Item layout: one DynamoDB table, string hash key ``scope``, one item per scope::

    scope            S  "account" | "route:PATCH /users/{id}"
    state            S  "closed" | "open" | "half_open"
    reason           S  why it is (or was last) in that state, for people and the 503 body
    opened_at        N  epoch seconds the current opening began          (absent when closed)
    until            N  end of the cooldown; a probe may be elected after (absent when closed)
    cooldown_s       N  length of the current cooldown, doubled by a failed probe
    consecutive_401  N  account only: 401s since the last answer that proved the key works
    probe_until      N  lease of the elected half-open probe               (absent if none)
    updated_at       N  epoch seconds of the last write

Transitions (``now`` is always an argument; the pure functions below decide, the adapter
writes with a condition so exactly one writer wins each transition):

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

Cost. The healthy path writes nothing: a success writes only when this Lambda's last view of
the account shows a 401 streak (to reset it) or a half-open scope. Reads go through a per-scope
cache of ``cache_s`` seconds that only serves *closed* scopes with no 401 streak: an open,
half-open or counting scope is always re-read, so a probe is elected promptly and a storm
another Lambda is seeing pauses this one at once.

Failure policy: **fails open**. When DynamoDB is unreachable or throws, :meth:`~DynamoGuard.check`
logs a warning and answers "send", and :meth:`~DynamoGuard.observe` logs and drops its write.
The guard protects the account from suspension; it must not itself take the gateway down.

Why not Powertools' circuit breaker (``aws_lambda_powertools/utilities/circuit_breaker/``,
3.37.0, alpha)? It has the right shape and this module borrows it: state in DynamoDB read
eventually consistent, one half-open probe elected by a conditional write with a lease that
another worker may take over once it lapses, the election re-checking what the reader saw so a
stale read cannot elect (its ``expected_opened_at``; here ``until <= :now``), the lease cleared
on every exit from half-open (``persistence/dynamodb.py``, ``_build_update_query``), and a
failed read failing open without caching the made-up "closed" (``persistence/base.py``,
``get_state``). But it does not fit the API the pipeline needs: (1) it counts failures per
execution environment in module-level dicts (``base.py``, ``_LOCAL_FAILURES``; ``states.py``
says ``failure_count`` "is not a running total of failures across the fleet"), so ten Lambdas
could each send four 401s without tripping, while Kisi counts them all; (2) it is a decorator
that judges the wrapped call by the exceptions it raises (``config.py``,
``counts_as_failure``), whereas the gateway checks before the budget, sends, classifies an
:class:`~kisi_gateway.core.outcome.Outcome` and must treat 429/5xx as neither failure nor success;
(3) it has no externally decided open with a reason and a cooldown (``save_open`` takes a
failure count and a time) and no cooldown doubling (``recovery_timeout`` is fixed); (4) its
clock is ``datetime.now()`` inside the handler and the store, in whole seconds, so it cannot
be driven by an injected ``now``; (5) it closes only after ``success_threshold`` (default 3)
probe successes, and its cache serves open records too. Wrapping it would mean fighting each
of these, so this module is its own, small breaker.

Operator CLI (boto3's default session; ``AWS_ENDPOINT_URL`` points it at moto locally)::

    python -m kisi_gateway.stores.guard status --table NAME
        every scope as JSON: state, reason, opened_at, until, cooldown, counters, and what
        a check would do now (send, paused, probe_due)
    python -m kisi_gateway.stores.guard reset [--scope SCOPE] --table NAME
        close one scope (``account``, ``route:POST /locks/{id}/unlock`` or just
        ``POST /locks/{id}/unlock``) or, without --scope, every scope; prints the scopes that
        were open or half-open. Fix the cause first (rotate the key, correct the ids): a reset
        with the cause still there only lets the next storm through.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, cast

from botocore.exceptions import BotoCoreError, ClientError

from kisi_gateway.core.outcome import Outcome, OutcomeClass

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

logger = logging.getLogger(__name__)

ACCOUNT = "account"
ROUTE_PREFIX = "route:"

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

_CONDITION_FAILED = "ConditionalCheckFailedException"
_ROUTE_KEY = re.compile(r"^[A-Z]+ /\S*$")


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


class Guard(Protocol):
    """What the request pipeline needs of a guard (tests pass a fake)."""

    def check(self, route_key: str, now: float) -> Pause | None:
        """``None``: send (possibly as the elected half-open probe); else the pause to honour."""
        ...

    def observe(self, route_key: str, outcome: Outcome, now: float) -> None:
        """Record Kisi's answer to a request that was sent."""
        ...


def route_scope(route_key: str) -> str:
    """The guard scope of a route.

    >>> route_scope("PATCH /users/{id}")
    'route:PATCH /users/{id}'
    """
    return ROUTE_PREFIX + route_key


def parse_scope(text: str) -> str:
    """A scope from operator input: ``account``, ``route:GET /locks`` or bare ``GET /locks``."""
    if text == ACCOUNT:
        return ACCOUNT
    route_key = text.removeprefix(ROUTE_PREFIX)
    if not _ROUTE_KEY.match(route_key):
        raise ValueError(f"{text!r} is not 'account' or a route like 'PATCH /users/{{id}}'")
    return route_scope(route_key)


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

    @classmethod
    def from_item(cls, item: Mapping[str, AttributeValueTypeDef]) -> ScopeItem:
        """Parse a low-level DynamoDB item. An unknown state reads as closed (fail open)."""

        def number(name: str) -> float | None:
            raw = item.get(name, {}).get("N")
            return float(raw) if raw is not None else None

        scope = item.get("scope", {}).get("S", "")
        raw_state = item.get("state", {}).get("S", GuardState.CLOSED.value)
        try:
            state = GuardState(raw_state)
        except ValueError:
            logger.warning("guard: scope %r has unknown state %r; treating as closed",
                           scope, raw_state)
            state = GuardState.CLOSED
        return cls(
            scope=scope,
            state=state,
            reason=item.get("reason", {}).get("S", ""),
            opened_at=number("opened_at"),
            until=number("until"),
            cooldown_s=number("cooldown_s"),
            consecutive_401=int(number("consecutive_401") or 0),
            probe_until=number("probe_until"),
            updated_at=number("updated_at"),
        )

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
    >>> evidence(ACCOUNT, forbidden), evidence("route:GET /locks/{id}", forbidden)
    (<Evidence.GOOD: 'good'>, <Evidence.BAD: 'bad'>)
    """
    status = outcome.status
    if status is None or outcome.cls in _NEUTRAL_CLASSES:
        return Evidence.NEUTRAL
    if scope == ACCOUNT:
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
    is_account = item.scope == ACCOUNT
    if item.state is GuardState.HALF_OPEN:
        if kind is Evidence.BAD:
            cooldown = next_cooldown(item.cooldown_s, rules)
            return Trip(reopen_reason(item.scope, outcome), cooldown, GuardState.HALF_OPEN)
        if kind is Evidence.GOOD:
            return Recover(f"probe answered {outcome.status}: closed")
        return ReleaseProbe() if holds_probe else None
    if item.state is GuardState.CLOSED and is_account:
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
    if scope == ACCOUNT:
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


# -- the DynamoDB adapter ---------------------------------------------------------------------


def _n(value: float) -> AttributeValueTypeDef:
    return {"N": str(int(value)) if float(value).is_integer() else repr(float(value))}


def _s(value: str) -> AttributeValueTypeDef:
    return {"S": value}


# Attributes a state change writes (``consecutive_401`` is only ever ADDed to or zeroed).
_STATE_FIELDS = ("state", "reason", "opened_at", "until", "cooldown_s", "probe_until",
                 "updated_at")


class _Expression:
    """Builds one UpdateItem: every attribute name through a placeholder (``state``, ``until``
    and ``reason`` collide with DynamoDB's reserved words), values named by their role."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, AttributeValueTypeDef] = {}
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.adds: list[str] = []

    def name(self, attr: str) -> str:
        self.names[f"#{attr}"] = attr
        return f"#{attr}"

    def value(self, key: str, value: AttributeValueTypeDef) -> str:
        self.values[f":{key}"] = value
        return f":{key}"

    def set(self, attr: str, value: AttributeValueTypeDef) -> None:
        self.sets.append(f"{self.name(attr)} = {self.value(attr, value)}")

    def write_state(self, item: ScopeItem, *, counter: bool = False) -> None:
        """SET the state fields of ``item`` and REMOVE the ones it does not have."""
        row: dict[str, AttributeValueTypeDef | None] = {
            "state": _s(item.state.value),
            "reason": _s(item.reason) if item.reason else None,
            "opened_at": _n(item.opened_at) if item.opened_at is not None else None,
            "until": _n(item.until) if item.until is not None else None,
            "cooldown_s": _n(item.cooldown_s) if item.cooldown_s is not None else None,
            "probe_until": _n(item.probe_until) if item.probe_until is not None else None,
            "updated_at": _n(item.updated_at) if item.updated_at is not None else None,
        }
        if counter:
            row["consecutive_401"] = _n(item.consecutive_401)
        for attr, value in row.items():
            if value is None:
                self.removes.append(self.name(attr))
            else:
                self.set(attr, value)

    def request(self, table: str, scope: str, condition: str | None,
                return_values: str = "ALL_NEW") -> dict[str, Any]:
        clauses = []
        if self.sets:
            clauses.append("SET " + ", ".join(self.sets))
        if self.adds:
            clauses.append("ADD " + ", ".join(self.adds))
        if self.removes:
            clauses.append("REMOVE " + ", ".join(self.removes))
        request: dict[str, Any] = {
            "TableName": table,
            "Key": {"scope": _s(scope)},
            "UpdateExpression": " ".join(clauses),
            "ExpressionAttributeNames": self.names,
            "ReturnValues": return_values,
        }
        if self.values:
            request["ExpressionAttributeValues"] = self.values
        if condition is not None:
            request["ConditionExpression"] = condition
            request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return request


def _condition_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == _CONDITION_FAILED


@dataclass(slots=True)
class _Cached:
    item: ScopeItem
    read_at: float


@dataclass(slots=True)
class _Local:
    """This execution environment's view: last known items and the probe leases it holds."""

    items: dict[str, _Cached] = field(default_factory=dict)
    probes: dict[str, float] = field(default_factory=dict)


class DynamoGuard:
    """The guard over a DynamoDB table (hash key ``scope``), shared by every Lambda.

    One instance per execution environment: its cache and probe leases are that Lambda's view
    (Lambda runs one request at a time per environment, so no locking). ``check`` and
    ``observe`` fail open and never raise; ``open``, ``close``, ``reset`` and ``states`` are
    for the metrics Lambda and operators and let DynamoDB errors through.
    """

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        consecutive_401_threshold: int = 5,
        cooldown_s: float = 60.0,
        max_cooldown_s: float = 3600.0,
        cache_s: float = 2.0,
        probe_lease_s: float = 30.0,
    ) -> None:
        self._client = client
        self._table = table_name
        self.rules = GuardRules(consecutive_401_threshold, cooldown_s, max_cooldown_s,
                                cache_s, probe_lease_s)
        self._local = _Local()

    # -- hot path ---------------------------------------------------------------------------

    def check(self, route_key: str, now: float) -> Pause | None:
        """May a request on ``route_key`` be sent now? ``None``: yes (maybe as the probe).

        Reads the account and the route through the cache, pauses if either is open, and when
        a cooldown is over tries to become that scope's one half-open probe. Fails open: if
        DynamoDB is unreachable or throws, logs a warning and returns ``None``; the guard
        protects the account but must not take the gateway down.
        """
        try:
            return self._check(route_key, now)
        except Exception:
            logger.warning("guard: state unreadable, failing open (sending %s)", route_key,
                           exc_info=True)
            return None

    def observe(self, route_key: str, outcome: Outcome, now: float) -> None:
        """Count Kisi's answer: the 401 fast path, streak resets, and half-open verdicts.

        Never raises: a failed write is logged and dropped (the answer is already in hand).
        """
        for scope in (ACCOUNT, route_scope(route_key)):
            try:
                self._observe(scope, outcome, now)
            except Exception:
                logger.warning("guard: could not record %s for %s", outcome.status, scope,
                               exc_info=True)

    # -- alarm path and operators ------------------------------------------------------------

    def open(self, scope: str, reason: str, now: float, cooldown_s: float | None = None) -> None:
        """Open ``scope`` now for ``cooldown_s`` (default: the configured cooldown).

        Unconditional: the caller (the metrics Lambda on an alarm, or an operator) has decided.
        """
        cooldown = self.rules.cooldown_s if cooldown_s is None else cooldown_s
        if not cooldown > 0:
            raise ValueError("cooldown_s must be positive")
        expr = _Expression()
        expr.write_state(opened(ScopeItem(scope), reason, cooldown, now))
        self._update(expr.request(self._table, scope, None), now)
        logger.warning("guard: %s opened for %gs: %s", scope, cooldown, reason)

    def close(self, scope: str, now: float, reason: str = "") -> None:
        """Close ``scope`` now (and zero its 401 streak); a scope never opened is left alone."""
        self._close(scope, now, reason or "closed")

    def reset(self, scope: str | None, now: float) -> list[str]:
        """Operator reset: close ``scope``, or every scope when ``None``.

        Returns the scopes that were open or half-open and are now closed.
        """
        scopes = [scope] if scope is not None else [item.scope for item in self._scan()]
        was_open: list[str] = []
        for name in scopes:
            old = self._close(name, now, "reset by an operator")
            if old is not None and old.state is not GuardState.CLOSED:
                was_open.append(name)
        return was_open

    def states(self, now: float) -> list[dict[str, Any]]:
        """Every scope with its state, reason, times and counters; the account first."""
        items = sorted(self._scan(), key=lambda item: (item.scope != ACCOUNT, item.scope))
        return [item.summary(now) for item in items]

    # -- internals ---------------------------------------------------------------------------

    def _check(self, route_key: str, now: float) -> Pause | None:
        items = self._read((ACCOUNT, route_scope(route_key)), now)
        verdicts = [(item, admit(item, now)) for item in items]
        for _, verdict in verdicts:
            if isinstance(verdict, Pause):
                return verdict
        won: list[ScopeItem] = []
        for item, verdict in verdicts:
            if verdict is not Admit.PROBE_DUE:
                continue
            lost = self._elect(item, now)
            if lost is not None:
                for held in won:  # one request cannot probe one scope and wait for another
                    self._release(held, now)
                return lost
            won.append(item)
        return None

    def _read(self, scopes: Sequence[str], now: float) -> list[ScopeItem]:
        """Items for ``scopes``: from the cache when closed, calm and fresh, else one read."""
        found: dict[str, ScopeItem] = {}
        for scope in scopes:
            cached = self._local.items.get(scope)
            if cached is not None and self._fresh(cached, now):
                found[scope] = cached.item
        missing = [scope for scope in scopes if scope not in found]
        if missing:
            fetched = self._get(missing)
            for scope in missing:
                item = fetched.get(scope, ScopeItem(scope))
                self._remember(item, now)
                found[scope] = item
        return [found[scope] for scope in scopes]

    def _fresh(self, cached: _Cached, now: float) -> bool:
        # Only a calm closed scope is served from the cache: an open or half-open one is
        # re-read so its probe is elected as soon as the cooldown ends, and a counting one
        # so that a storm seen by other Lambdas pauses this one without waiting for the cache.
        calm = cached.item.state is GuardState.CLOSED and cached.item.consecutive_401 == 0
        return calm and 0 <= now - cached.read_at < self.rules.cache_s

    def _get(self, scopes: Sequence[str]) -> dict[str, ScopeItem]:
        keys = [{"scope": _s(scope)} for scope in scopes]
        found: dict[str, ScopeItem] = {}
        # Eventually consistent (half the cost): a stale read at worst pauses or sends one
        # request late; elections re-check the truth in their condition.
        response = self._client.batch_get_item(RequestItems={self._table: {"Keys": keys}})
        for raw in response.get("Responses", {}).get(self._table, []):
            item = ScopeItem.from_item(raw)
            found[item.scope] = item
        pending = response.get("UnprocessedKeys", {}).get(self._table)
        for key in pending["Keys"] if pending else []:  # throttled: fetch one by one
            single = self._client.get_item(TableName=self._table, Key=key).get("Item")
            if single is not None:
                item = ScopeItem.from_item(single)
                found[item.scope] = item
        return found

    def _remember(self, item: ScopeItem, now: float) -> None:
        self._local.items[item.scope] = _Cached(item, now)

    def _known(self, scope: str) -> ScopeItem | None:
        """The last item this Lambda saw for ``scope``, however old (no read on the hot path)."""
        cached = self._local.items.get(scope)
        return cached.item if cached is not None else None

    def _elect(self, item: ScopeItem, now: float) -> Pause | None:
        """Try to become ``item``'s half-open probe; ``None`` if elected (or closed meanwhile)."""
        new = elected(item, now, self.rules)
        expr = _Expression()
        expr.set("state", _s(new.state))
        expr.set("probe_until", _n(new.probe_until or now))
        expr.set("updated_at", _n(now))
        state, until, probe = expr.name("state"), expr.name("until"), expr.name("probe_until")
        open_, half = (expr.value("is_open", _s(GuardState.OPEN)),
                       expr.value("is_half_open", _s(GuardState.HALF_OPEN)))
        at = expr.value("now", _n(now))
        condition = (
            f"{state} IN ({open_}, {half})"
            f" AND (attribute_not_exists({until}) OR {until} <= {at})"
            f" AND (attribute_not_exists({probe}) OR {probe} <= {at})"
        )
        stored = self._update(expr.request(self._table, item.scope, condition), now)
        if isinstance(stored, ScopeItem):
            self._local.probes[item.scope] = stored.probe_until or new.probe_until or now
            logger.info("guard: %s half-open, this request is the probe", item.scope)
            return None
        current = stored.current
        if current is None:  # the item vanished: nothing to guard
            return None
        verdict = admit(current, now)
        if verdict is Admit.SEND:
            return None  # closed by someone else meanwhile
        if isinstance(verdict, Pause):
            return verdict
        return Pause(item.scope, item.reason or "paused", HALF_OPEN_RETRY_S)

    def _release(self, item: ScopeItem, now: float) -> None:
        lease = self._local.probes.pop(item.scope, None)
        if lease is None:
            return
        expr = _Expression()
        expr.set("probe_until", _n(now))
        expr.set("updated_at", _n(now))
        condition = (f"{expr.name('state')} = {expr.value('is_half_open', _s('half_open'))}"
                     f" AND {expr.name('probe_until')} = {expr.value('lease', _n(lease))}")
        self._update(expr.request(self._table, item.scope, condition), now)

    def _observe(self, scope: str, outcome: Outcome, now: float) -> None:
        kind = evidence(scope, outcome)
        if scope == ACCOUNT and kind is Evidence.BAD:
            item: ScopeItem | None = self._count_401(now)
        else:
            item = self._known(scope)
        if item is None:
            return  # never seen: nothing this answer could change without a read
        lease = self._local.probes.get(scope)
        holds = lease is not None and lease == item.probe_until
        change = transition(item, outcome, self.rules, holds_probe=holds)
        if change is None:
            return
        if isinstance(change, ReleaseProbe):
            self._release(item, now)
            return
        self._apply(item, change, now)

    def _count_401(self, now: float) -> ScopeItem:
        """ADD one to the account's streak atomically; the item after (one round trip)."""
        expr = _Expression()
        count, state = expr.name("consecutive_401"), expr.name("state")
        expr.adds.append(f"{count} {expr.value('one', _n(1))}")
        expr.set("updated_at", _n(now))
        expr.sets.append(
            f"{state} = if_not_exists({state}, {expr.value('closed', _s('closed'))})")
        stored = self._update(expr.request(self._table, ACCOUNT, None), now)
        assert isinstance(stored, ScopeItem)  # an unconditional update cannot lose
        return stored

    def _apply(self, item: ScopeItem, change: Transition, now: float) -> None:
        new = apply_transition(item, change, now)
        expr = _Expression()
        state = expr.name("state")
        if isinstance(change, ResetStreak):
            count = expr.name("consecutive_401")
            expr.set("consecutive_401", _n(0))
            expr.set("updated_at", _n(now))
            condition = (f"{state} = {expr.value('is_closed', _s('closed'))}"
                         f" AND {count} > {expr.value('zero', _n(0))}")
        else:
            expr.write_state(new, counter=isinstance(change, Recover))
            if isinstance(change, Trip) and change.expect is GuardState.CLOSED:
                condition = (f"(attribute_not_exists({state})"
                             f" OR {state} = {expr.value('is_closed', _s('closed'))})")
            else:
                condition = f"{state} = {expr.value('is_half_open', _s('half_open'))}"
        stored = self._update(expr.request(self._table, item.scope, condition), now)
        if not isinstance(stored, ScopeItem):
            return  # another Lambda made this transition first
        if isinstance(change, Trip | Recover):
            self._local.probes.pop(item.scope, None)
            log = logger.warning if isinstance(change, Trip) else logger.info
            log("guard: %s %s: %s", item.scope, stored.state.value, stored.reason)

    def _close(self, scope: str, now: float, reason: str) -> ScopeItem | None:
        """Close an existing scope; the item as it was, or ``None`` if there was none."""
        expr = _Expression()
        expr.write_state(closed(ScopeItem(scope), reason, now), counter=True)
        condition = f"attribute_exists({expr.name('scope')})"
        request = expr.request(self._table, scope, condition, return_values="ALL_OLD")
        try:
            response = self._client.update_item(**request)
        except ClientError as exc:
            if _condition_failed(exc):
                return None
            raise
        self._local.items.pop(scope, None)
        self._local.probes.pop(scope, None)
        old = ScopeItem.from_item(response.get("Attributes", {}))
        if old.state is not GuardState.CLOSED:
            logger.info("guard: %s closed: %s", scope, reason)
        return old

    def _update(self, request: dict[str, Any], now: float) -> ScopeItem | _Lost:
        """Run an UpdateItem; the item after it, or what beat a failed condition."""
        scope = request["Key"]["scope"]["S"]
        try:
            response = self._client.update_item(**request)
        except ClientError as exc:
            if not _condition_failed(exc):
                raise
            self._local.items.pop(scope, None)  # someone else moved it: re-read next time
            # ReturnValuesOnConditionCheckFailure=ALL_OLD puts the winning item here.
            old = cast("dict[str, Any]", exc.response).get("Item")
            current = ScopeItem.from_item(old) if old else None
            return _Lost(current)
        item = ScopeItem.from_item(response.get("Attributes", {}))
        self._remember(item, now)
        return item

    def _scan(self) -> list[ScopeItem]:
        items: list[ScopeItem] = []
        request: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        while True:
            page = self._client.scan(**request)
            items.extend(ScopeItem.from_item(raw) for raw in page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last:
                return items
            request["ExclusiveStartKey"] = last


@dataclass(frozen=True, slots=True)
class _Lost:
    """A conditional write lost: ``current`` is the item that made it fail, when returned."""

    current: ScopeItem | None


# -- operator CLI -----------------------------------------------------------------------------


def _scope_argument(text: str) -> str:
    try:
        return parse_scope(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kisi_gateway.stores.guard",
        description="Inspect or reset the kisi-gateway guard (pauses on bad-request storms).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="print every scope's state as JSON")
    status.add_argument("--table", required=True, help="the guard's DynamoDB table")
    reset = commands.add_parser("reset", help="close one scope, or all of them")
    reset.add_argument("--scope", type=_scope_argument, default=None,
                       help="'account', 'route:PATCH /users/{id}' or 'PATCH /users/{id}'; "
                            "every scope when omitted")
    reset.add_argument("--table", required=True, help="the guard's DynamoDB table")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    client: DynamoDBClient | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """``python -m kisi_gateway.stores.guard status|reset ...``; returns the exit status."""
    args = _parser().parse_args(argv)
    if client is None:
        import boto3  # noqa: PLC0415 - the Lambda hot path never needs the CLI's session

        client = boto3.client("dynamodb")
    guard = DynamoGuard(client, args.table)
    now = clock()
    try:
        if args.command == "status":
            print(json.dumps(guard.states(now), indent=2))
        else:
            print(json.dumps({"closed": guard.reset(args.scope, now)}))
    except (BotoCoreError, ClientError) as exc:  # no table, no credentials, no network
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
