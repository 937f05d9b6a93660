"""``make demo``: one scripted scenario against a fresh local stack, then a table and a plot.

Starts ``python -m local`` (moto, the Kisi simulator, the gateway) with short, test-friendly
knobs, plays three phases as callers would, and reports what happened from both sides: the
simulator's request log (what reached Kisi) and the gateway's replies and request records
(what callers saw).

(a) burst   60 unlocks and 60 ``GET /locks?limit=10&offset=N`` from 30 threads at once; the
            shared send budget spaces them at 5 req/s, inline within ``Prefer: wait`` or
            deferred with a 202.
(b) outage  Kisi answers 503 for ~10 s; 20 GETs with ``Prefer: respond-async`` get 202s
            and are retried through the queue until they succeed.
(c) revoked the demo key is revoked: 401s, the guard pauses the account (503 with
            Retry-After), the bad-request volume alarm fires and people are notified; the
            key is restored and the half-open probe lets traffic through again.

Every deferred request is polled through its ``Location`` until it ends (bounded). Then a
summary table is printed and ``docs/demo_timeline.png`` is written: attempts reaching Kisi
per second by outcome class, with the phases marked. Everything runs on 127.0.0.1, bounded in
count and time, and the stack is stopped at the end, on error and on Ctrl-C.

The summary and figure computations are pure functions (tested in
``tests/unit/test_scenarios.py``); the caller side and the shared figures are in
:mod:`scenarios.caller` and :mod:`scenarios.figures`, which ``scenarios.soak`` uses too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kisi_sim import DEMO_KEY
from local.moto_server import LOCAL_REGION
from local.stack_process import StackProcess, on_fresh_stack, stack_env
from scenarios.caller import (
    EXPIRED_CODE,
    PAUSED_CODE,
    TERMINAL,
    UNKNOWN_OUTCOME_CODE,
    Reply,
    body_bytes,
    bounded_pool,
    is_gateway_error,
    poll_until_terminal,
    send,
)
from scenarios.figures import (
    OUTCOME_CLASSES,
    kisi_outcomes,
    outcome_class,
    render_table,
)

ROOT = Path(__file__).resolve().parent.parent
PLOT_PATH = ROOT / "docs" / "demo_timeline.png"
VOLUME_ALARM = "kisi-gateway-bad-request-volume"

CLASS_LABELS = {
    "success": "2xx success",
    "redirect": "3xx redirect",
    "client_error": "4xx client error",
    "rate_limited": "429 rate limited",
    "server_error": "5xx server error",
    "network_error": "network error (gateway side)",
}
CLASS_COLORS = {
    "success": "#2ca02c",
    "redirect": "#1f77b4",
    "client_error": "#ff7f0e",
    "rate_limited": "#d62728",
    "server_error": "#9467bd",
    "network_error": "#7f7f7f",
}

# Short real-time knobs: reads retry quickly (12 attempts, delays of at most 5 s, so more
# than a 10 s outage), the guard cools down in 5 s, the volume alarm fires at 5 bad requests
# and alarms are evaluated every second. Unlock keeps its default policy (4 attempts, 30 s).
DEMO_POLICIES = {
    "policies": {"read": {"max_attempts": 12, "base_s": 1, "cap_s": 5, "deadline_s": 300}}
}
BURST_UNLOCKS = 60
BURST_LISTS = 60
BURST_THREADS = 30
OUTAGE_S = 10.0
OUTAGE_GETS = 20
REVOKED_CALLS = 8  # 5 x 401 trip the guard's fast path (GUARD_401_THRESHOLD), then 503s
PHASE_WAIT_S = 90.0  # bound on waiting for one phase's deferred requests to end
ALARM_WAIT_S = 30.0
RECOVERY_WAIT_S = 40.0


def demo_env() -> dict[str, str]:
    """The ``python -m local`` environment of the demo."""
    return stack_env(
        parameters={"BadRequestVolume": 5, "RoutePolicies": json.dumps(DEMO_POLICIES)},
        function_env={"GUARD_COOLDOWN_S": "5", "GUARD_CACHE_S": "0.5"},
        alarm_interval_s=1,
    )


# --------------------------------------------------------------------------- operator side


















def eventually(check: Callable[[], Any], timeout_s: float, every_s: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every_s)


@dataclass
class Inbox:
    """An SQS queue subscribed (raw delivery) to one of the stack's SNS topics."""

    sqs: Any
    url: str
    received: list[str] = field(default_factory=list)

    @classmethod
    def subscribe(cls, stack: StackProcess, topic_logical_id: str, name: str) -> Inbox:
        sqs, sns = stack.client("sqs"), stack.client("sns")
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=stack.topic_arn(topic_logical_id), Protocol="sqs",
                      Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
        return cls(sqs, url)

    def poll(self, rounds: int = 5) -> list[str]:
        """Receive (and delete) what has arrived; keeps every text in ``received``."""
        for _ in range(rounds):
            messages = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                self.received.append(message["Body"])
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return self.received


