"""One in-memory implementation of each store port, in one place.

For the functional tests (the whole pipeline without moto) and the benchmark (the library's
own runners on a virtual clock). Thread-safe; deterministic for a given clock. Not for
Lambdas: each execution environment would keep its own state.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from kisi_gateway.core.breaker import (
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
    is_account,
    scopes_of,
    transition,
)
from kisi_gateway.core.identity import Caller, Credential, KisiLogin, Tenant
from kisi_gateway.core.known_bad import MAX_ENTRIES_PER_PATH, KnownAnswer
from kisi_gateway.core.lifecycle import Change, applied, created_by, permits
from kisi_gateway.core.outcome import Outcome, OutcomeClass
from kisi_gateway.core.ratelimit import (
    ANYONE,
    KISI_USER_RATE,
    Booking,
    BucketState,
    BudgetLimits,
    Grant,
    after_throttle,
    plan_acquire,
    throttle_targets,
)
from kisi_gateway.core.records import RequestRecord, RetryMessage
from kisi_gateway.stores.ports import Applied, VaultError


class MemoryRecordStore:
    """Request records in a dict; every change checked against the lifecycle table."""

    def __init__(self, on_change: Callable[[RequestRecord | None, RequestRecord], None]
                 | None = None) -> None:
        self._records: dict[str, RequestRecord] = {}
        self._lock = threading.Lock()
        self._on_change = on_change or (lambda before, after: None)

    def create(self, record: RequestRecord) -> bool:
        created_by(record)
        with self._lock:
            if record.request_id in self._records:
                return False
            self._records[record.request_id] = record
        self._on_change(None, record)
        return True

    def get(self, request_id: str) -> RequestRecord | None:
        with self._lock:
            return self._records.get(request_id)

    def apply(self, request_id: str, change: Change) -> Applied | None:
        with self._lock:
            before = self._records.get(request_id)
            if before is None or not permits(before, change):
                return None
            after = applied(before, change)
            if after is None:
                del self._records[request_id]
            else:
                self._records[request_id] = after
        if after is not None:
            self._on_change(before, after)
        return Applied(before, after)

    def all(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records.values())


@dataclass(slots=True, eq=False)
class QueuedMessage:
    """A message in :class:`MemoryQueue` and SQS's bookkeeping of it."""

    message: RetryMessage
    visible_at: float
    receipt_handle: str = ""
    receive_count: int = 0


@dataclass
class MemoryQueue:
    """A standard queue on an injected clock: delays, visibility, receive and delete.

    ``receive`` hides what it returns for ``visibility_s``; ``postpone`` changes that; a message
    received more than ``max_receive_count`` times moves to ``redriven``, as SQS's redrive does.
    """

    clock: Callable[[], float]
    visibility_s: float = 180.0
    max_receive_count: int = 15
    dead_lettered: list[tuple[RetryMessage, str]] = field(default_factory=list)
    redriven: list[RetryMessage] = field(default_factory=list)
    sent: int = 0
    _messages: dict[str, QueuedMessage] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enqueue(self, message: RetryMessage, delay_s: int) -> None:
        with self._lock:
            handle = f"m{next(self._ids)}"
            self._messages[handle] = QueuedMessage(message, self.clock() + max(0, delay_s))
            self.sent += 1

    def postpone(self, receipt_handle: str, delay_s: int) -> None:
        with self._lock:
            for queued in self._messages.values():
                if queued.receipt_handle == receipt_handle:
                    queued.visible_at = self.clock() + max(0, delay_s)

    def dead_letter(self, message: RetryMessage, reason: str) -> None:
        with self._lock:
            self.dead_lettered.append((message, reason))

    def receive(self, limit: int = 10) -> list[tuple[RetryMessage, str]]:
        """Up to ``limit`` visible messages with their receipt handles, oldest first."""
        now = self.clock()
        taken: list[tuple[RetryMessage, str]] = []
        with self._lock:
            ready = sorted(
                (q for q in self._messages.values() if q.visible_at <= now),
                key=lambda q: q.visible_at,
            )
            for queued in ready[:limit]:
                queued.receive_count += 1
                if queued.receive_count > self.max_receive_count:
                    self._drop(queued)
                    self.redriven.append(queued.message)
                    continue
                queued.receipt_handle = f"r{next(self._ids)}"
                queued.visible_at = now + self.visibility_s
                taken.append((queued.message, queued.receipt_handle))
        return taken

    def delete(self, receipt_handle: str) -> None:
        with self._lock:
            for queued in list(self._messages.values()):
                if queued.receipt_handle == receipt_handle:
                    self._drop(queued)

    def next_visible(self) -> float | None:
        with self._lock:
            return min((q.visible_at for q in self._messages.values()), default=None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)

    def _drop(self, queued: QueuedMessage) -> None:
        for handle, candidate in list(self._messages.items()):
            if candidate is queued:
                del self._messages[handle]


