"""The metrics Lambda's work: bad-request rates, alarm upkeep, notifications, the guard.

Every minute (EventBridge schedule) it computes the bad-request rate (4xx including 429 over
all attempts) and volume, overall and per route, publishes them, and reconciles the
per-route alarms. On an alarm state change (via SNS, or EventBridge) it tells people what is
failing — top routes, statuses and Kisi error codes in the window, and what the guard did —
and opens or closes the guard: a 401 storm pauses the account, a 403/404/422 storm one route.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kisi_gateway.core.alarm_plan import ROUTE_ALARM_INFIX, desired_route_alarms, plan
from kisi_gateway.stores.cloudwatch import CloudWatchAlarms, MetricsReader
from kisi_gateway.stores.guard import DynamoGuard

LOG = logging.getLogger("kisi_gateway")
WINDOW_S = 300  # the alarms' period: 5 minutes
CONTEXT_WINDOW_S = 900  # what a notification looks back over
ROUTE_PAUSING_STATUSES = frozenset({"403", "404", "422"})  # Kisi answers 403 for unknown ids
TOP = 5


@dataclass(frozen=True, slots=True)
class Rates:
    """Bad requests over attempts in a window."""

    attempts: float
    bad: float
    min_volume: int

    @property
    def percent(self) -> float:
        """The rate, or 0 below the minimum volume (1 error in 2 calls must not page)."""
        if self.attempts < self.min_volume or self.attempts <= 0:
            return 0.0
        return 100.0 * self.bad / self.attempts


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """An alarm state change, from SNS or EventBridge."""

    name: str
    new_state: str
    old_state: str
    reason: str
    route: str | None

    @classmethod
    def from_sns_message(cls, message: Mapping[str, Any]) -> AlarmChange:
        trigger = message.get("Trigger") or {}
        dimensions = {d.get("name") or d.get("Name"): d.get("value") or d.get("Value")
                      for d in trigger.get("Dimensions") or []}
        return cls(
            name=str(message.get("AlarmName", "")),
            new_state=str(message.get("NewStateValue", "")),
            old_state=str(message.get("OldStateValue", "")),
            reason=str(message.get("NewStateReason", "")),
            route=dimensions.get("Route"),
        )

    @classmethod
    def from_eventbridge(cls, detail: Mapping[str, Any]) -> AlarmChange:
        route = None
        for metric in (detail.get("configuration") or {}).get("metrics") or []:
            dims = ((metric.get("metricStat") or {}).get("metric") or {}).get("dimensions") or {}
            route = route or dims.get("Route")
        return cls(
            name=str(detail.get("alarmName", "")),
            new_state=str((detail.get("state") or {}).get("value", "")),
            old_state=str((detail.get("previousState") or {}).get("value", "")),
            reason=str((detail.get("state") or {}).get("reason", "")),
            route=route,
        )


@dataclass(frozen=True, slots=True)
class Failing:
    """What failed in a window: bad requests by route, by status, by Kisi code."""

    by_route: list[tuple[str, float]]
    by_route_status: dict[str, Counter[str]]
    by_code: list[tuple[str, float]]
    by_tenant: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Monitor:
    """The metrics Lambda, minus its event parsing."""

    reader: MetricsReader
    alarms: CloudWatchAlarms
    guard: DynamoGuard
    sns: Any
    notify_topic_arn: str | None
    alarm_actions: tuple[str, ...]
    prefix: str
    min_volume: int
    route_volume_threshold: int
    published: list[dict[str, Any]] = field(default_factory=list)

    def on_schedule(self, now: float) -> dict[str, Any]:
        """Publish rates, reconcile the per-route alarms; idempotent."""
        start = now - WINDOW_S
        overall = Rates(
            self.reader.total("Attempts", start, now),
            self.reader.total("BadRequests", start, now),
            self.min_volume,
        )
        data = [self._datum("BadRequestRate", overall.percent, "Percent", {}, now),
                self._datum("BadRequestVolume", overall.bad, "Count", {}, now)]
        routes = sorted(
            {d["Route"] for d in self.reader.dimension_values("AttemptsByRoute", ("Route",))}
        )
        for route in routes:
            rates = Rates(
                self.reader.total("AttemptsByRoute", start, now, Route=route),
                self.reader.total("BadRequestsByRoute", start, now, Route=route),
                self.min_volume,
            )
            data.append(self._datum(
                "BadRequestRateByRoute", rates.percent, "Percent", {"Route": route}, now
            ))
        open_scopes = [s for s in self.guard.states(now) if s.get("state") != "closed"]
        data.append(self._datum("GuardOpen", float(len(open_scopes)), "Count", {}, now))
        self._publish(data)
        desired = desired_route_alarms(
            prefix=self.prefix, service=self.reader.service, routes=routes,
            volume_threshold=self.route_volume_threshold, actions=self.alarm_actions,
        )
        changes = plan(self.alarms.managed(), desired)
        self.alarms.apply(changes)
        return {
            "attempts": overall.attempts,
            "bad_requests": overall.bad,
            "bad_request_rate": overall.percent,
            "routes": routes,
            "alarms_created": [a.name for a in changes.create],
            "alarms_updated": [a.name for a in changes.update],
            "alarms_deleted": list(changes.delete),
            "guard_open": [s.get("scope") for s in open_scopes],
        }

    def on_alarm(self, change: AlarmChange, now: float) -> dict[str, Any]:
        """Drive the guard from an alarm change and tell people about it."""
        failing = self.failing(now - CONTEXT_WINDOW_S, now)
        # Decisions look at the alarm's own window; the notification shows more context.
        evidence = self.failing(now - WINDOW_S, now)
        action = self._guard_action(change, evidence, now)
        subject, text = compose_notification(change, failing, action, self.guard.states(now))
        if self.notify_topic_arn:
            self.sns.publish(TopicArn=self.notify_topic_arn, Subject=subject[:99], Message=text)
        LOG.warning("alarm change", extra={"alarm": change.name, "state": change.new_state,
                                           "guard": action})
        return {"subject": subject, "guard": action}

    def failing(self, start: float, end: float) -> Failing:
        by_route: list[tuple[str, float]] = []
        by_route_status: dict[str, Counter[str]] = {}
        for dims in self.reader.dimension_values("BadRequestsByRouteStatus", ("Route", "Status")):
            count = self.reader.total("BadRequestsByRouteStatus", start, end, **dims)
            if count > 0:
                by_route_status.setdefault(dims["Route"], Counter())[dims["Status"]] += int(count)
        by_route = sorted(
            ((route, float(sum(c.values()))) for route, c in by_route_status.items()),
            key=lambda item: (-item[1], item[0]),
        )
        codes: Counter[str] = Counter()
        for dims in self.reader.dimension_values("BadRequestsByCode", ("Status", "Code")):
            count = self.reader.total("BadRequestsByCode", start, end, **dims)
            if count > 0:
                codes[f"{dims['Status']} {dims['Code']}"] += int(count)
        by_code = sorted(codes.items(), key=lambda item: (-item[1], item[0]))
        tenants: Counter[str] = Counter()
        for dims in self.reader.dimension_values("BadRequestsByTenant", ("Tenant", "Credential")):
            count = self.reader.total("BadRequestsByTenant", start, end, **dims)
            if count > 0:
                tenants[f"{dims['Tenant']} ({dims['Credential']} credential)"] += int(count)
        by_tenant = sorted(tenants.items(), key=lambda item: (-item[1], item[0]))
        return Failing(by_route[:TOP], by_route_status, [(c, float(n)) for c, n in by_code[:TOP]],
                       [(name, float(n)) for name, n in by_tenant[:TOP]])

    def _guard_action(self, change: AlarmChange, failing: Failing, now: float) -> str:
        """What the storm looks like, and what the guard is doing about it.

        The alarm path never pauses anyone: an alarm sees the fleet, and a fleet-wide pause
        would let one caller's storm stop everybody's traffic. Pauses are per identity, taken
        where the requests are sent (the guard's fast paths); this says which are in force.
        """
        route = change.route or self._route_of(change.name)
        statuses: Counter[str] = Counter()
        scoped = {route: failing.by_route_status.get(route, Counter())} if route else (
            failing.by_route_status)
        for counter in scoped.values():
            statuses.update(counter)
        total = sum(statuses.values())
        paused = [s for s in self.guard.states(now) if s.get("state") != "closed"]
        in_force = f"{len(paused)} identity scope(s) paused now" if paused else "nothing paused"
        if change.new_state != "ALARM" or not total:
            return f"no guard change ({in_force})"
        if statuses["401"] * 2 >= total:
            return (f"{statuses['401']} of {total} bad requests were 401: a key looks expired "
                    f"or revoked; its identity is paused after 5 in a row ({in_force})")
        rejected = sum(statuses[s] for s in ROUTE_PAUSING_STATUSES)
        if rejected * 2 >= total:
            where = f" on {route}" if route else ""
            return (f"{rejected} of {total} bad requests were 403/404/422{where}: callers send "
                    f"ids or bodies Kisi rejects ({in_force})")
        return f"no guard change ({in_force})"

    def _route_of(self, alarm_name: str) -> str | None:
        """The route of one of our per-route alarms (its description names it)."""
        if ROUTE_ALARM_INFIX not in alarm_name:
            return None
        for alarm in self.alarms.managed():
            if alarm.get("AlarmName") == alarm_name:
                for dim in alarm.get("Dimensions", []):
                    if dim.get("Name") == "Route":
                        return str(dim.get("Value"))
        return None

    def _datum(
        self, name: str, value: float, unit: str, dims: Mapping[str, str], now: float
    ) -> dict[str, Any]:
        dimensions = [{"Name": "service", "Value": self.reader.service}]
        dimensions += [{"Name": k, "Value": v} for k, v in dims.items()]
        return {"MetricName": name, "Value": value, "Unit": unit, "Dimensions": dimensions,
                "Timestamp": datetime.fromtimestamp(now, UTC)}

    def _publish(self, data: list[dict[str, Any]]) -> None:
        for start in range(0, len(data), 1000):  # PutMetricData takes 1,000 values
            self.reader.client.put_metric_data(
                Namespace=self.reader.namespace, MetricData=data[start : start + 1000]
            )
        self.published.extend(data)


def compose_notification(
    change: AlarmChange,
    failing: Failing,
    guard_action: str,
    guard_states: list[dict[str, Any]],
) -> tuple[str, str]:
    """A subject and a text a person can act on."""
    subject = f"[kisi-gateway] {change.new_state}: {change.name}"
    lines = [
        f"Alarm {change.name} went from {change.old_state or '?'} to {change.new_state}.",
        f"Why: {change.reason}" if change.reason else "",
        "",
        "Top failing routes (bad requests, last 15 minutes):",
    ]
    if failing.by_route:
        for route, count in failing.by_route:
            statuses = ", ".join(
                f"{status}x{n}" for status, n in failing.by_route_status[route].most_common()
            )
            lines.append(f"  {route}: {count:.0f} ({statuses})")
    else:
        lines.append("  none recorded")
    lines.append("Tenants (bad requests, by kind of credential):")
    lines += [f"  {name}: {count:.0f}" for name, count in failing.by_tenant] or ["  none"]
    lines.append("Kisi error codes (status code x count):")
    lines += [f"  {code} x{count:.0f}" for code, count in failing.by_code] or ["  none"]
    lines += ["", f"Guard: {guard_action}"]
    opened = [s for s in guard_states if s.get("state") != "closed"]
    for state in opened:
        lines.append(f"  {state.get('scope')}: {state.get('state')} ({state.get('reason')})")
    lines += [
        "",
        "What to do: see README 'Operating'. A 401 storm means a Kisi key expired or was "
        "revoked: for a tenant's service login, put a valid key in its secret (traffic "
        "resumes within seconds); `python -m ops guard status` lists what is paused.",
    ]
    return subject, "\n".join(line for line in lines if line is not None)


def parse_alarm_event(event: Mapping[str, Any]) -> list[AlarmChange]:
    """Alarm changes in an SNS or EventBridge event (others: none)."""
    changes: list[AlarmChange] = []
    for record in event.get("Records") or []:
        sns = record.get("Sns") or {}
        try:
            message = json.loads(sns.get("Message") or "")
        except ValueError:
            continue
        if isinstance(message, dict) and "AlarmName" in message:
            changes.append(AlarmChange.from_sns_message(message))
    if event.get("detail-type") == "CloudWatch Alarm State Change":
        changes.append(AlarmChange.from_eventbridge(event.get("detail") or {}))
    return changes
