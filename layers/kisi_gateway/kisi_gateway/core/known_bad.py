"""Known-bad requests: Kisi's final refusal of a request, remembered for a short window.

Kisi counts every 4xx against the integration (KISI_API.md, "Suspension"), and sending the same
request again cannot change a final client error: the body is still invalid, the id still does
not exist. So when Kisi answers a request with one of :data:`FINAL_CLIENT_ERRORS`, the same
request from the same identity (method, path, query and body, hashed) gets Kisi's own answer
from memory until the window ends, without reaching Kisi. A successful write by that identity
on the same resource path forgets the path's entries: the world changed, so Kisi may answer
differently now (the user was created, the id exists).

Pure: the key, the rules and the entry; :mod:`kisi_gateway.stores.known_bad` keeps entries in
DynamoDB and :class:`kisi_gateway.stores.memory.MemoryKnownBad` in memory.

>>> key = request_key("POST", "/users", (), b'{"user": {}}')
>>> len(key), should_remember("POST", 422), should_remember("POST", 429)
(32, True, False)
>>> clears("PATCH", 204), clears("GET", 200)
(True, False)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

# Answers Kisi will give again to the same request: bad input (400, 422), an id or a right that
# does not exist (403, 404: Kisi answers 403 for unknown ids), a conflict (409). Not 401 (the
# guard's account breaker handles keys), not 429 (a rate, not a verdict), not 405/410/413.
FINAL_CLIENT_ERRORS = frozenset({400, 403, 404, 409, 422})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_WINDOW_S = 60.0
# Kisi's error bodies are a few hundred bytes; a larger one is not kept (the entry must fit in
# one DynamoDB item beside the path's other entries, 400 KB in all).
MAX_REMEMBERED_BODY = 4096
MAX_ENTRIES_PER_PATH = 50  # one caller's distinct refusals on one path; more replaces them
REPLAYED_HEADER = "X-Kisi-Gateway-Replayed"
REPLAYED_VALUE = "known-bad"


@dataclass(frozen=True, slots=True)
class KnownAnswer:
    """Kisi's refusal of one request, kept until ``until`` (epoch seconds)."""

    status: int
    content_type: str | None
    body: bytes
    until: float

    def live(self, now: float) -> bool:
        """Still within its window at ``now``."""
        return now < self.until

    def retry_after_s(self, now: float) -> int:
        """Whole seconds until the window ends, at least 1."""
        return max(1, int(self.until - now + 0.999))


def request_key(
    method: str, path: str, query: Sequence[Sequence[str]], body: bytes | None
) -> str:
    """A fixed-length hash naming one request of one identity on one resource path.

    The query is hashed as a list of pairs, so a tuple from the call and a list from a queue
    message (JSON) give the same key; the body as sent, byte for byte.
    """
    digest = hashlib.sha256()
    pairs = [[str(name), str(value)] for name, value in query]
    for part in (method.upper(), path, json.dumps(pairs)):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(body or b"")
    return digest.hexdigest()[:32]


def resource_of(path: str) -> str:
    """The resource path entries are grouped by (and cleared by): the path, without a trailing
    slash. ``resource_of("/users/") == "/users"``."""
    return path.rstrip("/") or "/"


def should_remember(method: str, status: int) -> bool:
    """Is Kisi's ``status`` a verdict the same request would get again?"""
    return status in FINAL_CLIENT_ERRORS and method.upper() != "HEAD"


def clears(method: str, status: int) -> bool:
    """Does a ``status`` answer to ``method`` change the resource (a successful write)?"""
    return method.upper() in WRITE_METHODS and 200 <= status < 300


def remembered(
    status: int, content_type: str | None, body: bytes, now: float, window_s: float
) -> KnownAnswer | None:
    """The entry to keep for Kisi's answer, or ``None`` when it is not worth keeping."""
    if len(body) > MAX_REMEMBERED_BODY or not window_s > 0:
        return None
    return KnownAnswer(status, content_type, body, now + window_s)
