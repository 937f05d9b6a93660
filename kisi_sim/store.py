"""Kisi's data: the collections the simulator serves and their deterministic seed rows."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "COLLECTIONS",
    "DEFAULT_SEED_COUNTS",
    "CollectionSpec",
    "JsonObject",
    "SimStore",
]

JsonObject = dict[str, Any]

SEED_TIMESTAMP: Final = "2024-01-01T00:00:00.000Z"


@dataclass(frozen=True)
class CollectionSpec:
    """How Kisi treats one REST collection.

    ``singular`` wraps request bodies (``{"lock": {...}}``); ``required`` must be present on
    create; ``writable`` are the attributes a create or update may set (the rest is dropped,
    as Rails strong parameters do); page sizes come from Kisi's reference.
    """

    singular: str
    required: str
    writable: tuple[str, ...]
    default_limit: int
    max_limit: int


COLLECTIONS: Final[Mapping[str, CollectionSpec]] = {
    "locks": CollectionSpec("lock", "name", ("name", "description", "place_id"), 50, 250),
    "places": CollectionSpec(
        "place", "name", ("name", "address", "time_zone", "latitude", "longitude"), 50, 250
    ),
    "users": CollectionSpec("user", "email", ("name", "email"), 50, 100),
    "groups": CollectionSpec("group", "name", ("name", "description", "place_id"), 50, 250),
    "role_assignments": CollectionSpec(
        "role_assignment", "role_id", ("role_id", "user_id", "group_id", "place_id"), 10, 250
    ),
}

DEFAULT_SEED_COUNTS: Final[Mapping[str, int]] = {
    "locks": 120,
    "places": 5,
    "users": 60,
    "groups": 8,
    "role_assignments": 25,
}

# --------------------------------------------------------------------------- data


def _cycle(index: int, count: int) -> int | None:
    """A deterministic reference into another seeded collection (None when it is empty)."""
    return (index - 1) % count + 1 if count else None


def _seed_lock(i: int, counts: Mapping[str, int]) -> JsonObject:
    return {"name": f"Door {i}", "place_id": _cycle(i, counts["places"])}


def _seed_place(i: int, counts: Mapping[str, int]) -> JsonObject:
    return {
        "name": f"Place {i}",
        "address": f"{100 + i} Market Street, San Francisco, CA",
        "latitude": round(37.79 + i / 1000, 6),
        "longitude": round(-122.40 - i / 1000, 6),
    }


def _seed_user(i: int, counts: Mapping[str, int]) -> JsonObject:
    return {"name": f"User {i}", "email": f"user{i}@example.com"}


def _seed_group(i: int, counts: Mapping[str, int]) -> JsonObject:
    return {"name": f"Group {i}", "place_id": _cycle(i, counts["places"])}


def _seed_role_assignment(i: int, counts: Mapping[str, int]) -> JsonObject:
    return {
        "role_id": "group_basic",
        "user_id": _cycle(i, counts["users"]),
        "group_id": _cycle(i, counts["groups"]),
    }


# The shape of a new row per collection; seeders and creates fill it in.
BLANK_ROWS: Final[Mapping[str, JsonObject]] = {
    "locks": {
        "name": None,
        "description": "",
        "place_id": None,
        "online": True,
        "locked_down": False,
        "last_unlocked_at": None,
    },
    "places": {
        "name": None,
        "address": "",
        "time_zone": "America/Los_Angeles",
        "latitude": None,
        "longitude": None,
    },
    "users": {"name": None, "email": None, "confirmed": True},
    "groups": {"name": None, "description": "", "place_id": None},
    "role_assignments": {"role_id": None, "user_id": None, "group_id": None, "place_id": None},
}

SEEDERS: Final[Mapping[str, Callable[[int, Mapping[str, int]], JsonObject]]] = {
    "locks": _seed_lock,
    "places": _seed_place,
    "users": _seed_user,
    "groups": _seed_group,
    "role_assignments": _seed_role_assignment,
}


class SimStore:
    """Kisi's data: rows by collection and id, seeded deterministically from counts.

    Thread-safe: every method takes the store's lock and hands out copies. Collections not in
    COLLECTIONS (``event_sets``, ``signed_upload_urls``) are kept the same way, unseeded.
    """

    def __init__(self, seed_counts: Mapping[str, int]) -> None:
        self._seed_counts = dict(seed_counts)
        self._lock = threading.Lock()
        self._rows: dict[str, dict[int, JsonObject]] = {}
        self._next_id: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the seed data: same rows, same ids, every run."""
        with self._lock:
            self._rows = {name: self._seed(name) for name in COLLECTIONS}
            self._next_id = {name: len(rows) + 1 for name, rows in self._rows.items()}

    def page(self, name: str, offset: int, limit: int) -> tuple[list[JsonObject], int]:
        """Rows ``offset .. offset+limit-1`` in id order, and the total."""
        with self._lock:
            rows = list(self._rows.get(name, {}).values())
        return [dict(row) for row in rows[offset : offset + limit]], len(rows)

    def get(self, name: str, row_id: int) -> JsonObject | None:
        with self._lock:
            row = self._rows.get(name, {}).get(row_id)
            return None if row is None else dict(row)

    def create(self, name: str, attrs: Mapping[str, Any], stamp: str) -> JsonObject:
        with self._lock:
            row_id = self._next_id.get(name, 1)
            self._next_id[name] = row_id + 1
            row = {
                "id": row_id,
                **BLANK_ROWS.get(name, {}),
                **attrs,
                "created_at": stamp,
                "updated_at": stamp,
            }
            self._rows.setdefault(name, {})[row_id] = row
            return dict(row)

    def update(self, name: str, row_id: int, attrs: Mapping[str, Any], stamp: str) -> bool:
        """False when the row does not exist."""
        with self._lock:
            row = self._rows.get(name, {}).get(row_id)
            if row is None:
                return False
            row.update(attrs, updated_at=stamp)
            return True

    def delete(self, name: str, row_id: int) -> bool:
        with self._lock:
            return self._rows.get(name, {}).pop(row_id, None) is not None

    def _seed(self, name: str) -> dict[int, JsonObject]:
        seeder = SEEDERS[name]
        return {
            i: {
                "id": i,
                **BLANK_ROWS[name],
                **seeder(i, self._seed_counts),
                "created_at": SEED_TIMESTAMP,
                "updated_at": SEED_TIMESTAMP,
            }
            for i in range(1, self._seed_counts[name] + 1)
        }
