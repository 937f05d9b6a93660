"""Outcome metrics in CloudWatch namespace ``KisiGateway``, written as Embedded Metric Format.

Every Kisi attempt is counted by outcome class, route template and status: a bounded set of
dimensions (route templates such as ``POST /locks/{id}/unlock``, never raw ids). Alarms and
the metrics Lambda read these series. On Lambda, Powertools prints EMF lines and CloudWatch
Logs turns them into metrics; locally, ``make run`` does the same conversion.

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
============================  ==================  ==========================================
"""

from __future__ import annotations

from collections.abc import Mapping
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


class PowertoolsEmfSink:
    """Writes each value as an EMF line through Powertools' ``single_metric``."""

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self._namespace = namespace

    def emit(self, name: str, value: float, unit: str, dimensions: Mapping[str, str]) -> None:
        from aws_lambda_powertools.metrics import MetricUnit, single_metric  # noqa: PLC0415

        with single_metric(
            name=name, unit=MetricUnit(unit), value=value, namespace=self._namespace
        ) as metric:
            for key, dim in dimensions.items():
                metric.add_dimension(name=key, value=dim)


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

    def deprecated(self, route_key: str) -> bool:
        """Count a Deprecation/Sunset answer once per route per container; True if new."""
        route = metric_route(route_key)
        if route in self._deprecations_seen:
            return False
        self._deprecations_seen.add(route)
        self.sink.emit("Deprecated", 1, "Count", {"Route": route})
        return True