class MemorySendBudget:
    """A send budget for one process: the same arithmetic, state under a lock.

    Not for Lambdas: each execution environment would have its own budget, and together they
    would exceed Kisi's limit.
    """

    def __init__(
        self,
        *,
        rate: float = KISI_USER_RATE,
        route_rates: Mapping[str, float] | None = None,
        burst: float = 1.0,
        limits: BudgetLimits | None = None,
    ) -> None:
        self._limits = limits or BudgetLimits(rate, dict(route_rates or {}), burst)
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str | None], BucketState] = {}

    def state(self, bucket: str, route_key: str | None = None) -> BucketState:
        """A user's bucket, or the own bucket of ``route_key`` in it (for inspection)."""
        configured = self._limits.rate
        if route_key is not None:
            route_rate = self._limits.route_rate(route_key)
            if route_rate is None:
                raise KeyError(f"{route_key!r} has no rate of its own")
            configured = route_rate
        with self._lock:
            return self._states.get((bucket, route_key)) or self._limits.fresh(configured)

    def acquire(
        self, bucket: str, route_key: str, now: float, max_wait_s: float = 0.0,
        booking: Booking = ANYONE,
    ) -> Grant:
        limits = self._limits
        route_rate = limits.route_rate(route_key)
        with self._lock:
            account = self._states.get((bucket, None)) or limits.fresh(limits.rate)
            route = None
            if route_rate is not None:
                route = self._states.get((bucket, route_key)) or limits.fresh(route_rate)
            plan = plan_acquire(
                limits, account, route, now=now, max_wait_s=max_wait_s, route_rate=route_rate,
                booking=booking,
            )
            if plan.account is not None:
                self._states[(bucket, None)] = plan.account
            if plan.route is not None:
                self._states[(bucket, route_key)] = plan.route
            return plan.grant

    def observe(
        self, bucket: str, route_key: str, outcome: Outcome, retry_after_s: float | None,
        now: float,
    ) -> None:
        if outcome.cls is not OutcomeClass.RATE_LIMITED:
            return  # the rate recovers with time (RateControl.rate_at): nothing to write
        limits = self._limits
        with self._lock:
            for key, configured, close_gate in throttle_targets(limits, route_key):
                state = self._states.get((bucket, key)) or limits.fresh(configured)
                self._states[(bucket, key)] = after_throttle(
                    state, configured, limits, now=now, retry_after_s=retry_after_s,
                    close_gate=close_gate,
                )