# --------------------------------------------------------------------------- pure figures






def reply_label(reply: Reply) -> str:
    """How a caller's answer is counted: its status, with what the gateway meant by it."""
    if reply.status is None:
        return f"no answer ({reply.error or 'error'})"
    notes = {
        PAUSED_CODE: "guard pause",
        UNKNOWN_OUTCOME_CODE: "unknown outcome",
        EXPIRED_CODE: "expired",
    }
    note = notes.get(reply.code or "")
    if note is None and reply.status >= 500 and is_gateway_error(reply):
        note = f"gateway error {reply.code or ''}".strip()
    return f"{reply.status} ({note})" if note else str(reply.status)




def reply_counts(replies: Iterable[Reply]) -> Counter[str]:
    return Counter(reply_label(reply) for reply in replies)


@dataclass(frozen=True)
class Spread:
    """Min, median and max of some numbers."""

    count: int
    low: float
    median: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        return cls(len(values), min(values), float(statistics.median(values)), max(values))

    def text(self, unit: str = "s") -> str:
        return (f"min {self.low:g} {unit}, median {self.median:g} {unit}, "
                f"max {self.high:g} {unit} (n={self.count})")




@dataclass(frozen=True)
class RetryFigures:
    """What the records of deferred requests say about retries."""

    requests: int
    attempts_per_request: dict[int, int]
    retries: int
    delays: Spread | None
    attempt_classes: dict[str, int]


def retry_figures(records: Iterable[Mapping[str, Any]]) -> RetryFigures:
    """Attempts per request, retries and the delays chosen between attempts."""
    histogram: Counter[int] = Counter()
    classes: Counter[str] = Counter()
    delays: list[float] = []
    retries = 0
    count = 0
    for record in records:
        attempts = list(record.get("attempts") or [])
        count += 1
        histogram[len(attempts)] += 1
        retries += max(0, len(attempts) - 1)
        for attempt in attempts:
            classes[str(attempt.get("class"))] += 1
            if attempt.get("delay_s") is not None:
                delays.append(float(attempt["delay_s"]))
    return RetryFigures(count, dict(sorted(histogram.items())), retries, Spread.of(delays),
                        dict(classes))


def terminal_states(records: Iterable[Mapping[str, Any] | None]) -> Counter[str]:
    """Records by final state; a missing or still-queued record counts as ``unfinished``."""
    states: Counter[str] = Counter()
    for record in records:
        status = (record or {}).get("status")
        states[status if status in TERMINAL else "unfinished"] += 1
    return states


def guard_actions(notifications: Iterable[str]) -> list[str]:
    """The ``Guard:`` lines of the notification texts (what the metrics Lambda did).

    Each is prefixed with the alarm change the text is about (its first line reads
    ``Alarm <name> went from <old> to <new>.``).
    """
    actions = []
    for text in notifications:
        lines = [line.strip() for line in text.splitlines()]
        about = ""
        if lines and lines[0].startswith("Alarm ") and " went from " in lines[0]:
            name, _, change = lines[0].removeprefix("Alarm ").partition(" went from ")
            old, _, new = change.rstrip(".").partition(" to ")
            about = f"{name} {old}->{new}: "
        actions += [about + line for line in lines if line.startswith("Guard:")]
    return actions


