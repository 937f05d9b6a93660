"""The three client-side baselines the gateway is compared with, in virtual time.

Each is what an integrator commonly writes instead of the gateway; each caller blocks while
its request is retried, and none shares anything with the other callers.

- ``immediate``: retry at once on 429 and 5xx, up to 10 attempts.
- ``urllib3``: ``Retry(total=10, backoff_factor=0.5, status_forcelist=[429, 500, 502, 503, 504],
  respect_retry_after_header=True)`` — the decisions are urllib3's own (``is_retry``,
  ``increment``, ``get_retry_after``, ``get_backoff_time``), only the sleep is virtual. Note
  urllib3's defaults: the first retry has no backoff, and ``POST`` is not in
  ``allowed_methods``, so an unlock is never retried on a status.
- ``jitter``: the gateway's own :func:`~kisi_gateway.core.backoff.schedule_retry` and route
  policies (attempts, deadline, ``Retry-After`` as a floor), but no shared budget, no guard
  and no queue.
"""

from __future__ import annotations

import random
from typing import Protocol

from urllib3.exceptions import MaxRetryError
from urllib3.response import BaseHTTPResponse, HTTPResponse
from urllib3.util.retry import Retry

from bench.engine import Engine, Process, Sleep
from bench.kisi_model import Reply, VirtualKisi
from bench.tracking import Final, TrackedCall, final_of
from kisi_gateway.core.backoff import Expire, parse_retry_after, schedule_retry
from kisi_gateway.core.outcome import classify_status
from kisi_gateway.core.policy import PolicyTable

IMMEDIATE_ATTEMPTS = 10
KISI_URL = "https://api.kisi.io"


class Strategy(Protocol):
    """Makes one request on behalf of a caller; the caller waits until this returns."""

    name: str

    def call(self, call: TrackedCall) -> Process[None]: ...


class ImmediateRetry:
    """Retry at once on a retryable answer (429, 5xx), up to ``max_attempts`` in all."""

    name = "immediate"

    def __init__(
        self, engine: Engine, kisi: VirtualKisi, max_attempts: int = IMMEDIATE_ATTEMPTS
    ) -> None:
        self._engine = engine
        self._kisi = kisi
        self._max_attempts = max_attempts

    def call(self, call: TrackedCall) -> Process[None]:
        status = 0
        for _ in range(self._max_attempts):
            reply = yield from self._kisi.request(call)
            outcome = classify_status(reply.status)
            if outcome.terminal:
                call.end(self._engine.now, final_of(outcome))
                return
            status = reply.status
        call.end(self._engine.now, Final.GAVE_UP, f"last {status}")


def urllib3_retry() -> Retry:
    """The configuration a typical integrator mounts on a ``requests`` session."""
    return Retry(
        total=10,
        backoff_factor=0.5,
        status_forcelist=[429, 500, 502, 503, 504],
        respect_retry_after_header=True,
    )


def urllib3_delay(retry: Retry, response: BaseHTTPResponse) -> float:
    """Seconds ``retry.sleep(response)`` would sleep (urllib3 ``util/retry.py``: ``sleep``
    tries ``sleep_for_retry`` — a truthy ``Retry-After`` — then ``_sleep_backoff``)."""
    if retry.respect_retry_after_header:
        retry_after = retry.get_retry_after(response)
        if retry_after:
            return retry_after
    return max(retry.get_backoff_time(), 0.0)


def as_urllib3_response(reply: Reply) -> HTTPResponse:
    headers = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
    return HTTPResponse(body=b"", headers=headers, status=reply.status, preload_content=False)


class Urllib3Retry:
    """urllib3's ``Retry`` as ``connectionpool.urlopen`` drives it, on the virtual clock."""

    name = "urllib3"

    def __init__(self, engine: Engine, kisi: VirtualKisi) -> None:
        self._engine = engine
        self._kisi = kisi

    def call(self, call: TrackedCall) -> Process[None]:
        retry = urllib3_retry()
        url = KISI_URL + call.path
        while True:
            reply = yield from self._kisi.request(call)
            response = as_urllib3_response(reply)
            if not retry.is_retry(call.method, reply.status, reply.retry_after is not None):
                call.end(self._engine.now, final_of(classify_status(reply.status)))
                return
            try:
                retry = retry.increment(call.method, url, response=response)
            except MaxRetryError:
                call.end(self._engine.now, Final.GAVE_UP, f"last {reply.status}")
                return
            delay = urllib3_delay(retry, response)
            if delay > 0:
                yield Sleep(delay)


class JitterNoBudget:
    """Full-jitter backoff from the library, per caller, with nothing shared."""

    name = "jitter"

    def __init__(
        self, engine: Engine, kisi: VirtualKisi, policies: PolicyTable, rng: random.Random
    ) -> None:
        self._engine = engine
        self._kisi = kisi
        self._policies = policies
        self._rng = rng

    def call(self, call: TrackedCall) -> Process[None]:
        policy = self._policies.resolve(call.method, call.path).policy
        retries = 0
        while True:
            reply = yield from self._kisi.request(call)
            outcome = classify_status(reply.status)
            if outcome.terminal:
                call.end(self._engine.now, final_of(outcome))
                return
            if retries + 1 >= policy.max_attempts:
                call.end(self._engine.now, Final.GAVE_UP, "attempts_exhausted")
                return
            schedule = schedule_retry(
                retries, policy.backoff, now=reply.at, deadline=call.deadline,
                rng=self._rng.random, first=False,
                retry_after_s=parse_retry_after(reply.retry_after, reply.at),
            )
            if isinstance(schedule, Expire):
                call.end(self._engine.now, Final.EXPIRED, schedule.reason)
                return
            retries += 1
            yield Sleep(schedule.delay_s)