class MemoryGuard:
    """The guard for one process: the breaker's own functions over a dict.

    The deployed guard reads DynamoDB through a short per-Lambda cache that serves only calm
    closed scopes (while the guard lets everything through anyway), so leaving the cache out
    changes no pause and no probe.
    """

    def __init__(self, rules: GuardRules | None = None) -> None:
        self.rules = rules or GuardRules()
        self._items: dict[str, ScopeItem] = {}
        self._probes: dict[str, float] = {}  # scope -> lease of the probe this fleet holds
        self._known_bad: dict[str, float] = {}  # identity -> end of its newest known-bad entry
        self.trips: list[tuple[float, str]] = []  # (when, scope): for the report

    def check(self, identity: str, route_key: str, now: float) -> Pause | None:
        """``None``: send (possibly as the half-open probe); else the pause to honour."""
        items = [self._item(scope) for scope in scopes_of(identity, route_key)]
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

    def observe(self, identity: str, route_key: str, outcome: Outcome, now: float) -> None:
        """Count Kisi's answer as ``the deployed guard`` does (401 streak, probe verdicts)."""
        for scope in scopes_of(identity, route_key):
            item = self._items.get(scope)
            if is_account(scope) and evidence(scope, outcome) is Evidence.BAD:
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

    def probing(self, identity: str, route_key: str) -> list[str]:
        """Scopes whose probe lease this process holds (elected by its last check)."""
        return [scope for scope in scopes_of(identity, route_key)
                if scope in self._probes
                and self._item(scope).probe_until == self._probes[scope]]

    def may_know_bad(self, identity: str, now: float) -> bool:
        """The known-bad hint, always current here (one process, no cache)."""
        return self._known_bad.get(identity, 0.0) > now

    def note_known_bad(self, identity: str, until: float, now: float) -> None:
        self._known_bad[identity] = max(until, self._known_bad.get(identity, 0.0))

    def _item(self, scope: str) -> ScopeItem:
        return self._items.get(scope) or ScopeItem(scope)


class MemoryDirectory:
    """The directory in memory (tests and the benchmark)."""

    def __init__(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.callers: dict[str, Caller] = {}
        self.logins: dict[str, tuple[KisiLogin, float]] = {}
        self._lock = threading.Lock()

    def caller(self, api_key_id: str) -> Caller | None:
        return self.callers.get(api_key_id)

    def tenant(self, name: str) -> Tenant | None:
        return self.tenants.get(name)

    def login(self, identity: str, now: float) -> KisiLogin | None:
        with self._lock:
            found = self.logins.get(identity)
        return found[0] if found is not None and found[1] > now else None

    def remember_login(self, identity: str, login: KisiLogin, until: float) -> None:
        with self._lock:
            self.logins[identity] = (login, until)


class MemoryVault:
    """Seals credentials in memory: the sealed bytes are an opaque token, bound to a context."""

    def __init__(self) -> None:
        self._sealed: dict[bytes, tuple[Credential, str]] = {}
        self._ids = itertools.count()

    def seal(self, credential: Credential, context: str) -> bytes:
        token = f"sealed-{next(self._ids)}".encode()
        self._sealed[token] = (credential, context)
        return token

    def open(self, sealed: bytes, context: str) -> Credential:
        found = self._sealed.get(sealed)
        if found is None or found[1] != context:
            raise VaultError("no such sealed credential for this request")
        return found[0]


class MemoryKnownBad:
    """Known-bad entries in a dict: ``(identity, resource) -> {request key: answer}``."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], dict[str, KnownAnswer]] = {}
        self._lock = threading.Lock()

    def find(self, identity: str, resource: str, key: str, now: float) -> KnownAnswer | None:
        with self._lock:
            answer = self._entries.get((identity, resource), {}).get(key)
        return answer if answer is not None and answer.live(now) else None

    def remember(self, identity: str, resource: str, key: str, answer: KnownAnswer) -> None:
        with self._lock:
            entries = self._entries.setdefault((identity, resource), {})
            if key not in entries and len(entries) >= MAX_ENTRIES_PER_PATH:
                entries.clear()  # as the DynamoDB adapter does: the newest refusal wins
            entries[key] = answer

    def forget(self, identity: str, resource: str) -> None:
        with self._lock:
            self._entries.pop((identity, resource), None)