def alarm_transitions(messages: Iterable[str]) -> list[str]:
    """``name: OLD -> NEW`` for each CloudWatch alarm message (AlarmTopic's JSON)."""
    changes = []
    for text in messages:
        try:
            message = json.loads(text)
        except ValueError:
            continue
        if isinstance(message, dict) and "AlarmName" in message:
            changes.append(
                f"{message['AlarmName']}: {message.get('OldStateValue', '?')} -> "
                f"{message.get('NewStateValue', '?')}"
            )
    return changes


def per_second(
    entries: Iterable[Mapping[str, Any]], start: float, seconds: int
) -> dict[str, list[int]]:
    """Kisi requests per whole second since ``start``, by outcome class."""
    bins = {cls: [0] * seconds for cls in OUTCOME_CLASSES}
    for entry in entries:
        index = int(float(entry["at"]) - start)
        if 0 <= index < seconds:
            bins[outcome_class(int(entry["status"]))][index] += 1
    return bins


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    end: float


@dataclass(frozen=True)
class DemoSummary:
    """Everything the table shows."""

    kisi: dict[str, int]
    kisi_total: int
    replies: dict[str, int]
    inline: int
    deferred: int
    retries: RetryFigures
    terminal: dict[str, int]
    alarms_now: list[str]
    alarm_history: list[str]
    guard: list[str]
    paused_503: int
    rate_limited: int


def summarize(
    entries: Sequence[Mapping[str, Any]],
    replies: Sequence[Reply],
    records: Mapping[str, Mapping[str, Any]],
    *,
    alarms_now: Sequence[str],
    alarm_history: Sequence[str],
    notifications: Sequence[str],
) -> DemoSummary:
    """The demo's figures from the simulator's log, the replies and the final records."""
    deferred = [reply for reply in replies if reply.deferred]
    final = [records.get(reply.location or "") for reply in deferred]
    kisi = kisi_outcomes(entries)
    network = sum(
        1 for record in final if record
        for attempt in record.get("attempts") or [] if attempt.get("class") == "network_error"
    )
    if network:
        kisi["network_error"] += network
    return DemoSummary(
        kisi=dict(kisi),
        kisi_total=len(entries),
        replies=dict(sorted(reply_counts(replies).items())),
        inline=len(replies) - len(deferred),
        deferred=len(deferred),
        retries=retry_figures([record for record in final if record]),
        terminal=dict(terminal_states(final)),
        alarms_now=list(alarms_now),
        alarm_history=list(alarm_history),
        guard=guard_actions(notifications),
        paused_503=sum(1 for reply in replies if reply.code == PAUSED_CODE),
        rate_limited=kisi.get("rate_limited", 0),
    )




def render_summary(summary: DemoSummary) -> str:
    kisi_rows = [(CLASS_LABELS[cls], str(summary.kisi.get(cls, 0))) for cls in OUTCOME_CLASSES]
    kisi_rows.append(("total requests Kisi saw", str(summary.kisi_total)))
    retries = summary.retries
    histogram = ", ".join(
        f"{n} attempt{'s' if n != 1 else ''}: {count}"
        for n, count in retries.attempts_per_request.items()
    ) or "none"
    retry_rows = [
        ("deferred requests", str(retries.requests)),
        ("attempts per request", histogram),
        ("retries (attempts after the first)", str(retries.retries)),
        ("delays chosen", retries.delays.text() if retries.delays else "none"),
        ("attempt classes in records", ", ".join(
            f"{cls} {n}" for cls, n in sorted(retries.attempt_classes.items())) or "none"),
    ]
    terminal_rows = [(state, str(summary.terminal.get(state, 0)))
                     for state in ("succeeded", "failed", "expired", "unfinished")]
    guard_rows = [("answers paused by the guard (503)", str(summary.paused_503))]
    guard_rows += [("notification", line) for line in summary.guard] or [
        ("notification", "no Guard: line received")]
    alarm_rows = [("in ALARM now", ", ".join(summary.alarms_now) or "none")]
    alarm_rows += [("state change", change) for change in summary.alarm_history] or [
        ("state change", "none seen")]
    sections = [
        render_table(kisi_rows, "Attempts that reached Kisi, by outcome (simulator log)"),
        render_table(
            [*[(label, str(n)) for label, n in summary.replies.items()],
             ("answered inline / deferred (202)", f"{summary.inline} / {summary.deferred}"),
             *([("note", "no answer: the caller's connection failed (reset or timeout) "
                 "before any HTTP answer")] if any(
                 label.startswith("no answer") for label in summary.replies) else [])],
            "The gateway's answers to callers, by status",
        ),
        render_table(retry_rows, "Retries (records of deferred requests)"),
        render_table(terminal_rows, "Terminal states of deferred requests"),
        render_table(alarm_rows, "Alarms"),
        render_table(guard_rows, "Guard"),
        render_table(
            [("429s Kisi sent", f"{summary.rate_limited} (the send budget keeps this near 0)")],
            "Rate limiting",
        ),
    ]
    return "\n\n".join(sections)


