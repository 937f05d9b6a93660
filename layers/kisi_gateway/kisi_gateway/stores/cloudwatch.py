"""CloudWatch for the metrics Lambda: sums of the gateway's metrics, and the alarms it keeps.

Adapters over a boto3 CloudWatch client; what the alarms should be is
:mod:`kisi_gateway.core.alarm_plan`'s decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kisi_gateway.core.alarm_plan import ROUTE_ALARM_INFIX, Plan

# A sum "up to now" reads a little past now: CloudWatch's EndTime is exclusive and whole-second
# (so this second's datapoints would be missed), and datapoints carry the sending host's clock,
# which may run ahead of this one. Nothing is stamped later than that, so nothing is counted twice.
READ_AHEAD_S = 60


@dataclass
class MetricsReader:
    """Sums of the gateway's metrics from CloudWatch."""

    client: Any
    namespace: str
    service: str

    def total(self, metric: str, start: float, end: float, **dims: str) -> float:
        dimensions = [{"Name": "service", "Value": self.service}]
        dimensions += [{"Name": k, "Value": v} for k, v in sorted(dims.items())]
        period = max(60, int((end - start) // 60) * 60)
        answer = self.client.get_metric_statistics(
            Namespace=self.namespace, MetricName=metric, Dimensions=dimensions,
            StartTime=datetime.fromtimestamp(start, UTC),
            EndTime=datetime.fromtimestamp(end + READ_AHEAD_S, UTC),
            Period=period, Statistics=["Sum"],
        )
        return float(sum(point.get("Sum", 0.0) for point in answer.get("Datapoints", [])))

    def dimension_values(self, metric: str, names: tuple[str, ...]) -> list[dict[str, str]]:
        """Every combination of ``names`` seen on ``metric`` for this service."""
        found: dict[tuple[str, ...], dict[str, str]] = {}
        paginator = self.client.get_paginator("list_metrics")
        for page in paginator.paginate(
            Namespace=self.namespace, MetricName=metric,
            Dimensions=[{"Name": "service", "Value": self.service}]
            + [{"Name": name} for name in names],
        ):
            for item in page.get("Metrics", []):
                dims = {d["Name"]: d["Value"] for d in item.get("Dimensions", [])}
                if set(dims) == {*names, "service"}:
                    combo = {name: dims[name] for name in names}
                    found[tuple(combo[name] for name in names)] = combo
        return [found[key] for key in sorted(found)]



@dataclass
class CloudWatchAlarms:
    """Reads and writes the managed alarms with a boto3 CloudWatch client."""

    client: Any
    namespace: str
    prefix: str
    applied: list[str] = field(default_factory=list)

    def managed(self) -> list[dict[str, Any]]:
        alarms: list[dict[str, Any]] = []
        paginator = self.client.get_paginator("describe_alarms")
        for page in paginator.paginate(
            AlarmNamePrefix=f"{self.prefix}{ROUTE_ALARM_INFIX}", AlarmTypes=["MetricAlarm"]
        ):
            alarms.extend(page.get("MetricAlarms", []))
        return alarms

    def apply(self, changes: Plan) -> None:
        for spec in (*changes.create, *changes.update):
            self.client.put_metric_alarm(**spec.put_args(self.namespace))
            self.applied.append(spec.name)
        for start in range(0, len(changes.delete), 100):  # DeleteAlarms takes 100 names
            self.client.delete_alarms(AlarmNames=list(changes.delete[start : start + 100]))
