"""The ports of the virtual-time gateway: the in-memory stores, charged and metered.

Each wrapper hands the call, unchanged, to the library's in-memory store. Around it:

- *charged*: every DynamoDB or SQS round trip costs ``store_op_s`` of virtual time (the
  thread sleeps on the virtual clock, then the store answers), so time passes between a
  decision and the send as it does on AWS. Charged: every record store call, every queue call,
  every known-bad lookup and write, and the budget's ``acquire``. Not charged: the guard (the
  deployed one answers from its per-Lambda cache while its scopes are calm, and writes only on
  bad answers) and the budget's
  ``observe`` (the deployed one writes only after a 429 or below its full rate);
- *metered*: the read and write units, SQS requests and log bytes the deployed adapter would
  use for that call, added to the :class:`~bench.costs.Usage` of the request the calling
  thread serves (:data:`bench.costs.METERING` says how each call is priced).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.sqs_model import VirtualQueue
from kisi_gateway.core.breaker import Pause
from kisi_gateway.core.known_bad import KnownAnswer
from kisi_gateway.core.lifecycle import Change
from kisi_gateway.core.outcome import Outcome, OutcomeClass
from kisi_gateway.core.ratelimit import ANYONE, Booking, Grant
from kisi_gateway.core.records import RequestRecord, RetryMessage
from kisi_gateway.pipeline.telemetry import EmfDocument, MemorySink
from kisi_gateway.stores.memory import MemoryGuard, MemorySendBudget
from kisi_gateway.stores.ports import Applied, KnownBadStore, RecordStore

if TYPE_CHECKING:
    from bench.gateway import Ledger

# What Powertools' inject_lambda_context adds to every line (lengths as on AWS).
LAMBDA_CONTEXT_KEYS = {
    "cold_start": False,
    "function_name": "kisi-gateway-ApiCallFunction-AbCdEfGhIjKl",
    "function_memory_size": "256",
    "function_arn": "arn:aws:lambda:us-east-1:123456789012:function:"
                    "kisi-gateway-ApiCallFunction-AbCdEfGhIjKl",
    "function_request_id": "c6af9ac6-7b61-11e6-9a41-93e812345678",
    "xray_trace_id": "1-5759e988-bd862e3fe1be46a994272793",
}


@dataclass(frozen=True, slots=True)
class ChargedRecords:
    """The record store port; every call is one DynamoDB round trip."""

    store: RecordStore
    charge: Callable[[], None]
    ledger: Ledger

    def create(self, record: RequestRecord) -> bool:
        self.charge()
        self.ledger.meter().wru += 1  # PutItem, conditional
        return self.store.create(record)

    def get(self, request_id: str) -> RequestRecord | None:
        self.charge()
        self.ledger.meter().rru += 1  # GetItem, consistent
        return self.store.get(request_id)

    def apply(self, request_id: str, change: Change) -> Applied | None:
        self.charge()
        self.ledger.meter().wru += 1  # UpdateItem, conditional
        return self.store.apply(request_id, change)


@dataclass(frozen=True, slots=True)
class ChargedBudget:
    """The send budget port; ``acquire`` is one DynamoDB round trip, ``observe`` is free."""

    budget: MemorySendBudget
    charge: Callable[[], None]
    ledger: Ledger
    full_rate: float
    route_rates: Mapping[str, float]

    def acquire(
        self, bucket: str, route_key: str, now: float, max_wait_s: float = 0.0,
        booking: Booking = ANYONE,
    ) -> Grant:
        self.charge()
        grant = self.budget.acquire(bucket, route_key, now, max_wait_s, booking)
        usage = self.ledger.meter()
        if route_key in self.route_rates:  # both items read, then written in one transaction
            usage.rru += 2
            usage.wru += 4 if grant.ok else 0
        elif grant.ok:
            usage.wru += 1  # one conditional UpdateItem planned from the last view: no read
        else:
            usage.rru += 1  # a refusal planned from an old view is checked with one read
        if not grant.ok:
            self.ledger.refused()
        return grant

    def observe(
        self, bucket: str, route_key: str, outcome: Outcome, retry_after_s: float | None,
        now: float,
    ) -> None:
        if outcome.cls is OutcomeClass.RATE_LIMITED:  # the controller's strike: read and write
            items = 2 if route_key in self.route_rates else 1
            usage = self.ledger.meter()
            usage.rru += items
            usage.wru += items
        # A success writes nothing: the rate recovers as a function of time.
        self.budget.observe(bucket, route_key, outcome, retry_after_s, now)


@dataclass(frozen=True, slots=True)
class MeteredGuard:
    """The guard port: a read per check, a write per 401 and per trip."""

    guard: MemoryGuard
    ledger: Ledger

    def check(self, identity: str, route_key: str, now: float) -> Pause | None:
        self.ledger.meter().rru += 1  # BatchGetItem of 2 scopes, eventually consistent
        return self.guard.check(identity, route_key, now)

    def observe(self, identity: str, route_key: str, outcome: Outcome, now: float) -> None:
        trips = len(self.guard.trips)
        self.guard.observe(identity, route_key, outcome, now)
        usage = self.ledger.meter()
        usage.wru += (outcome.status == 401) + len(self.guard.trips) - trips

    def probing(self, identity: str, route_key: str) -> list[str]:
        return self.guard.probing(identity, route_key)  # remembered by the check: no I/O


@dataclass(frozen=True, slots=True)
class ChargedKnownBad:
    """The known-bad entries port; every call is one DynamoDB round trip."""

    store: KnownBadStore
    charge: Callable[[], None]
    ledger: Ledger

    def find(self, identity: str, resource: str, key: str, now: float) -> KnownAnswer | None:
        self.charge()
        self.ledger.meter().rru += 0.5  # GetItem, eventually consistent, under 4 KB
        return self.store.find(identity, resource, key, now)

    def remember(self, identity: str, resource: str, key: str, answer: KnownAnswer) -> None:
        self.charge()
        self.ledger.meter().wru += 1  # UpdateItem (a second one when the map must start anew)
        self.store.remember(identity, resource, key, answer)

    def forget(self, identity: str, resource: str) -> None:
        self.charge()
        self.ledger.meter().wru += 1  # UpdateItem, conditional
        self.store.forget(identity, resource)


@dataclass(frozen=True, slots=True)
class ChargedQueue:
    """The retry queue port over the SQS model; every call is one SQS round trip."""

    queue: VirtualQueue
    charge: Callable[[], None]
    ledger: Ledger

    def enqueue(self, message: RetryMessage, delay_s: int) -> None:
        self.charge()
        self.ledger.enqueued(message)
        self.ledger.meter().sqs_requests += 1
        self.queue.enqueue(message, delay_s)

    def postpone(self, receipt_handle: str, delay_s: int) -> None:
        self.charge()
        self.ledger.postponed()
        self.ledger.meter().sqs_requests += 1
        self.queue.postpone(receipt_handle, delay_s)

    def dead_letter(self, message: RetryMessage, reason: str) -> None:
        self.charge()
        self.ledger.meter().sqs_requests += 1
        self.queue.dead_letter(message, reason)


class MeteredSink(MemorySink):
    """The telemetry sink: keeps the values, and meters what each adds to its invocation's
    EMF document (a directive, its dimension values and the value; measured once per name,
    unit and dimensions). The document's envelope is metered per invocation (costs.py)."""

    def __init__(self, ledger: Ledger, namespace: str) -> None:
        super().__init__()
        self._ledger = ledger
        self._namespace = namespace
        self._sizes: dict[tuple[str, str, tuple[tuple[str, str], ...]], int] = {}

    def emit(self, name: str, value: float, unit: str, dimensions: Mapping[str, str]) -> None:
        super().emit(name, value, unit, dimensions)
        key = (name, unit, tuple(sorted(dimensions.items())))
        size = self._sizes.get(key)
        if size is None:
            document = EmfDocument(self._namespace, 0, root={"service": "kisi-gateway"})
            empty = len(document.line())
            document.add(name, value, unit, dimensions)
            size = self._sizes[key] = len(document.line()) - empty
        self._ledger.meter_if_serving().log_bytes += size


class _LogMeter(logging.Handler):
    """Meters each record of the library's logger, formatted as the Lambdas write it."""

    def __init__(self, ledger: Ledger, service: str) -> None:
        super().__init__(logging.INFO)
        from aws_lambda_powertools.logging.formatter import (  # noqa: PLC0415
            LambdaPowertoolsFormatter,
        )

        formatter = LambdaPowertoolsFormatter(service=service)
        formatter.append_keys(**LAMBDA_CONTEXT_KEYS)
        self.setFormatter(formatter)
        self._ledger = ledger

    def emit(self, record: logging.LogRecord) -> None:
        self._ledger.meter_if_serving().log_bytes += len(self.format(record).encode()) + 1


@contextlib.contextmanager
def metered_logs(ledger: Ledger, service: str) -> Iterator[None]:
    """The library's log records metered at INFO (the deployed level) while this is open."""
    logger = logging.getLogger("kisi_gateway")
    handler = _LogMeter(ledger, service)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the run prints nothing of it
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
