"""A per-identity cache in front of the guard: no store round trip for a calm identity's send.

The guard's verdict comes from a shared table, and reading it on every send costs a DynamoDB
round trip next to the budget's. Yet for a healthy identity the verdict is "send" almost
always, and the guard's state changes rarely. :class:`CachedGuard` reuses a "send" verdict
for at most ``staleness_s`` seconds after the guard gave it, so a pause written by another
Lambda (the fast path of a 401 storm there, or the metrics Lambda on an alarm) is honoured
here within that bound.

A verdict is reused only once it has proved itself: after the guard said "send" *and* a
success came back for that identity and route. The guard also answers "send" to the one
request it elects as a half-open probe; that admission must not be reused by the next
request, and until the probe's success closes the scope, it is not. Any other answer
(a 4xx, a 429, a 5xx, a network failure) forgets every cached verdict of the identity, so
the next check reads the guard again. Pauses are never cached: they come from the guard
each time, so a probe is elected as soon as a cooldown ends.

>>> from kisi_gateway.core.outcome import classify_status
>>> class Counting:
...     reads = 0
...     def check(self, identity, route_key, now):
...         Counting.reads += 1
...     def observe(self, identity, route_key, outcome, now): pass
>>> guard = CachedGuard(Counting(), staleness_s=1.0)
>>> guard.check("id", "GET /locks", 10.0); guard.observe("id", "GET /locks",
...     classify_status(200), 10.1); guard.check("id", "GET /locks", 10.9)
>>> Counting.reads
1
"""

from __future__ import annotations

from dataclasses import dataclass

from kisi_gateway.core.breaker import Pause
from kisi_gateway.core.outcome import Outcome, OutcomeClass
from kisi_gateway.stores.ports import Guard

DEFAULT_STALENESS_S = 1.0
MAX_ENTRIES = 4096  # identities x routes one execution environment remembers at most

_GOOD = (OutcomeClass.SUCCESS, OutcomeClass.REDIRECT)


@dataclass(slots=True)
class _Clear:
    """The guard said "send" at ``at``; ``proven`` once a success came back since."""

    at: float
    proven: bool = False


class CachedGuard:
    """A :class:`~kisi_gateway.stores.ports.Guard` that reuses proven "send" verdicts of
    ``inner`` for at most ``staleness_s`` seconds (see the module docstring).

    One instance per execution environment, like the guard it wraps (Lambda runs one request
    at a time per environment, so no locking).
    """

    def __init__(
        self, inner: Guard, *, staleness_s: float = DEFAULT_STALENESS_S,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        if not staleness_s >= 0:
            raise ValueError("staleness_s must not be negative")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.inner = inner
        self.staleness_s = staleness_s
        self._max_entries = max_entries
        self._clear: dict[tuple[str, str], _Clear] = {}

    def check(self, identity: str, route_key: str, now: float) -> Pause | None:
        """The guard's verdict; a proven "send" younger than ``staleness_s`` costs no call."""
        key = (identity, route_key)
        clear = self._clear.get(key)
        if clear is not None and clear.proven and 0 <= now - clear.at < self.staleness_s:
            return None
        verdict = self.inner.check(identity, route_key, now)
        if verdict is None:
            if len(self._clear) >= self._max_entries and key not in self._clear:
                self._clear.pop(next(iter(self._clear)))  # the oldest entry goes
            self._clear[key] = _Clear(now)
        else:
            self._clear.pop(key, None)
        return verdict

    def observe(self, identity: str, route_key: str, outcome: Outcome, now: float) -> None:
        """Pass Kisi's answer to the guard; a success proves the verdict, anything else
        forgets all of the identity's (a 401 pauses the whole identity, not one route)."""
        self.inner.observe(identity, route_key, outcome, now)
        if outcome.cls in _GOOD:
            clear = self._clear.get((identity, route_key))
            if clear is not None:
                clear.proven = True
            return
        for key in [key for key in self._clear if key[0] == identity]:
            del self._clear[key]

    def probing(self, identity: str, route_key: str) -> list[str]:
        """The inner guard's elected probes. A reused verdict elects none: only a proven
        "send" is reused, and a probe's admission is never proven before its answer."""
        return self.inner.probing(identity, route_key)
