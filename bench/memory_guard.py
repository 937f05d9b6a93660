"""The gateway's guard for the simulation: the library's decisions over an in-memory store.

Every decision is :mod:`kisi_gateway.stores.guard`'s own pure function — :func:`admit` (send, pause
or
probe), :func:`transition` (what an answer does to a scope), :func:`apply_transition` and
:func:`elected` — with :class:`GuardRules` at the deployed defaults (5 consecutive 401s, 60 s
cooldown doubled by each failed probe). Only the storage differs from
:class:`~kisi_gateway.stores.guard.DynamoGuard`: one consistent view shared by every simulated
Lambda,
where the deployed guard reads DynamoDB through a 2 s per-Lambda cache. That cache serves only
calm closed scopes, i.e. while the guard lets everything through anyway, so leaving it out
changes no pause and no probe.
"""

from __future__ import annotations

from dataclasses import replace

from kisi_gateway.core.breaker import (
    ACCOUNT,
    Admit,
    Evidence,
    GuardRules,
    Pause,
    Recover,
    ReleaseProbe,
    ScopeItem,
    Trip,
    admit,
    apply_transition,
    elected,
    evidence,
    route_scope,
    transition,
)
from kisi_gateway.core.outcome import Outcome


class InMemoryGuard:
    """A :class:`~kisi_gateway.stores.guard.Guard` for one simulated fleet."""

    def __init__(self, rules: GuardRules | None = None) -> None:
        self.rules = rules or GuardRules()
        self._items: dict[str, ScopeItem] = {}
        self._probes: dict[str, float] = {}  # scope -> lease of the probe this fleet holds
        self.trips: list[tuple[float, str]] = []  # (when, scope): for the report

    def check(self, route_key: str, now: float) -> Pause | None:
        """``None``: send (possibly as the half-open probe); else the pause to honour."""
        items = [self._item(scope) for scope in (ACCOUNT, route_scope(route_key))]
        verdicts = [(item, admit(item, now)) for item in items]
        for _, verdict in verdicts:
            if isinstance(verdict, Pause):
                return verdict
        for item, verdict in verdicts:
            if verdict is Admit.PROBE_DUE:
                probe = elected(item, now, self.rules)
                self._items[item.scope] = probe
                self._probes[item.scope] = probe.probe_until or now
        return None

    def observe(self, route_key: str, outcome: Outcome, now: float) -> None:
        """Count Kisi's answer as ``DynamoGuard.observe`` does (401 streak, probe verdicts)."""
        for scope in (ACCOUNT, route_scope(route_key)):
            item = self._items.get(scope)
            if scope == ACCOUNT and evidence(scope, outcome) is Evidence.BAD:
                base = item or ScopeItem(scope)
                item = replace(base, consecutive_401=base.consecutive_401 + 1, updated_at=now)
                self._items[scope] = item
            if item is None:
                continue
            lease = self._probes.get(scope)
            holds = lease is not None and lease == item.probe_until
            change = transition(item, outcome, self.rules, holds_probe=holds)
            if change is None:
                continue
            if isinstance(change, ReleaseProbe | Trip | Recover):
                self._probes.pop(scope, None)
            if isinstance(change, Trip):
                self.trips.append((now, scope))
            self._items[scope] = apply_transition(item, change, now)

    def _item(self, scope: str) -> ScopeItem:
        return self._items.get(scope) or ScopeItem(scope)