# --------------------------------------------------------------------------- the plot


REPLY_COLORS = {"2": "#2ca02c", "202": "#1f77b4", "4": "#ff7f0e", "5": "#d62728"}
KISI_RATE_PER_S = 5  # Kisi's documented per-user limit, drawn as a reference line
FAULT_COLORS = ("#c5b0d5", "#ffbb78", "#c7c7c7", "#dbdb8d")  # shading of fault windows


def reply_color(label: str) -> str:
    """Answers to callers coloured by meaning: 202 blue, 2xx green, 4xx orange, 5xx red."""
    if label.startswith("202"):
        return REPLY_COLORS["202"]
    return REPLY_COLORS.get(label[:1], "#7f7f7f")


def plot_timeline(
    entries: Sequence[Mapping[str, Any]],
    replies: Sequence[Reply],
    phases: Sequence[Phase],
    start: float,
    path: Path,
    faults: Sequence[Phase] = (),
) -> Path:
    """Kisi attempts per second by class (stacked) over the callers' answers.

    Phase starts are dashed lines; ``faults`` (the outage, the revoked key) are shaded.
    """
    end = max([phase.end for phase in phases] + [float(e["at"]) for e in entries] + [start + 1])
    seconds = int(end - start) + 1
    bins = per_second(entries, start, seconds)
    figure = Figure(figsize=(13, 7), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    x = list(range(seconds))
    base = [0] * seconds
    for cls in OUTCOME_CLASSES:
        heights = bins[cls]
        if any(heights):
            top.bar(x, heights, bottom=base, width=1.0, align="edge", color=CLASS_COLORS[cls],
                    label=CLASS_LABELS[cls], zorder=2)
            base = [b + h for b, h in zip(base, heights, strict=True)]
    top.axhline(KISI_RATE_PER_S, color="black", linestyle=":", linewidth=0.8,
                label=f"Kisi's limit ({KISI_RATE_PER_S}/s per user)")
    top.set_ylim(0, max([*base, KISI_RATE_PER_S]) * 1.25)
    top.set_ylabel("requests reaching Kisi per second")
    top.set_title("kisi-gateway demo: what reached Kisi (simulator log), "
                  "and what callers got back")
    labels = sorted({reply_label(reply) for reply in replies})
    for row, label in enumerate(labels):
        times = [reply.answered_at - start for reply in replies if reply_label(reply) == label]
        bottom.scatter(times, [row] * len(times), s=14, alpha=0.7, color=reply_color(label),
                       zorder=2)
    bottom.set_yticks(range(len(labels)), labels, fontsize="small")
    bottom.set_ylim(-0.7, len(labels) - 0.3)
    bottom.set_xlabel("seconds since the scenario started")
    bottom.set_ylabel("answers to callers (when answered)")
    for axis in (top, bottom):
        for fault, color in zip(faults, FAULT_COLORS, strict=False):
            axis.axvspan(fault.start - start, fault.end - start, color=color, alpha=0.35,
                         zorder=0, linewidth=0, label=fault.name if axis is top else None)
        for phase in phases:
            axis.axvline(phase.start - start, color="black", linestyle="--", linewidth=0.8)
        axis.set_xlim(0, seconds)
    for phase in phases:
        top.annotate(phase.name, xy=(phase.start - start, 1.0),
                     xycoords=("data", "axes fraction"), xytext=(3, -12),
                     textcoords="offset points", fontsize="small")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------- the phases


def log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def brief(replies: Sequence[Reply]) -> str:
    return ", ".join(f"{label} x{n}" for label, n in sorted(reply_counts(replies).items()))


def phase_burst(stack: StackProcess) -> list[Reply]:
    """60 unlocks (``Prefer: wait=10``) and 60 list calls (default wait) from 30 threads."""
    calls: list[tuple[str, str, bytes | None, dict[str, str]]] = []
    for n in range(max(BURST_UNLOCKS, BURST_LISTS)):
        if n < BURST_UNLOCKS:
            body = body_bytes({"context": {"demo": "burst", "n": n}})
            calls.append(("POST", f"/kisi/locks/{1 + n % 120}/unlock", body,
                          {"Prefer": "wait=10"}))
        if n < BURST_LISTS:
            calls.append(("GET", f"/kisi/locks?limit=10&offset={(10 * n) % 120}", None, {}))
    barrier = threading.Barrier(min(BURST_THREADS, len(calls)))

    def one(call: tuple[str, str, bytes | None, dict[str, str]], index: int) -> Reply:
        if index < BURST_THREADS:
            barrier.wait(timeout=10)  # the first 30 leave together: a real burst
        method, path, body, headers = call
        return send(stack, "burst", method, path, body=body, headers=headers)

    with bounded_pool(BURST_THREADS) as pool:
        return list(pool.map(one, calls, range(len(calls))))


def phase_outage(stack: StackProcess, faults: list[Phase]) -> list[Reply]:
    """A 10 s Kisi outage; 20 GETs with ``Prefer: respond-async``."""
    stack.sim.update_faults({"outage_seconds": OUTAGE_S})
    now = time.time()
    faults.append(Phase(f"Kisi outage ({OUTAGE_S:g} s)", now, now + OUTAGE_S))
    headers = {"Prefer": "respond-async"}
    with bounded_pool(OUTAGE_GETS) as pool:
        return list(pool.map(
            lambda n: send(stack, "outage", "GET", f"/kisi/users/{n}", headers=headers),
            range(1, OUTAGE_GETS + 1),
        ))


def phase_revoked(stack: StackProcess, notify: Inbox, faults: list[Phase]) -> list[Reply]:
    """Revoke the key: 401s, guard pause, alarm and notification; restore it: recovery."""
    stack.sim.update_faults({"revoked_keys": [DEMO_KEY]})
    revoked_at = time.time()
    replies = [send(stack, "revoked", "GET", f"/kisi/locks/{n}")
               for n in range(1, REVOKED_CALLS + 1)]
    log(f"(c) revoked key: {brief(replies)}")
    cloudwatch = stack.client("cloudwatch")

    def alarm_fired() -> bool:
        alarms = cloudwatch.describe_alarms(AlarmNames=[VOLUME_ALARM])["MetricAlarms"]
        return bool(alarms) and alarms[0]["StateValue"] == "ALARM"

    fired = eventually(alarm_fired, ALARM_WAIT_S)
    log(f"(c) {VOLUME_ALARM}: {'ALARM' if fired else 'did not fire within the bound'}")

    def volume_notice() -> list[str]:
        return [a for a in guard_actions(notify.poll()) if a.startswith(f"{VOLUME_ALARM} ")]

    noticed = eventually(volume_notice, ALARM_WAIT_S)
    log(f"(c) notification: {noticed[0] if noticed else 'none within the bound'}")
    stack.sim.update_faults({"revoked_keys": []})
    faults.append(Phase("Kisi key revoked", revoked_at, time.time()))
    log("(c) key restored; calling until the half-open probe lets traffic through")

    def recovered() -> bool:
        reply = send(stack, "recovery", "GET", "/kisi/locks/1")
        replies.append(reply)
        return reply.status == 200

    ok = eventually(recovered, RECOVERY_WAIT_S, every_s=0.5)
    log(f"(c) recovery: {'200 again' if ok else 'no 200 within the bound'} "
        f"({brief([r for r in replies if r.phase == 'recovery'])})")
    return replies


def wait_deferred(
    stack: StackProcess, replies: Sequence[Reply], records: dict[str, dict[str, Any]],
    timeout_s: float, label: str,
) -> None:
    locations = [reply.location for reply in replies if reply.location is not None]
    if not locations:
        return
    records.update(poll_until_terminal(stack, locations, timeout_s, records=records))
    states = terminal_states(records.get(loc) for loc in locations)
    log(f"{label}: deferred requests ended: {dict(sorted(states.items()))}")


def alarm_state_now(stack: StackProcess) -> tuple[list[str], list[str]]:
    """Alarms in ALARM now, and moto's alarm history if it has one."""
    cloudwatch = stack.client("cloudwatch")
    in_alarm: list[str] = []
    for page in cloudwatch.get_paginator("describe_alarms").paginate():
        in_alarm += [a["AlarmName"] for a in page["MetricAlarms"] if a["StateValue"] == "ALARM"]
    # One try only: moto 5 answers DescribeAlarmHistory with a 500, which botocore retries.
    once = boto3.client(
        "cloudwatch", endpoint_url=stack.endpoint_url, region_name=LOCAL_REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",  # noqa: S106 - moto
        config=Config(retries={"total_max_attempts": 1}),
    )
    try:
        items = once.describe_alarm_history(HistoryItemType="StateUpdate")
    except (ClientError, BotoCoreError) as error:
        code = error.response["Error"].get("Code") if isinstance(error, ClientError) else None
        return sorted(in_alarm), [
            f"(no alarm history: moto answers DescribeAlarmHistory with "
            f"{code or type(error).__name__}; the changes below are the alarm messages "
            "sent to AlarmTopic)"
        ]
    return sorted(in_alarm), [f"{i['AlarmName']}: {i['HistorySummary']}"
                              for i in items.get("AlarmHistoryItems", [])]


def run_demo(stack: StackProcess, plot_path: Path, dump_path: Path | None = None) -> str:
    notify = Inbox.subscribe(stack, "NotifyTopic", "demo-notify-inbox")
    alarm_inbox = Inbox.subscribe(stack, "AlarmTopic", "demo-alarm-inbox")
    start = time.time()
    phases: list[Phase] = []
    replies: list[Reply] = []
    records: dict[str, dict[str, Any]] = {}
    faults: list[Phase] = []
    scenario: list[tuple[str, Callable[[StackProcess], list[Reply]]]] = [
        ("(a) burst", phase_burst),
        ("(b) outage", lambda s: phase_outage(s, faults)),
        ("(c) revoked key", lambda s: phase_revoked(s, notify, faults)),
    ]
    for name, play in scenario:
        began = time.time()
        log(f"{name}: starting")
        played = play(stack)
        log(f"{name}: {len(played)} calls answered: {brief(played)}")
        wait_deferred(stack, played, records, PHASE_WAIT_S, name)
        replies += played
        phases.append(Phase(name, began, time.time()))
    wait_deferred(stack, replies, records, PHASE_WAIT_S, "all phases")
    time.sleep(2)  # let the last alarm evaluation and notifications land
    entries = [e for e in stack.sim.stats()["requests"] if float(e["at"]) >= start]
    alarms_now, history = alarm_state_now(stack)
    summary = summarize(
        entries, replies, records,
        alarms_now=alarms_now,
        alarm_history=history + alarm_transitions(alarm_inbox.poll()),
        notifications=notify.poll(),
    )
    plot_timeline(entries, replies, phases, start, plot_path, faults)
    if dump_path is not None:
        dump_path.write_text(json.dumps({
            "start": start,
            "phases": [vars(phase) for phase in phases],
            "faults": [vars(fault) for fault in faults],
            "replies": [vars(reply) for reply in replies],
            "records": records,
            "kisi_requests": entries,
        }, indent=1, default=str))
    elapsed = time.time() - start
    return (render_summary(summary)
            + f"\n\nScenario time {elapsed:.0f} s. Timeline plot: {plot_path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scenarios.demo",
        description="A scripted scenario against a fresh local stack: table + timeline plot",
    )
    parser.add_argument("--plot", type=Path, default=PLOT_PATH, help="where the PNG goes")
    parser.add_argument("--dump", type=Path, default=None,
                        help="also write the raw replies, records and Kisi log as JSON here")
    args = parser.parse_args(argv)
    began = time.monotonic()
    try:
        report = on_fresh_stack(
            "demo", demo_env(), lambda stack: run_demo(stack, args.plot, args.dump), log
        )
    except KeyboardInterrupt:
        log("interrupted: the stack is stopped")
        return 130
    print()
    print(report)
    print(f"Total run time {time.monotonic() - began:.0f} s (stack start and stop included).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
