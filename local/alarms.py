"""Evaluate the alarms stored in moto, as CloudWatch would, and send their notifications.

moto keeps alarms but never evaluates them, so :class:`AlarmEvaluator` reads each alarm
(``describe_alarms``), fetches its datapoints (``get_metric_statistics``, one call per metric
and period), computes metric math with :mod:`local.alarm_math`, decides the state
(threshold, DatapointsToAlarm "M out of N", TreatMissingData), stores it with
``set_alarm_state`` and, on a change, publishes CloudWatch's alarm message to the SNS topics
in the alarm's actions. Time comes from an injected clock. moto publishes no AWS/SQS
metrics, so queue-depth metrics that alarms watch are sampled from the queues themselves.

One local liberty: the period that contains ``now`` is evaluated too (CloudWatch waits for
it to fill), so a metric written a moment ago shows in the next evaluation.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from local.alarm_math import ExpressionError, Series, evaluate

__all__ = [
    "AlarmEvaluator",
    "Decision",
    "SqsQueueMetrics",
    "StateChange",
    "alarm_message",
    "decide",
]

_REGION_NAMES = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)",
    "eu-central-1": "EU (Frankfurt)",
}
_OPERATORS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}
_SUBJECT_LIMIT = 100  # SNS Subject: at most 100 characters


@dataclass(frozen=True)
class Decision:
    state: str
    reason: str
    breaching: int


def decide(
    values: Series,
    threshold: float,
    comparison: str,
    datapoints_to_alarm: int,
    treat_missing: str,
    current: str,
    timestamps: list[datetime],
) -> Decision:
    """The state an alarm moves to for ``values`` (oldest first, ``None`` = missing)."""
    if comparison not in _OPERATORS:
        raise ExpressionError(f"comparison {comparison} is not evaluated locally")
    breaches, words = _OPERATORS[comparison]
    n = len(values)
    present = [(ts, v) for ts, v in zip(timestamps, values, strict=True) if v is not None]
    if not present:
        if treat_missing == "breaching":
            return Decision(
                "ALARM", f"No datapoints; {n} missing datapoints treated as breaching", n
            )
        if treat_missing == "notBreaching":
            return Decision(
                "OK", f"No datapoints; {n} missing datapoints treated as not breaching", 0
            )
        if treat_missing == "ignore":
            return Decision(current, "No datapoints; state kept (TreatMissingData ignore)", 0)
        return Decision("INSUFFICIENT_DATA", "Insufficient Data: no datapoints were received", 0)
    breaching = sum(1 for _, v in present if breaches(v, threshold))
    if treat_missing == "breaching":
        breaching += n - len(present)
    state = "ALARM" if breaching >= datapoints_to_alarm else "OK"
    shown = ", ".join(f"{v} ({ts.strftime('%d/%m/%y %H:%M:%S')})" for ts, v in reversed(present))
    verb = words if state == "ALARM" else f"not {words}"
    count = breaching if state == "ALARM" else len(present) - breaching
    reason = (
        f"Threshold Crossed: {count} out of the last {n} datapoints [{shown}] was {verb} "
        f"the threshold ({float(threshold)}) (minimum {datapoints_to_alarm} datapoint"
        f"{'s' if datapoints_to_alarm != 1 else ''} for {current} -> {state} transition)."
    )
    return Decision(state, reason, breaching)


@dataclass(frozen=True)
class StateChange:
    alarm: str
    old: str
    new: str
    reason: str
    notified: tuple[str, ...]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def _trigger(alarm: Mapping[str, Any]) -> dict[str, Any]:
    common = {
        "Period": alarm.get("Period") or _math_period(alarm),
        "EvaluationPeriods": alarm["EvaluationPeriods"],
        "DatapointsToAlarm": alarm.get("DatapointsToAlarm", alarm["EvaluationPeriods"]),
        "ComparisonOperator": alarm["ComparisonOperator"],
        "Threshold": float(alarm["Threshold"]),
        "TreatMissingData": alarm.get("TreatMissingData", "missing"),
        "EvaluateLowSampleCountPercentile": alarm.get("EvaluateLowSampleCountPercentile", ""),
    }
    if alarm.get("Metrics"):
        metrics = []
        for query in alarm["Metrics"]:
            shaped: dict[str, Any] = {
                "Id": query["Id"],
                "ReturnData": query.get("ReturnData", True),
            }
            if "Expression" in query:
                shaped["Expression"] = query["Expression"]
            if "Label" in query:
                shaped["Label"] = query["Label"]
            if "MetricStat" in query:
                stat = query["MetricStat"]
                metric = stat["Metric"]
                shaped["MetricStat"] = {
                    "Metric": {
                        "Dimensions": [
                            {"value": d["Value"], "name": d["Name"]}
                            for d in metric.get("Dimensions", [])
                        ],
                        "MetricName": metric["MetricName"],
                        "Namespace": metric["Namespace"],
                    },
                    "Period": stat["Period"],
                    "Stat": stat["Stat"],
                }
            metrics.append(shaped)
        return {**common, "Metrics": metrics}
    return {
        "MetricName": alarm.get("MetricName"),
        "Namespace": alarm.get("Namespace"),
        "StatisticType": "Statistic",
        "Statistic": str(alarm.get("Statistic", "")).upper(),
        "Unit": alarm.get("Unit"),
        "Dimensions": [
            {"value": d["Value"], "name": d["Name"]} for d in alarm.get("Dimensions", [])
        ],
        **common,
    }


def _math_period(alarm: Mapping[str, Any]) -> int:
    periods = [
        int(q["MetricStat"]["Period"]) for q in alarm.get("Metrics", []) if "MetricStat" in q
    ]
    periods += [int(q["Period"]) for q in alarm.get("Metrics", []) if "Period" in q]
    return max(periods) if periods else 60


def alarm_message(
    alarm: Mapping[str, Any],
    old: str,
    new: str,
    reason: str,
    when: datetime,
    account_id: str,
    region: str,
) -> tuple[str, str]:
    """The (subject, message) CloudWatch publishes to SNS on a state change."""
    region_name = _REGION_NAMES.get(region, region)
    updated = alarm.get("AlarmConfigurationUpdatedTimestamp")
    message = {
        "AlarmName": alarm["AlarmName"],
        "AlarmDescription": alarm.get("AlarmDescription"),
        "AWSAccountId": account_id,
        "AlarmConfigurationUpdatedTimestamp": _iso(updated)
        if isinstance(updated, datetime)
        else None,
        "NewStateValue": new,
        "NewStateReason": reason,
        "StateChangeTime": _iso(when),
        "Region": region_name,
        "AlarmArn": alarm["AlarmArn"],
        "OldStateValue": old,
        "OKActions": list(alarm.get("OKActions", [])),
        "AlarmActions": list(alarm.get("AlarmActions", [])),
        "InsufficientDataActions": list(alarm.get("InsufficientDataActions", [])),
        "Trigger": _trigger(alarm),
    }
    subject = f'{new}: "{alarm["AlarmName"]}" in {region_name}'
    if len(subject) > _SUBJECT_LIMIT:
        subject = subject[: _SUBJECT_LIMIT - 3] + "..."
    return subject, json.dumps(message)


# AWS/SQS metric -> the queue attribute SQS samples for it.
_SQS_METRICS = {
    "ApproximateNumberOfMessagesVisible": "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible": "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed": "ApproximateNumberOfMessagesDelayed",
}


def _watched_metrics(alarm: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if alarm.get("Metrics"):
        return [q["MetricStat"]["Metric"] for q in alarm["Metrics"] if "MetricStat" in q]
    return [alarm]


class SqsQueueMetrics:
    """The AWS/SQS queue-depth metrics SQS publishes each minute, which moto never does.

    Sampled from the queue attributes for the queues that alarms watch, just before they are
    evaluated. ApproximateAgeOfOldestMessage cannot be sampled without receiving (which would
    change receive counts), so alarms on it see no data.
    """

    def __init__(self, cloudwatch: Any, sqs: Any, log: Callable[[str], None] = print) -> None:
        self._cloudwatch = cloudwatch
        self._sqs = sqs
        self._log = log

    def publish(self, alarms: list[dict[str, Any]], now: datetime) -> int:
        wanted: set[tuple[str, str]] = set()
        for alarm in alarms:
            for metric in _watched_metrics(alarm):
                dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions") or []}
                name = metric.get("MetricName")
                watched = metric.get("Namespace") == "AWS/SQS" and name in _SQS_METRICS
                if watched and "QueueName" in dimensions:
                    wanted.add((dimensions["QueueName"], str(name)))
        for queue, name in sorted(wanted):
            try:
                url = self._sqs.get_queue_url(QueueName=queue)["QueueUrl"]
                attribute = _SQS_METRICS[name]
                value = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[attribute])
            except Exception as error:  # a queue the stack does not have: no data, like AWS
                self._log(f"AWS/SQS {name} for {queue}: {type(error).__name__}")
                continue
            self._cloudwatch.put_metric_data(
                Namespace="AWS/SQS",
                MetricData=[
                    {
                        "MetricName": name,
                        "Dimensions": [{"Name": "QueueName", "Value": queue}],
                        "Value": float(value["Attributes"][attribute]),
                        "Unit": "Count",
                        "Timestamp": now,
                    }
                ],
            )
        return len(wanted)


class AlarmEvaluator:
    """Evaluates every metric alarm in the embedded AWS on demand or periodically."""

    def __init__(
        self,
        cloudwatch: Any,
        sns: Any,
        account_id: str,
        region: str,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        log: Callable[[str], None] = print,
        sqs: Any = None,
    ) -> None:
        self._cloudwatch = cloudwatch
        self._sns = sns
        self._queue_metrics = SqsQueueMetrics(cloudwatch, sqs, log) if sqs is not None else None
        self._account_id = account_id
        self._region = region
        self._now = now
        self._log = log

    # data -------------------------------------------------------------------------------
    def _windows(self, period: int, count: int, now: datetime) -> list[tuple[datetime, datetime]]:
        epoch = int(now.timestamp())
        end = datetime.fromtimestamp(epoch - epoch % period + period, UTC)
        starts = [end - timedelta(seconds=period * (count - i)) for i in range(count)]
        return [(start, start + timedelta(seconds=period)) for start in starts]

    def _series(
        self,
        metric: Mapping[str, Any],
        stat: str,
        unit: str | None,
        windows: list[tuple[datetime, datetime]],
    ) -> Series:
        values: Series = []
        percentile = stat.lower().startswith("p")
        for start, end in windows:
            request: dict[str, Any] = {
                "Namespace": metric["Namespace"],
                "MetricName": metric["MetricName"],
                "Dimensions": metric.get("Dimensions", []),
                "StartTime": start,
                "EndTime": end,
                "Period": int((end - start).total_seconds()),
            }
            if percentile:
                request["ExtendedStatistics"] = [stat]
            else:
                request["Statistics"] = [stat]
            if unit:
                request["Unit"] = unit
            points = self._cloudwatch.get_metric_statistics(**request)["Datapoints"]
            if not points:
                values.append(None)
                continue
            point = points[0]
            raw = point["ExtendedStatistics"].get(stat) if percentile else point.get(stat)
            values.append(None if raw is None else float(raw))
        return values

    def _alarm_values(
        self, alarm: Mapping[str, Any], now: datetime
    ) -> tuple[Series, list[datetime]]:
        count = int(alarm["EvaluationPeriods"])
        if not alarm.get("Metrics"):
            windows = self._windows(int(alarm["Period"]), count, now)
            metric = {k: alarm.get(k) for k in ("Namespace", "MetricName", "Dimensions")}
            stat = alarm.get("Statistic") or alarm.get("ExtendedStatistic")
            values = self._series(metric, str(stat), alarm.get("Unit"), windows)
            return values, [start for start, _ in windows]
        windows = self._windows(_math_period(alarm), count, now)
        series: dict[str, Series] = {}
        for query in alarm["Metrics"]:
            if "MetricStat" in query:
                stat = query["MetricStat"]
                series[query["Id"]] = self._series(
                    stat["Metric"], stat["Stat"], stat.get("Unit"), windows
                )
        returned = [q for q in alarm["Metrics"] if q.get("ReturnData", True)]
        if len(returned) != 1:
            raise ExpressionError("a metric math alarm needs exactly one query with ReturnData")
        # Expressions may build on each other; evaluate them in order of definition.
        pending = [q for q in alarm["Metrics"] if "Expression" in q]
        for query in pending:
            result = evaluate(query["Expression"], series)
            series[query["Id"]] = result if isinstance(result, list) else [result] * count
        return series[returned[0]["Id"]], [start for start, _ in windows]

    # evaluation ---------------------------------------------------------------------------
    def evaluate(self, now: datetime | None = None) -> list[StateChange]:
        """Evaluate every alarm once at ``now``; returns the state changes made."""
        when = now or self._now()
        changes = []
        alarms = self._describe()
        if self._queue_metrics is not None:
            self._queue_metrics.publish(alarms, when)
        for alarm in alarms:
            try:
                change = self._evaluate_one(alarm, when)
            except (ExpressionError, KeyError, ValueError) as error:
                self._log(f"alarm {alarm['AlarmName']}: not evaluated locally: {error}")
                continue
            if change is not None:
                changes.append(change)
        return changes

    def _describe(self) -> list[dict[str, Any]]:
        alarms: list[dict[str, Any]] = []
        for page in self._cloudwatch.get_paginator("describe_alarms").paginate(
            AlarmTypes=["MetricAlarm"]
        ):
            alarms.extend(page.get("MetricAlarms", []))
        return alarms

    def _evaluate_one(self, alarm: Mapping[str, Any], when: datetime) -> StateChange | None:
        values, timestamps = self._alarm_values(alarm, when)
        current = str(alarm["StateValue"])
        decision = decide(
            values,
            float(alarm["Threshold"]),
            str(alarm["ComparisonOperator"]),
            int(alarm.get("DatapointsToAlarm") or alarm["EvaluationPeriods"]),
            str(alarm.get("TreatMissingData") or "missing"),
            current,
            timestamps,
        )
        if decision.state == current:
            return None
        reason_data = json.dumps(
            {
                "version": "1.0",
                "queryDate": _iso(when),
                "startDate": _iso(timestamps[0]),
                "period": int(alarm.get("Period") or _math_period(alarm)),
                "recentDatapoints": [v for v in values if v is not None],
                "threshold": float(alarm["Threshold"]),
            }
        )
        self._cloudwatch.set_alarm_state(
            AlarmName=alarm["AlarmName"],
            StateValue=decision.state,
            StateReason=decision.reason[:1023],
            StateReasonData=reason_data,
        )
        notified = self._notify(alarm, current, decision, when)
        self._log(
            f"alarm {alarm['AlarmName']}: {current} -> {decision.state}"
            + (f", notified {', '.join(notified)}" if notified else "")
        )
        return StateChange(alarm["AlarmName"], current, decision.state, decision.reason, notified)

    def _notify(
        self, alarm: Mapping[str, Any], old: str, decision: Decision, when: datetime
    ) -> tuple[str, ...]:
        if not alarm.get("ActionsEnabled", True):
            return ()
        key = {"ALARM": "AlarmActions", "OK": "OKActions"}.get(
            decision.state, "InsufficientDataActions"
        )
        subject, message = alarm_message(
            alarm, old, decision.state, decision.reason, when, self._account_id, self._region
        )
        notified = []
        for action in alarm.get(key, []):
            if not str(action).startswith("arn:aws:sns:"):
                self._log(f"alarm {alarm['AlarmName']}: action {action} is not emulated")
                continue
            self._sns.publish(TopicArn=action, Subject=subject, Message=message)
            notified.append(str(action).rsplit(":", 1)[-1])
        return tuple(notified)

    def run(self, stop: threading.Event, interval_s: float = 10.0) -> None:
        """Evaluate every ``interval_s`` until ``stop`` is set."""
        while not stop.wait(interval_s):
            try:
                self.evaluate()
            except Exception as error:  # moto restarting: try again next round
                self._log(f"alarm evaluator: {type(error).__name__}: {error}")
