"""Kisi's rate limits and its suspension of integrations that send too many bad requests.

Pure state machines: timestamps come in as arguments, nothing reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["ROUTE_BURST", "Limit", "RateLimiter", "SuspensionTracker", "TokenBucket"]

ROUTE_BURST: Final = 1.0  # Kisi's stricter limits read as "one per interval", no burst


@dataclass
class TokenBucket:
    """A token bucket driven by timestamps passed in (no clock inside: testable math)."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def wait_for_token(self) -> float:
        """Seconds until one token is available (0 when one is)."""
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


@dataclass(frozen=True)
class Limit:
    """One bucket a request must pass: its scope (``user:1``, ``ip:...``) and its shape."""

    scope: str
    rate: float
    burst: float


class RateLimiter:
    """Named token buckets; a request takes a token from each of its buckets or from none.

    Not thread-safe on its own: the simulator calls it under its lock.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def acquire(self, limits: Sequence[Limit], now: float) -> float:
        """0.0 when every bucket had a token (all taken), else seconds to wait (none taken)."""
        buckets = [self._bucket(limit, now) for limit in limits]
        for bucket in buckets:
            bucket.refill(now)
        wait = max((bucket.wait_for_token() for bucket in buckets), default=0.0)
        if wait > 0.0:
            return wait
        for bucket in buckets:
            bucket.tokens -= 1.0
        return 0.0

    def clear(self) -> None:
        self._buckets.clear()

    def _bucket(self, limit: Limit, now: float) -> TokenBucket:
        if limit.scope not in self._buckets:
            self._buckets[limit.scope] = TokenBucket(limit.rate, limit.burst, limit.burst, now)
        return self._buckets[limit.scope]


class SuspensionTracker:
    """Counts each user's bad requests (4xx incl. 429) in a sliding window.

    Kisi suspends integrations that send "too many bad requests" without publishing the
    threshold; here the threshold is a fault setting so tests can reach it.
    """

    def __init__(self) -> None:
        self._bad: dict[int, deque[float]] = {}
        self._suspended: set[int] = set()

    def record_bad(self, user_id: int, now: float, threshold: int, window_s: float) -> None:
        times = self._bad.setdefault(user_id, deque())
        times.append(now)
        while times and times[0] <= now - window_s:
            times.popleft()
        if threshold > 0 and len(times) >= threshold:
            self._suspended.add(user_id)

    def is_suspended(self, user_id: int) -> bool:
        return user_id in self._suspended

    def suspended_users(self) -> list[int]:
        return sorted(self._suspended)

    def clear(self) -> None:
        self._bad.clear()
        self._suspended.clear()
