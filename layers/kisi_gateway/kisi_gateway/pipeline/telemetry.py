"""Outcome metrics in CloudWatch namespace ``KisiGateway``, written as Embedded Metric Format.

Every Kisi attempt is counted by outcome class, route template and status: a bounded set of
dimensions (route templates such as ``POST /locks/{id}/unlock``, never raw ids). Alarms and
the metrics Lambda read these series. On Lambda, the handlers print EMF documents (one per
invocation, :func:`metric_batch`: a call's counters cost one JSON line, not one each) and
CloudWatch Logs turns them into metrics; locally, ``make run`` does the same conversion.

Each metric name has exactly one dimension set (besides Powertools' ``service``). CloudWatch
matches dimensions exactly, but moto (the local AWS) matches any superset; one set per name
reads the same on both.

============================  ==================  ==========================================
metric                        dimensions          meaning
============================  ==================  ==========================================
``Attempts``                  (none)              every attempt to reach Kisi
``AttemptsByOutcome``         ``Outcome``         ... by class (success, client_error, ...)
``AttemptsByRoute``           ``Route``           ... by route template
``BadRequests``               (none)              4xx incl. 429: what Kisi counts against
                                                  the account
``BadRequestsByRoute``        ``Route``           ... by route template
``BadRequestsByRouteStatus``  ``Route, Status``   ... by route and HTTP status
``BadRequestsByCode``         ``Status, Code``    ... by status and Kisi's error code
``AttemptsByTenant``          ``Tenant,           every attempt, by tenant and kind of credential
                              Credential``        (service, caller, none)
``BadRequestsByTenant``       ``Tenant,           bad requests, by tenant and kind of credential
                              Credential``
``KisiUserUnknown``           ``Tenant,           GET /login could not name a credential's user:
                              Credential``        its own send bucket was used
``ServerErrors``              (none)              5xx from Kisi
``RateLimited``               (none)              429 from Kisi
``NetworkErrors``             (none)              no answer from Kisi
``RetryDelay``                (none)              seconds chosen before the next attempt
``Deferred``                  (none)              requests handed to the retry queue
``Finished``                  ``Status``          requests that ended: succeeded, failed,
                                                  expired
``FinishedByReason``          ``Status, Reason``  ... with why (deadline, attempts_exhausted)
``GuardPaused``               (none)              calls answered 503 by the guard
``Deprecated``                ``Route``           Kisi answered with Deprecation/Sunset
``Prevented``                 (none)              calls answered by the gateway that Kisi would
                                                  surely have refused: never sent
``PreventedByReason``         ``Reason``          ... by why: known_bad (a repeat of a refused
                                                  request), undocumented_path,
                                                  undocumented_method, invalid_body
``PreventedByRoute``          ``Route``           ... by route template
``UndocumentedPassed``        ``Route``           a route the deployment lets through unchecked
``GateCapped``                (none)              Kisi's Retry-After was longer than the send
                                                  gate's maximum (MAX_GATE_S): alarmed
============================  ==================  ==========================================
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from kisi_gateway.core.outcome import Outcome, OutcomeClass

NAMESPACE = "KisiGateway"
KNOWN_RESOURCES = frozenset(
    {
        "locks", "places", "users", "user", "groups", "group_locks", "role_assignments",
        "logins", "login", "event_sets", "signed_upload_urls", "members", "elevators",
        "cameras", "calendar", "organizations", "reports", "scheduled_reports",
        "floors", "elevator_stops", "share_links", "events",
    }
)  # fmt: skip


def metric_route(route_key: str) -> str:
    """The ``Route`` dimension: the route key, or one bucket for paths Kisi does not have.

    Templates come from caller paths; only known Kisi resources keep their own series, so a
    caller cannot create unbounded metric cardinality.
    """
    method, _, template = route_key.partition(" ")
    first = template.lstrip("/").split("/", 1)[0]
    return route_key if first in KNOWN_RESOURCES else f"{method} /other"


class MetricSink(Protocol):
    """Somewhere to put one metric value with one dimension set."""

    def emit(self, name: str, value: float, unit: str, dimensions: Mapping[str, str]) -> None: ...


SERVICE_ENV = "POWERTOOLS_SERVICE_NAME"  # the ``service`` dimension, as Powertools names it
MAX_VALUES = 100  # EMF: at most 100 values per metric in one document
MAX_DIRECTIVES = 100  # and we keep documents well under its 100-metric limit


@dataclass
class EmfDocument:
    """One EMF document: one directive per metric, each with the metric's own dimension set
    (EMF lets a document carry several), and the values and dimension values at its root."""

    namespace: str
    timestamp_ms: int
    metrics: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    root: dict[str, object] = field(default_factory=dict)

    def add(self, name: str, value: float, unit: str, dimensions: Mapping[str, str]) -> bool:
        """Add a value; ``False`` if it does not fit (another dimension value or unit under a
        name already used here: that takes a document of its own)."""
        keys = tuple(dimensions)
        known = self.metrics.get(name)
        if known is not None:
            values = self.root[name]
            assert isinstance(values, list)
            if known != (unit, keys) or len(values) >= MAX_VALUES or any(
                self.root.get(key) != dim for key, dim in dimensions.items()
            ):
                return False
            values.append(float(value))
            return True
        if name in self.root or len(self.metrics) >= MAX_DIRECTIVES or any(
            self.root.get(key, dim) != dim for key, dim in dimensions.items()
        ):
            return False
        self.metrics[name] = (unit, keys)
        self.root.update(dimensions)
        self.root[name] = [float(value)]
        return True

    def line(self) -> str:
        service = os.environ.get(SERVICE_ENV)
        extra = ("service",) if service else ()
        directives = [
            {
                "Namespace": self.namespace,
                "Dimensions": [[*keys, *extra]],
                "Metrics": [{"Name": name, "Unit": unit}],
            }
            for name, (unit, keys) in self.metrics.items()
        ]
        root = {**self.root, "service": service} if service else self.root
        meta = {"Timestamp": self.timestamp_ms, "CloudWatchMetrics": directives}
        return json.dumps({"_aws": meta, **root}, separators=(",", ":"))


_BATCH = threading.local()  # .open: this thread's batch, {id(sink): (sink, documents)}


@contextmanager
def metric_batch() -> Iterator[None]:
    """While open, this thread's EMF values share documents, printed when it closes: one JSON
    line for a call's counters instead of one per counter (CPU and log bytes). Each Lambda
    handler opens one per invocation; nested, only the outermost prints."""
    if getattr(_BATCH, "open", None) is not None:
        yield
        return
    _BATCH.open = {}
    try:
        yield
    finally:
        batch, _BATCH.open = _BATCH.open, None
        for sink, documents in batch.values():
            for document in documents:
                sink.write(document.line())


class EmfSink:
    """Prints metric values as CloudWatch Embedded Metric Format, as Powertools' metrics do
    (same namespace, ``service`` dimension and units); CloudWatch Logs turns each line into
    metrics. Outside :func:`metric_batch` each value is a line of its own."""

    def __init__(
        self,
        namespace: str = NAMESPACE,
        write: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._namespace = namespace
        self._write = write
        self._clock = clock

    def write(self, line: str) -> None:
        if self._write is not None:
            self._write(line)
        else:
            print(line)  # sys.stdout as it is now (make run swaps in its EMF tee)

    def emit(self, name: str, value: float, unit: str, dimensions: Mapping[str, str]) -> None:
        batch = getattr(_BATCH, "open", None)
        if batch is None:
            document = self._document()
            document.add(name, value, unit, dimensions)
            self.write(document.line())
            return
        documents = batch.setdefault(id(self), (self, []))[1]
        if not documents or not documents[-1].add(name, value, unit, dimensions):
            documents.append(self._document())
            documents[-1].add(name, value, unit, dimensions)

    def _document(self) -> EmfDocument:
        return EmfDocument(self._namespace, int(self._clock() * 1000))


@dataclass
class MemorySink:
    """Keeps what was emitted; for tests and the benchmark simulation."""

    values: list[tuple[str, float, str, dict[str, str]]] = field(default_factory=list)

    def emit(self, name: str, value: float, unit: str, dimensions: Mapping[str, str]) -> None:
        self.values.append((name, value, unit, dict(dimensions)))

    def total(self, name: str, **dimensions: str) -> float:
        return sum(
            v for n, v, _, d in self.values if n == name and d == dimensions
        )


_CLASS_METRIC = {
    OutcomeClass.SERVER_ERROR: "ServerErrors",
    OutcomeClass.RATE_LIMITED: "RateLimited",
    OutcomeClass.NETWORK_ERROR: "NetworkErrors",
}


@dataclass
class Telemetry:
    """The gateway's counters, named once."""

    sink: MetricSink
    _deprecations_seen: set[str] = field(default_factory=set)

    def attempt(
        self,
        route_key: str,
        outcome: Outcome,
        kisi_code: str | None = None,
        tenant: str = "default",
        credential: str = "service",
    ) -> None:
        """Count one attempt to reach Kisi (``kisi_code``: the error body's code, if bad).

        ``tenant`` and ``credential`` (service, caller, none) name whose attempt it was: a
        bounded set, never the identity itself.
        """
        route = metric_route(route_key)
        who = {"Tenant": tenant, "Credential": credential}
        self.sink.emit("AttemptsByTenant", 1, "Count", who)
        if outcome.bad_request:
            self.sink.emit("BadRequestsByTenant", 1, "Count", who)
        # Details first, totals last: whoever sees a total (an alarm) finds its details there.
        self.sink.emit("AttemptsByOutcome", 1, "Count", {"Outcome": outcome.cls.value})
        self.sink.emit("AttemptsByRoute", 1, "Count", {"Route": route})
        if outcome.bad_request:
            status = str(outcome.status)
            self.sink.emit("BadRequestsByRoute", 1, "Count", {"Route": route})
            self.sink.emit("BadRequestsByRouteStatus", 1, "Count",
                           {"Route": route, "Status": status})
            # Kisi's codes come from Kisi, not callers: a bounded set.
            code = kisi_code if kisi_code and len(kisi_code) <= 16 else "000000"
            self.sink.emit("BadRequestsByCode", 1, "Count", {"Status": status, "Code": code})
        class_metric = _CLASS_METRIC.get(outcome.cls)
        if class_metric:
            self.sink.emit(class_metric, 1, "Count", {})
        if outcome.bad_request:
            self.sink.emit("BadRequests", 1, "Count", {})
        self.sink.emit("Attempts", 1, "Count", {})

    def retry_delay(self, seconds: float) -> None:
        self.sink.emit("RetryDelay", seconds, "Seconds", {})

    def deferred(self) -> None:
        self.sink.emit("Deferred", 1, "Count", {})

    def finished(self, status: str, reason: str | None = None) -> None:
        self.sink.emit("Finished", 1, "Count", {"Status": status})
        if reason:
            self.sink.emit("FinishedByReason", 1, "Count", {"Status": status, "Reason": reason})

    def user_unknown(self, tenant: str, credential: str) -> None:
        """``GET /login`` could not name a credential's Kisi user: its own bucket is used."""
        self.sink.emit("KisiUserUnknown", 1, "Count", {"Tenant": tenant, "Credential": credential})

    def paused(self) -> None:
        self.sink.emit("GuardPaused", 1, "Count", {})

    def prevented(self, reason: str, route_key: str) -> None:
        """Count a call the gateway answered itself because Kisi would surely refuse it.

        ``reason`` is one of a fixed set (known_bad, undocumented_path, ...), never input.
        """
        self.sink.emit("PreventedByReason", 1, "Count", {"Reason": reason})
        self.sink.emit("PreventedByRoute", 1, "Count", {"Route": metric_route(route_key)})
        self.sink.emit("Prevented", 1, "Count", {})

    def gate_capped(self) -> None:
        """Kisi asked for a longer wait than the send gate may close for."""
        self.sink.emit("GateCapped", 1, "Count", {})

    def undocumented_passed(self, route_key: str) -> None:
        """A route the deployment lists as "pass unknown" was forwarded unchecked."""
        self.sink.emit("UndocumentedPassed", 1, "Count", {"Route": metric_route(route_key)})

    def deprecated(self, route_key: str) -> bool:
        """Count a Deprecation/Sunset answer once per route per container; True if new."""
        route = metric_route(route_key)
        if route in self._deprecations_seen:
            return False
        self._deprecations_seen.add(route)
        self.sink.emit("Deprecated", 1, "Count", {"Route": route})
        return True
