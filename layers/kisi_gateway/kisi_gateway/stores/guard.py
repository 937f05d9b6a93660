"""The guard's state in DynamoDB, shared by every Lambda.

The rules are :mod:`kisi_gateway.core.breaker`'s; this module keeps their state.

Two paths trip it (DESIGN.md, "Send budget and guard"). The fast path runs in every sending
Lambda: each 401 atomically increments ``consecutive_401`` on the account item, so five 401s
spread over any number of Lambdas open the account within a handful of requests, not minutes.
The alarm path is the metrics Lambda: it watches bad-request rates and volumes per route and
calls :meth:`DynamoGuard.open` / :meth:`DynamoGuard.close`.

Cost. The healthy path writes nothing: a success writes only when this Lambda's last view of
the account shows a 401 streak (to reset it) or a half-open scope. Reads go through a per-scope
cache of ``cache_s`` seconds that only serves *closed* scopes with no 401 streak: an open,
half-open or counting scope is always re-read, so a probe is elected promptly and a storm
another Lambda is seeing pauses this one at once.

Failure policy: **fails open**. When DynamoDB is unreachable or throws, :meth:`~DynamoGuard.check`
logs a warning and answers "send", and :meth:`~DynamoGuard.observe` logs and drops its write.
The guard protects the account from suspension; it must not itself take the gateway down.

Item layout, and why not Powertools' circuit breaker: :mod:`.guard_state`.

Operator CLI (boto3's default session; ``AWS_ENDPOINT_URL`` points it at moto locally)::

    python -m ops guard status --table NAME
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kisi_gateway.core.breaker import (
    HALF_OPEN_RETRY_S,
    Admit,
    Evidence,
    GuardRules,
    GuardState,
    Pause,
    Recover,
    ReleaseProbe,
    ResetStreak,
    ScopeItem,
    Transition,
    Trip,
    account_scope,
    admit,
    apply_transition,
    closed,
    elected,
    evidence,
    is_account,
    opened,
    scopes_of,
    transition,
)
from kisi_gateway.core.outcome import Outcome
from kisi_gateway.stores.dynamo import Expression, Lost, conditional, n, read, s
from kisi_gateway.stores.guard_state import key_of, scope_item, write_state
from kisi_gateway.stores.ports import GuardStoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

logger = logging.getLogger(__name__)


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
        hint_max_age_s: float = 1.0,
    ) -> None:
        if not hint_max_age_s >= 0:
            raise ValueError("hint_max_age_s must not be negative")
        self._client = client
        self._table = table_name
        self.rules = GuardRules(consecutive_401_threshold, cooldown_s, max_cooldown_s,
                                cache_s, probe_lease_s)
        self.hint_max_age_s = hint_max_age_s
        self._local = _Local()

    # -- hot path ---------------------------------------------------------------------------

    def check(self, identity: str, route_key: str, now: float) -> Pause | None:
        """May a request on ``route_key`` be sent now? ``None``: yes (maybe as the probe).

        Reads the account and the route through the cache, pauses if either is open, and when
        a cooldown is over tries to become that scope's one half-open probe. Fails open: if
        DynamoDB is unreachable or throws, logs a warning and returns ``None``; the guard
        protects the account but must not take the gateway down.
        """
        try:
            return self._check(identity, route_key, now)
        except Exception:
            logger.warning("guard: state unreadable, failing open (sending %s)", route_key,
                           exc_info=True)
            return None

    def observe(self, identity: str, route_key: str, outcome: Outcome, now: float) -> None:
        """Count Kisi's answer: the 401 fast path, streak resets, and half-open verdicts.

        Never raises: a failed write is logged and dropped (the answer is already in hand).
        """
        for scope in scopes_of(identity, route_key):
            try:
                self._observe(scope, outcome, now)
            except Exception:
                logger.warning("guard: could not record %s for %s", outcome.status, scope,
                               exc_info=True)

    def probing(self, identity: str, route_key: str) -> list[str]:
        """Scopes whose half-open probe lease this Lambda holds (its last check won them)."""
        held = []
        for scope in scopes_of(identity, route_key):
            lease, known = self._local.probes.get(scope), self._known(scope)
            if lease is not None and known is not None and known.probe_until == lease:
                held.append(scope)
        return held

    # -- known-bad hints (stores.ports.KnownBadHints) ---------------------------------------

    def may_know_bad(self, identity: str, now: float) -> bool:
        """Whether ``identity`` may have live known-bad entries, from this Lambda's last read
        of its account item: ``False`` only when that read is younger than
        ``hint_max_age_s`` (the guard's verdict cache, so a calm identity's sends read
        nothing more) and shows no entry ahead. No read here: an older view says "maybe"."""
        cached = self._local.items.get(account_scope(identity))
        if cached is None or not 0 <= now - cached.read_at < self.hint_max_age_s:
            return True
        until = cached.item.known_bad_until
        return until is not None and until > now

    def note_known_bad(self, identity: str, until: float, now: float) -> None:
        """Set the account item's ``known_bad_until`` (one UpdateItem; entries share one
        window length, so the newest note is the latest end). Never raises: a lost note means
        other Lambdas may send one repeat until the entry's next note, and is logged."""
        expr = Expression()
        expr.set("known_bad_until", n(until))
        state = expr.name("state")
        expr.sets.append(
            f"{state} = if_not_exists({state}, {expr.value('closed', s('closed'))})")
        try:
            self._update(expr.update(self._table, key_of(account_scope(identity)), None), now)
        except Exception:
            logger.warning("guard: known-bad hint not written", exc_info=True)

    # -- alarm path and operators ------------------------------------------------------------

    def open(self, scope: str, reason: str, now: float, cooldown_s: float | None = None) -> None:
        """Open ``scope`` now for ``cooldown_s`` (default: the configured cooldown).

        Unconditional: the caller (the metrics Lambda on an alarm, or an operator) has decided.
        """
        cooldown = self.rules.cooldown_s if cooldown_s is None else cooldown_s
        if not cooldown > 0:
            raise ValueError("cooldown_s must be positive")
        expr = Expression()
        write_state(expr, opened(ScopeItem(scope), reason, cooldown, now))
        self._update(expr.update(self._table, key_of(scope), None), now)
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
        """Every scope with its state, reason, times and counters, by identity."""
        items = sorted(self._scan(), key=lambda item: (item.scope.split('|')[0], item.scope))
        return [item.summary(now) for item in items]

    # -- internals ---------------------------------------------------------------------------

    def _check(self, identity: str, route_key: str, now: float) -> Pause | None:
        items = self._read(scopes_of(identity, route_key), now)
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
        keys = [key_of(scope) for scope in scopes]
        found: dict[str, ScopeItem] = {}
        # Eventually consistent (half the cost): a stale read at worst pauses or sends one
        # request late; elections re-check the truth in their condition.
        response = read(self._client.batch_get_item,
                        {"RequestItems": {self._table: {"Keys": keys}}}, GuardStoreError)
        for raw in response.get("Responses", {}).get(self._table, []):
            item = scope_item(raw)
            found[item.scope] = item
        pending = response.get("UnprocessedKeys", {}).get(self._table)
        for key in pending["Keys"] if pending else []:  # throttled: fetch one by one
            single = read(self._client.get_item, {"TableName": self._table, "Key": key},
                          GuardStoreError).get("Item")
            if single is not None:
                item = scope_item(single)
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
        expr = Expression()
        expr.set("state", s(new.state))
        expr.set("probe_until", n(new.probe_until or now))
        expr.set("updated_at", n(now))
        state, until, probe = expr.name("state"), expr.name("until"), expr.name("probe_until")
        open_, half = (expr.value("is_open", s(GuardState.OPEN)),
                       expr.value("is_half_open", s(GuardState.HALF_OPEN)))
        at = expr.value("now", n(now))
        condition = (
            f"{state} IN ({open_}, {half})"
            f" AND (attribute_not_exists({until}) OR {until} <= {at})"
            f" AND (attribute_not_exists({probe}) OR {probe} <= {at})"
        )
        stored = self._update(expr.update(self._table, key_of(item.scope), condition), now)
        if isinstance(stored, ScopeItem):
            self._local.probes[item.scope] = stored.probe_until or new.probe_until or now
            logger.info("guard: %s half-open, this request is the probe", item.scope)
            return None
        if stored.item is None:  # the item vanished: nothing to guard
            return None
        current = scope_item(stored.item)
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
        expr = Expression()
        expr.set("probe_until", n(now))
        expr.set("updated_at", n(now))
        condition = (f"{expr.name('state')} = {expr.value('is_half_open', s('half_open'))}"
                     f" AND {expr.name('probe_until')} = {expr.value('lease', n(lease))}")
        self._update(expr.update(self._table, key_of(item.scope), condition), now)

    def _observe(self, scope: str, outcome: Outcome, now: float) -> None:
        kind = evidence(scope, outcome)
        if is_account(scope) and kind is Evidence.BAD:
            item: ScopeItem | None = self._count_401(scope, now)
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

    def _count_401(self, scope: str, now: float) -> ScopeItem:
        """ADD one to the account's streak atomically; the item after (one round trip)."""
        expr = Expression()
        count, state = expr.name("consecutive_401"), expr.name("state")
        expr.adds.append(f"{count} {expr.value('one', n(1))}")
        expr.set("updated_at", n(now))
        expr.sets.append(
            f"{state} = if_not_exists({state}, {expr.value('closed', s('closed'))})")
        stored = self._update(expr.update(self._table, key_of(scope), None), now)
        assert isinstance(stored, ScopeItem)  # an unconditional update cannot lose
        return stored

    def _apply(self, item: ScopeItem, change: Transition, now: float) -> None:
        new = apply_transition(item, change, now)
        expr = Expression()
        state = expr.name("state")
        if isinstance(change, ResetStreak):
            count = expr.name("consecutive_401")
            expr.set("consecutive_401", n(0))
            expr.set("updated_at", n(now))
            condition = (f"{state} = {expr.value('is_closed', s('closed'))}"
                         f" AND {count} > {expr.value('zero', n(0))}")
        else:
            write_state(expr, new, counter=isinstance(change, Recover))
            if isinstance(change, Trip) and change.expect is GuardState.CLOSED:
                condition = (f"(attribute_not_exists({state})"
                             f" OR {state} = {expr.value('is_closed', s('closed'))})")
            else:
                condition = f"{state} = {expr.value('is_half_open', s('half_open'))}"
        stored = self._update(expr.update(self._table, key_of(item.scope), condition), now)
        if not isinstance(stored, ScopeItem):
            return  # another Lambda made this transition first
        if isinstance(change, Trip | Recover):
            self._local.probes.pop(item.scope, None)
            log = logger.warning if isinstance(change, Trip) else logger.info
            log("guard: %s %s: %s", item.scope, stored.state.value, stored.reason)

    def _close(self, scope: str, now: float, reason: str) -> ScopeItem | None:
        """Close an existing scope; the item as it was, or ``None`` if there was none."""
        expr = Expression()
        write_state(expr, closed(ScopeItem(scope), reason, now), counter=True)
        condition = f"attribute_exists({expr.name('scope')})"
        request = expr.update(self._table, key_of(scope), condition, return_values="ALL_OLD")
        response = conditional(self._client.update_item, request, GuardStoreError)
        if isinstance(response, Lost):
            return None
        self._local.items.pop(scope, None)
        self._local.probes.pop(scope, None)
        old = scope_item(response.get("Attributes", {}))
        if old.state is not GuardState.CLOSED:
            logger.info("guard: %s closed: %s", scope, reason)
        return old

    def _update(self, request: dict[str, Any], now: float) -> ScopeItem | Lost:
        """Run an UpdateItem; the item after it, or what beat a failed condition."""
        scope = request["Key"]["scope"]["S"]
        response = conditional(self._client.update_item, request, GuardStoreError)
        if isinstance(response, Lost):
            self._local.items.pop(scope, None)  # someone else moved it: re-read next time
            return response
        item = scope_item(response.get("Attributes", {}))
        self._remember(item, now)
        return item

    def _scan(self) -> list[ScopeItem]:
        items: list[ScopeItem] = []
        request: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        while True:
            page = read(self._client.scan, request, GuardStoreError)
            items.extend(scope_item(raw) for raw in page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last:
                return items
            request["ExclusiveStartKey"] = last
