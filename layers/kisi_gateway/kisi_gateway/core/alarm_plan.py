"""Alarms the metrics Lambda keeps: what should exist, and the plan to make it so.

The template declares the fleet-wide alarms (bad-request rate and volume, 5xx rate, 429s,
expired retries, DLQ depth and age). Per-route alarms depend on which routes carry traffic,
so the metrics Lambda keeps those: one per route seen in the lookback window, thresholds
from configuration. Reconciling is idempotent: create what is missing, fix what drifted,
delete what is stale, and touch nothing else.

Pure: specs in, plan out. :class:`~kisi_gateway.stores.cloudwatch.CloudWatchAlarms` applies a
plan with a boto3 client.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ROUTE_ALARM_INFIX = "-route-"
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class AlarmSpec:
    """The parts of a CloudWatch metric alarm the gateway decides."""

    name: str
    description: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]
    threshold: float
    period_s: int = 300
    evaluation_periods: int = 1
    statistic: str = "Sum"
    comparison: str = "GreaterThanOrEqualToThreshold"
    treat_missing: str = "notBreaching"
    actions: tuple[str, ...] = ()

    def put_args(self, namespace: str) -> dict[str, Any]:
        """Arguments for ``cloudwatch.put_metric_alarm``."""
        return {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "Namespace": namespace,
            "MetricName": self.metric,
            "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions],
            "Statistic": self.statistic,
            "Period": self.period_s,
            "EvaluationPeriods": self.evaluation_periods,
            "Threshold": self.threshold,
            "ComparisonOperator": self.comparison,
            "TreatMissingData": self.treat_missing,
            "AlarmActions": list(self.actions),
            "OKActions": list(self.actions),
            "ActionsEnabled": True,
        }


def route_alarm_name(prefix: str, route: str) -> str:
    """A stable, valid alarm name for a route (with a short hash: slugs may collide)."""
    slug = _SLUG.sub("-", route.lower()).strip("-")[:120]
    digest = hashlib.sha256(route.encode()).hexdigest()[:6]
    return f"{prefix}{ROUTE_ALARM_INFIX}{slug}-{digest}"


def desired_route_alarms(
    *,
    prefix: str,
    service: str,
    routes: Iterable[str],
    volume_threshold: int,
    actions: tuple[str, ...],
) -> list[AlarmSpec]:
    """One bad-request volume alarm per route with traffic."""
    return [
        AlarmSpec(
            name=route_alarm_name(prefix, route),
            description=(
                f"Bad requests (4xx incl. 429) on {route}: at least {volume_threshold} in 5 "
                "minutes. Kept by the metrics Lambda; a 403/404/422 storm pauses the route."
            ),
            metric="BadRequestsByRoute",
            dimensions=(("Route", route), ("service", service)),
            threshold=float(volume_threshold),
            actions=actions,
        )
        for route in sorted(set(routes))
    ]


@dataclass(frozen=True, slots=True)
class Plan:
    """What reconciling will do."""

    create: tuple[AlarmSpec, ...] = ()
    update: tuple[AlarmSpec, ...] = ()
    delete: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


_COMPARED = {
    "AlarmDescription": "description",
    "MetricName": "metric",
    "Statistic": "statistic",
    "Period": "period_s",
    "EvaluationPeriods": "evaluation_periods",
    "Threshold": "threshold",
    "ComparisonOperator": "comparison",
    "TreatMissingData": "treat_missing",
}


def drifted(existing: Mapping[str, Any], spec: AlarmSpec) -> bool:
    """Does an alarm as CloudWatch describes it differ from its spec?"""
    for key, attribute in _COMPARED.items():
        if existing.get(key) != getattr(spec, attribute):
            return True
    dimensions = tuple(sorted((d["Name"], d["Value"]) for d in existing.get("Dimensions", [])))
    if dimensions != tuple(sorted(spec.dimensions)):
        return True
    return sorted(existing.get("AlarmActions", [])) != sorted(spec.actions)


def plan(existing: Iterable[Mapping[str, Any]], desired: Iterable[AlarmSpec]) -> Plan:
    """The changes that make the managed alarms match ``desired``.

    ``existing`` must be only the alarms this Lambda manages (its name prefix), so alarms
    declared in the template are never touched.
    """
    current = {alarm["AlarmName"]: alarm for alarm in existing}
    wanted = {spec.name: spec for spec in desired}
    create = tuple(spec for name, spec in sorted(wanted.items()) if name not in current)
    update = tuple(
        spec for name, spec in sorted(wanted.items())
        if name in current and drifted(current[name], spec)
    )
    delete = tuple(sorted(name for name in current if name not in wanted))
    return Plan(create=create, update=update, delete=delete)
