"""The simulator's memory of what it was asked: counters and the last requests, no secrets."""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Final, TypedDict

__all__ = ["REQUEST_LOG_SIZE", "RequestEntry", "RequestLog", "StatsSnapshot"]

REQUEST_LOG_SIZE: Final = 10_000


class RequestEntry(TypedDict):
    """One Kisi request as recorded: never the key, only the user, the auth scheme, the
    credential's fingerprint and a body hash."""

    at: float
    method: str
    path: str
    query: str
    status: int
    user_id: int | None
    body_sha256: str | None
    route: str
    processed: bool
    auth_scheme: str | None  # see kisi_sim.identity.AuthHeader.scheme
    credential: str | None  # key_fingerprint of the credential, never the credential


class StatsSnapshot(TypedDict):
    """What ``stats()`` and ``GET /__admin/stats`` answer."""

    total: int
    rate_limited: int
    by_status: dict[str, int]
    by_route: dict[str, int]
    suspended_users: list[int]
    last_internal_error: str | None
    requests: list[RequestEntry]


class RequestLog:
    """Counters over every request plus the last ``size`` entries (thread-safe)."""

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._entries: deque[RequestEntry] = deque(maxlen=size)
        self._by_status: Counter[str] = Counter()
        self._by_route: Counter[str] = Counter()

    def append(self, entry: RequestEntry) -> None:
        with self._lock:
            self._entries.append(entry)
            self._by_status[str(entry["status"])] += 1
            self._by_route[f"{entry['method']} {entry['route']}"] += 1

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self._by_status), dict(self._by_route)

    def entries(self) -> list[RequestEntry]:
        with self._lock:
            return [RequestEntry(**entry) for entry in self._entries]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_status.clear()
            self._by_route.clear()
