"""The scenarios' callers: one call through the gateway, and polling what it deferred.

A call never raises for what the network or the gateway does: every answer, or the lack of
one, becomes a :class:`Reply`, so a scenario can count what callers were told.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

from local.stack_process import StackProcess

__all__ = [
    "CALLER_TIMEOUT_S",
    "EXPIRED_CODE",
    "GATEWAY_CODE_PREFIX",
    "PAUSED_CODE",
    "TERMINAL",
    "UNKNOWN_OUTCOME_CODE",
    "Reply",
    "body_bytes",
    "bounded_pool",
    "fetch_record",
    "is_gateway_error",
    "poll_until_terminal",
    "reply_of",
    "send",
    "sha256_or_none",
]

TERMINAL = frozenset({"succeeded", "failed", "expired"})
CALLER_TIMEOUT_S = 40.0  # above the gateway's longest inline wait (25 s) plus a Kisi timeout
# The gateway's own error codes (kisi_gateway.core.errors.GatewayErrorCode) the reports name.
PAUSED_CODE = "9e0503"
UNKNOWN_OUTCOME_CODE = "9e0504"
EXPIRED_CODE = "9e0508"
GATEWAY_CODE_PREFIX = "9e"


@dataclass(frozen=True)
class Reply:
    """What the gateway answered one call, as its caller saw it.

    ``status`` is ``None`` when no answer came (caller-side timeout or connection error).
    ``code`` is the ``code`` of an error body (the gateway's ``9e....`` or Kisi's);
    ``deadline`` comes from a 202 body.
    """

    phase: str
    method: str
    path: str
    sent_at: float
    answered_at: float
    status: int | None
    request_id: str | None = None
    location: str | None = None
    code: str | None = None
    deadline: float | None = None
    attempts: int | None = None
    error: str | None = None

    @property
    def deferred(self) -> bool:
        return self.status == 202 and self.location is not None


def body_bytes(document: Mapping[str, Any] | None) -> bytes | None:
    """The exact bytes sent, so their SHA-256 matches the simulator's ``body_sha256``."""
    return None if document is None else json.dumps(document, separators=(",", ":")).encode()


def sha256_or_none(body: bytes | None) -> str | None:
    return hashlib.sha256(body).hexdigest() if body else None


def send(
    stack: StackProcess,
    phase: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One call through the gateway; never raises for what the network or gateway does."""
    sent_headers = dict(headers or {})
    if body is not None:
        sent_headers["Content-Type"] = "application/json"
    sent_at = time.time()
    try:
        response = stack.request(
            method, path, data=body, headers=sent_headers, timeout=CALLER_TIMEOUT_S
        )
    except requests.RequestException as error:
        return Reply(phase, method, path, sent_at, time.time(), None,
                     error=type(error).__name__)
    return reply_of(phase, method, path, sent_at, time.time(), response)


def reply_of(
    phase: str, method: str, path: str, sent_at: float, answered_at: float,
    response: requests.Response,
) -> Reply:
    document: Any = None
    try:
        document = response.json()
    except ValueError:
        document = None
    doc = document if isinstance(document, dict) else {}
    code = doc.get("code") if isinstance(doc.get("code"), str) else None
    deadline = doc.get("deadline") if response.status_code == 202 else None
    attempts = response.headers.get("X-Gateway-Attempts")
    return Reply(
        phase=phase,
        method=method,
        path=path,
        sent_at=sent_at,
        answered_at=answered_at,
        status=response.status_code,
        request_id=response.headers.get("X-Gateway-Request-Id"),
        location=response.headers.get("Location") if response.status_code == 202 else None,
        code=code,
        deadline=float(deadline) if isinstance(deadline, int | float) else None,
        attempts=int(attempts) if attempts and attempts.isdigit() else None,
    )


@contextmanager
def bounded_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool that, on an error or Ctrl-C, drops queued work instead of waiting for it.

    Calls already running end on their own (each has a timeout), so the stack can be
    stopped right away.
    """
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def fetch_record(stack: StackProcess, location: str) -> tuple[int | None, dict[str, Any] | None]:
    """``GET`` a 202's ``Location``: the status of that answer and the record, if any."""
    try:
        response = stack.request("GET", location, timeout=10)
    except requests.RequestException:
        return None, None
    if response.status_code != 200:
        return response.status_code, None
    try:
        record = response.json()
    except ValueError:
        return response.status_code, None
    return response.status_code, record if isinstance(record, dict) else None


def poll_until_terminal(
    stack: StackProcess,
    locations: Iterable[str],
    timeout_s: float,
    *,
    every_s: float = 1.0,
    workers: int = 8,
    records: dict[str, dict[str, Any]] | None = None,
    on_round: Callable[[int, int], None] | None = None,
    statuses: Counter[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Poll each ``Location`` until its record is terminal or ``timeout_s`` passed.

    Returns location -> the last record seen (terminal or not), with ``_seen_at``: when it
    was fetched (for a terminal record, when it was first seen terminal). Records already
    terminal in ``records`` are not asked again. ``statuses`` counts the polls' answers.
    """
    known: dict[str, dict[str, Any]] = dict(records or {})
    wanted = list(dict.fromkeys(locations))
    deadline = time.monotonic() + timeout_s
    with bounded_pool(workers) as pool:
        while True:
            open_ = [loc for loc in wanted if known.get(loc, {}).get("status") not in TERMINAL]
            if not open_:
                break
            for location, (status, record) in zip(
                open_, pool.map(lambda loc: fetch_record(stack, loc), open_), strict=True
            ):
                if statuses is not None:
                    statuses[str(status) if status is not None else "no answer"] += 1
                if record is not None:
                    record["_seen_at"] = time.time()
                    known[location] = record
            if on_round is not None:
                done = sum(1 for loc in wanted if known.get(loc, {}).get("status") in TERMINAL)
                on_round(done, len(wanted))
            if time.monotonic() > deadline:
                break
            time.sleep(every_s)
    return known


def is_gateway_error(reply: Reply) -> bool:
    """An answer the gateway made itself (its ``9e`` codes, or no Kisi-shaped body)."""
    return reply.code is None or reply.code.startswith(GATEWAY_CODE_PREFIX)
