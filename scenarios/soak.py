"""``make soak``: paced traffic with faults on the local stack, and figures that must hold.

Starts a fresh ``python -m local`` and sends an open-loop, paced mix through the gateway
(default 5 minutes at 4 requests/s) while the Kisi simulator misbehaves:

- 10% of requests answer 5xx (``error_rate`` 0.1);
- 2% hang 3 s (``hang_ms`` 3000, ``hang_rate`` 0.02; the simulator's hang rate defaults to
  1.0, so it is set explicitly) while the gateway's read timeout is 2 s: the gateway sees a
  timeout, Kisi still acts (an unknown outcome);
- a 60 s outage (every call 503) from minute 2 to minute 3 (scaled with ``--minutes``).

The mix: unlocks (each with a unique body marker, ``{"context": {"soak": i}}``), reads (a
unique ``soak=i`` query parameter) and creates (``POST /groups`` with unique names); a share
with ``Prefer: respond-async``, a share with an ``Idempotency-Key`` that is then sent a second
time. Every request is identified in the simulator's log by its method, path, query and body
hash, so the figures compare what callers were told with what Kisi actually did.

Reads, writes and creates give up within minutes here (6 attempts, delays capped at 30 s,
600 s deadline); unlock keeps its default (4 attempts, 30 s deadline). At the end the soak
waits (bounded) until every request is terminal and prints:

- requests sent, terminal by state, **lost** (never terminal: must be 0);
- **double sends** (a create, or any request beyond what its unknown outcomes explain,
  processed by Kisi more than once: must be 0); unlocks and reads processed more than once
  after an unknown outcome are allowed by their policy and counted apart;
- **late unlocks** (an unlock attempt reaching Kisi after its 30 s deadline: must be 0);
- **5xx answers made by the gateway itself** (must be 0; the 504 that ends a request with
  an unknown outcome or expired is its documented answer and counted apart);
- **Idempotency-Key repeats answered differently** from a final first answer (must be 0);
- p50/p95 time to terminal, and what reached Kisi by outcome class.

Exits 1 when a must-be-zero figure is not zero. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from local.stack_process import StackProcess, on_fresh_stack, stack_env
from scenarios.caller import (
    EXPIRED_CODE,
    PAUSED_CODE,
    TERMINAL,
    UNKNOWN_OUTCOME_CODE,
    Reply,
    body_bytes,
    is_gateway_error,
    poll_until_terminal,
    send,
    sha256_or_none,
)
from scenarios.figures import OUTCOME_CLASSES, kisi_outcomes, percentile, render_table

UNLOCK_DEADLINE_S = 30.0  # the default unlock policy (kisi_gateway.core.policy), kept here
SOAK_POLICIES = {
    "policies": {
        name: {"max_attempts": 6, "cap_s": 30, "deadline_s": 600}
        for name in ("read", "write", "create")
    }
}
READ_TIMEOUT_S = 2  # the gateway's Kisi read timeout: below the simulator's hang
FAULTS = {"error_rate": 0.1, "hang_ms": 3000, "hang_rate": 0.02}
MIX = (("unlock", 0.4), ("read", 0.4), ("create", 0.2))
ASYNC_SHARE = 0.3
KEYED_SHARE = 0.2
SENDER_THREADS = 128  # bounds requests in flight; inline waits are at most ~10 s each
FINAL_WAIT_S = 660.0  # the longest soak deadline (600 s) plus slack
PROGRESS_EVERY_S = 30.0
LOCKS = 120  # the simulator's seeded locks

Marker = tuple[str, str, str, str | None]  # method, Kisi path, normalized query, body hash


def soak_env() -> dict[str, str]:
    """The ``python -m local`` environment of the soak."""
    return stack_env(
        parameters={"RoutePolicies": json.dumps(SOAK_POLICIES)},
        function_env={"READ_TIMEOUT_S": str(READ_TIMEOUT_S)},
        alarm_interval_s=5,
    )


# --------------------------------------------------------------------------- the plan


def normalized_query(query: str) -> str:
    """A query string with its pairs sorted, so the gateway's re-encoding compares equal.

    >>> normalized_query("soak=3&limit=10")
    'limit=10&soak=3'
    """
    return "&".join(f"{k}={v}" for k, v in sorted(parse_qsl(query, keep_blank_values=True)))


@dataclass(frozen=True)
class Planned:
    """One request of the soak, decided before anything is sent (deterministic per seed)."""

    index: int
    kind: str  # unlock | read | create
    method: str
    path: str  # the Kisi path, without /kisi and without the query
    query: str
    body: bytes | None
    respond_async: bool
    idempotency_key: str | None

    @property
    def gateway_path(self) -> str:
        return "/kisi" + self.path + (f"?{self.query}" if self.query else "")

    @property
    def marker(self) -> Marker:
        return (self.method, self.path, normalized_query(self.query), sha256_or_none(self.body))

    @property
    def repeat_allowed(self) -> bool:
        """May the gateway repeat it after an unknown outcome (DESIGN.md route policies)?"""
        return self.kind != "create"

    def headers(self) -> dict[str, str]:
        headers = {"Prefer": "respond-async"} if self.respond_async else {}
        if self.idempotency_key is not None:
            headers["Idempotency-Key"] = self.idempotency_key
        return headers


def plan_requests(count: int, seed: int, run_id: str) -> list[Planned]:
    """``count`` requests of the mix, each identifiable in the simulator's log."""
    rng = random.Random(seed)
    kinds = [kind for kind, _ in MIX]
    weights = [weight for _, weight in MIX]
    plan = []
    for i in range(count):
        kind = rng.choices(kinds, weights)[0]
        respond_async = rng.random() < ASYNC_SHARE
        key = f"soak-{run_id}-{i}" if rng.random() < KEYED_SHARE else None
        lock = 1 + i % LOCKS
        if kind == "unlock":
            method, path, query = "POST", f"/locks/{lock}/unlock", ""
            body = body_bytes({"context": {"soak": i, "run": run_id}})
        elif kind == "read":
            method, body = "GET", None
            path, query = ((f"/locks/{lock}", f"soak={i}") if i % 2 else
                           ("/locks", f"limit=10&offset={(10 * i) % LOCKS}&soak={i}"))
        else:
            method, path, query = "POST", "/groups", ""
            body = body_bytes({"group": {"name": f"soak {run_id} {i}"}})
        plan.append(Planned(i, kind, method, path, query, body, respond_async, key))
    return plan


@dataclass
class Tracked:
    """A planned request and what became of it."""

    planned: Planned
    reply: Reply | None = None
    replay: Reply | None = None  # the second send of an Idempotency-Key
    record: dict[str, Any] | None = None

    @property
    def location(self) -> str | None:
        """Where its record is: a 202's ``Location``, or by id when it carried a key."""
        reply = self.reply
        if reply is None or reply.status is None:
            return None
        if reply.location is not None:
            return reply.location
        if self.planned.idempotency_key is not None and reply.request_id:
            return f"/requests/{reply.request_id}"
        return None


# --------------------------------------------------------------------------- pure figures


def entry_marker(entry: Mapping[str, Any]) -> Marker:
    query = normalized_query(str(entry.get("query") or ""))
    return (str(entry["method"]), str(entry["path"]), query, entry.get("body_sha256"))


def final_state(tracked: Tracked) -> str:
    """succeeded, failed, expired, paused (never sent), gateway_error, or lost.

    A 202 ends with its record; any other answer is the end itself: 2xx/3xx succeeded; a
    4xx failed; a 504 of the gateway says failed (unknown outcome) or expired; a 5xx or 429
    of Kisi passed through means the retries ran out (expired).
    """
    reply = tracked.reply
    if reply is None or reply.status is None:
        return "lost"
    if reply.status == 202:
        status = (tracked.record or {}).get("status")
        return str(status) if status in TERMINAL else "lost"
    if reply.status < 400:
        return "succeeded"
    if reply.code == PAUSED_CODE:
        return "paused"
    if reply.code == UNKNOWN_OUTCOME_CODE:
        return "failed"
    if reply.code == EXPIRED_CODE:
        return "expired"
    if reply.status >= 500 and is_gateway_error(reply):
        return "gateway_error"
    if reply.status == 429 or reply.status >= 500:
        return "expired"
    return "failed"


def time_to_terminal(tracked: Tracked) -> float | None:
    """Seconds from sending to the end; ``None`` when it did not end."""
    reply = tracked.reply
    if reply is None or reply.status is None or final_state(tracked) == "lost":
        return None
    if reply.status != 202:
        return reply.answered_at - reply.sent_at
    record = tracked.record or {}
    seen = float(record.get("_seen_at") or reply.answered_at)
    attempts = record.get("attempts") or []
    last = float(attempts[-1]["at"]) if attempts else None
    if record.get("reason") == "deadline" or last is None:
        deadline = float(record.get("deadline") or seen)
        end = min(seen, max(deadline, last or 0.0))
    else:
        end = last
    return max(0.0, end - reply.sent_at)


def repeat_bound(tracked: Tracked) -> int:
    """How many times Kisi may have processed it without a double send.

    Once, plus once per attempt whose outcome was unknown (a timeout after sending): from the
    record when there is one, else from ``X-Gateway-Attempts`` (each attempt of an inline
    answer may at most have been processed once).
    """
    record = tracked.record
    if record is not None:
        unknown = sum(1 for a in record.get("attempts") or [] if a.get("class") == "network_error")
        return 1 + unknown
    reply = tracked.reply
    return max(1, reply.attempts or 1) if reply is not None else 1


def unlock_deadline(tracked: Tracked) -> float | None:
    """The unlock's deadline: its record's, its 202's, else sent time + 30 s (never later)."""
    if tracked.record is not None and tracked.record.get("deadline") is not None:
        return float(tracked.record["deadline"])
    reply = tracked.reply
    if reply is None:
        return None
    if reply.deadline is not None:
        return reply.deadline
    return reply.sent_at + UNLOCK_DEADLINE_S


@dataclass(frozen=True)
class SoakFigures:
    """The soak's result; ``violations`` names every must-be-zero figure that is not."""

    sent: int
    replays: int
    states: dict[str, int]
    lost: int
    double_sends: list[str]
    repeats_after_unknown: dict[str, int]
    late_unlocks: list[str]
    gateway_5xx: dict[str, int]
    ended_504: dict[str, int]
    replay_mismatches: list[str]
    p50_s: float | None
    p95_s: float | None
    kisi: dict[str, int]
    kisi_total: int
    replies: dict[str, int] = field(default_factory=dict)
    states_by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    not_succeeded: dict[str, int] = field(default_factory=dict)
    recorded_attempts: dict[str, int] = field(default_factory=dict)

    def violations(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{self.lost} request(s) never ended (lost)")
        if self.double_sends:
            found.append(f"{len(self.double_sends)} double send(s)")
        if self.late_unlocks:
            found.append(f"{len(self.late_unlocks)} unlock attempt(s) reached Kisi late")
        if sum(self.gateway_5xx.values()):
            found.append(f"{sum(self.gateway_5xx.values())} 5xx answer(s) from the gateway")
        if self.replay_mismatches:
            found.append(f"{len(self.replay_mismatches)} Idempotency-Key repeat(s) "
                         "answered differently")
        return found


def soak_figures(
    tracked: Sequence[Tracked],
    entries: Iterable[Mapping[str, Any]],
    poll_statuses: Mapping[str, int] | None = None,
) -> SoakFigures:
    """Compare what callers were told with what Kisi did (the simulator's log)."""
    entries = list(entries)
    by_marker: dict[Marker, list[Mapping[str, Any]]] = {}
    for entry in entries:
        by_marker.setdefault(entry_marker(entry), []).append(entry)
    states: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    recorded: Counter[str] = Counter()
    not_succeeded: Counter[str] = Counter()
    double: list[str] = []
    repeats: Counter[str] = Counter()
    late: list[str] = []
    durations: list[float] = []
    for item in tracked:
        planned = item.planned
        state = final_state(item)
        states[state] += 1
        by_kind.setdefault(planned.kind, Counter())[state] += 1
        if state != "succeeded":
            not_succeeded[f"{planned.kind} {state}: {why_not(item)}"] += 1
        recorded.update(str(a.get("class")) for a in (item.record or {}).get("attempts") or [])
        seen = by_marker.get(planned.marker, [])
        processed = sum(1 for entry in seen if entry.get("processed"))
        bound = 1 if not planned.repeat_allowed else repeat_bound(item)
        if processed > bound:
            double.append(f"#{planned.index} {planned.method} {planned.path}: processed "
                          f"{processed}x, at most {bound}x explained")
        elif processed > 1:
            repeats[planned.kind] += 1
        late += late_attempts(item, seen)
        elapsed = time_to_terminal(item)
        if elapsed is not None:
            durations.append(elapsed)
    replies = [r for item in tracked for r in (item.reply, item.replay) if r is not None]
    gateway_5xx, ended_504 = gateway_answers_5xx(replies, poll_statuses or {})
    return SoakFigures(
        sent=len(tracked),
        replays=sum(1 for item in tracked if item.replay is not None),
        states=dict(states),
        lost=states.get("lost", 0),
        double_sends=double,
        repeats_after_unknown=dict(repeats),
        late_unlocks=late,
        gateway_5xx=dict(gateway_5xx),
        ended_504=dict(ended_504),
        replay_mismatches=replay_mismatches(tracked),
        p50_s=percentile(durations, 50),
        p95_s=percentile(durations, 95),
        kisi=dict(kisi_outcomes(entries)),
        kisi_total=len(entries),
        replies=dict(Counter(str(r.status) for r in replies)),
        states_by_kind={kind: dict(counts) for kind, counts in sorted(by_kind.items())},
        recorded_attempts=dict(recorded),
        not_succeeded=dict(not_succeeded),
    )


def why_not(tracked: Tracked) -> str:
    """Why a request did not succeed: its record's reason, else the answer it got."""
    reason = (tracked.record or {}).get("reason")
    if reason:
        return str(reason)
    reply = tracked.reply
    if reply is None or reply.status is None:
        return "no answer"
    return f"answered {reply.status}" + (f" {reply.code}" if reply.code else "")


def late_attempts(tracked: Tracked, seen: Iterable[Mapping[str, Any]]) -> list[str]:
    """Attempts of an unlock that reached Kisi after its deadline (the log's ``at``)."""
    planned = tracked.planned
    deadline = unlock_deadline(tracked) if planned.kind == "unlock" else None
    if deadline is None:
        return []
    return [
        f"#{planned.index} {planned.path}: reached Kisi {float(entry['at']) - deadline:.2f} s "
        f"after its deadline (status {entry['status']})"
        for entry in seen
        if float(entry["at"]) > deadline
    ]


def gateway_answers_5xx(
    replies: Iterable[Reply], poll_statuses: Mapping[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    """5xx the gateway made itself (must be 0), and its 504s that end a request (allowed).

    A Kisi 5xx passed through (Kisi's code in the body) is neither.
    """
    own: Counter[str] = Counter()
    ended: Counter[str] = Counter()
    for reply in replies:
        if reply.status is None or reply.status < 500 or not is_gateway_error(reply):
            continue
        if reply.code in (UNKNOWN_OUTCOME_CODE, EXPIRED_CODE):
            ended[f"{reply.status} {reply.code}"] += 1
        else:
            own[f"{reply.status} {reply.code or 'no code'}"] += 1
    for status, count in poll_statuses.items():
        if status.isdigit() and int(status) >= 500:
            own[f"{status} (GET /requests/{{id}})"] += count
    return dict(own), dict(ended)


def replay_mismatches(tracked: Iterable[Tracked]) -> list[str]:
    """Repeats of an ``Idempotency-Key`` whose first answer was final but differs now."""
    found = []
    for item in tracked:
        first, again = item.reply, item.replay
        if first is None or again is None or first.status in (None, 202):
            continue
        if again.status != first.status:
            found.append(f"#{item.planned.index}: first {first.status}, repeat {again.status}"
                         f" ({again.code or ''})")
    return found


def render_figures(figures: SoakFigures, *, minutes: float, rate: float) -> str:
    def must_be_zero(count: int) -> str:
        return f"{count}  (must be 0{'' if count == 0 else ': FAILED'})"

    def seconds(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} s"

    states = ", ".join(f"{state} {n}" for state, n in sorted(figures.states.items()))
    repeats = ", ".join(f"{kind} {n}" for kind, n in sorted(figures.repeats_after_unknown.items()))
    rows = [
        ("requests sent", f"{figures.sent} over {minutes:g} min at {rate:g}/s "
                          f"(+{figures.replays} Idempotency-Key repeats)"),
        ("terminal by state", states or "none"),
        *((f"  {kind}", ", ".join(f"{state} {n}" for state, n in sorted(counts.items())))
          for kind, counts in figures.states_by_kind.items()),
        *(("  why not succeeded", f"{why} x{n}")
          for why, n in sorted(figures.not_succeeded.items())),
        ("lost (never terminal)", must_be_zero(figures.lost)),
        ("double sends", must_be_zero(len(figures.double_sends))),
        ("repeats after an unknown outcome",
         f"{repeats or 'none'}  (allowed by policy for unlock and reads; "
         "not double sends)"),
        ("late unlocks (after the 30 s deadline)", must_be_zero(len(figures.late_unlocks))),
        ("5xx answers from the gateway itself", must_be_zero(sum(figures.gateway_5xx.values()))),
        ("504 ending a request (unknown outcome / expired)",
         ", ".join(f"{k} x{n}" for k, n in sorted(figures.ended_504.items())) or "none"),
        ("Idempotency-Key repeats answered differently",
         must_be_zero(len(figures.replay_mismatches))),
        ("time to terminal p50 / p95", f"{seconds(figures.p50_s)} / {seconds(figures.p95_s)}"),
        ("answers to callers by status",
         ", ".join(f"{k} x{n}" for k, n in sorted(figures.replies.items()))),
        ("attempts reaching Kisi (simulator log)", f"{figures.kisi_total}: " + ", ".join(
            f"{cls} {figures.kisi.get(cls, 0)}" for cls in OUTCOME_CLASSES if cls in figures.kisi
        )),
        ("attempts in records (deferred or keyed)", ", ".join(
            f"{cls} {n}" for cls, n in sorted(figures.recorded_attempts.items())) or "none"),
    ]
    text = render_table(rows, "Soak figures")
    details = [
        *(f"  double send: {line}" for line in figures.double_sends[:10]),
        *(f"  late unlock: {line}" for line in figures.late_unlocks[:10]),
        *(f"  gateway 5xx: {k} x{n}" for k, n in sorted(figures.gateway_5xx.items())),
        *(f"  repeat answered differently: {line}" for line in figures.replay_mismatches[:10]),
    ]
    return text + ("\n" + "\n".join(details) if details else "")


# --------------------------------------------------------------------------- running it


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def send_planned(stack: StackProcess, planned: Planned) -> Tracked:
    """Send one planned request; a keyed one is sent a second time once answered."""
    tracked = Tracked(planned)
    headers = planned.headers()
    tracked.reply = send(stack, planned.kind, planned.method, planned.gateway_path,
                         body=planned.body, headers=headers)
    if planned.idempotency_key is not None and tracked.reply.status is not None:
        tracked.replay = send(stack, planned.kind, planned.method, planned.gateway_path,
                              body=planned.body, headers=headers)
    return tracked


@dataclass(frozen=True)
class Schedule:
    """When to send and when Kisi is down, in seconds from the start."""

    duration_s: float
    rate: float
    outage_start_s: float
    outage_s: float

    @property
    def count(self) -> int:
        return int(self.duration_s * self.rate)


def run_sender(stack: StackProcess, plan: Sequence[Planned], schedule: Schedule) -> list[Tracked]:
    """Open loop: request ``i`` leaves at ``i / rate`` whatever the answers; bounded threads."""
    start = time.time()
    outage_started = False
    next_progress = start + PROGRESS_EVERY_S
    futures: list[Future[Tracked]] = []
    pool = ThreadPoolExecutor(max_workers=SENDER_THREADS, thread_name_prefix="soak")
    try:
        for planned in plan:
            due = start + planned.index / schedule.rate
            time.sleep(max(0.0, due - time.time()))
            now = time.time()
            if not outage_started and now >= start + schedule.outage_start_s:
                stack.sim.update_faults({"outage_seconds": schedule.outage_s})
                outage_started = True
                log(f"Kisi outage for {schedule.outage_s:g} s starts")
            futures.append(pool.submit(send_planned, stack, planned))
            if now >= next_progress:
                next_progress += PROGRESS_EVERY_S
                log(f"sent {len(futures)}/{len(plan)}; answered "
                    f"{sum(1 for f in futures if f.done())}; {answers_so_far(futures)}")
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def answers_so_far(futures: Sequence[Future[Tracked]]) -> str:
    counts: Counter[str] = Counter()
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is None:
            reply = future.result().reply
            counts[str(reply.status if reply is not None else None)] += 1
    return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))


def wait_all_terminal(
    stack: StackProcess, tracked: Sequence[Tracked], timeout_s: float
) -> Counter[str]:
    """Poll every recorded request until terminal (bounded); fills ``record`` in place."""
    by_location = {item.location: item for item in tracked if item.location is not None}
    statuses: Counter[str] = Counter()
    last_note = [0.0]

    def note(done: int, total: int) -> None:
        if time.monotonic() - last_note[0] >= 15:
            last_note[0] = time.monotonic()
            log(f"waiting for deferred requests: {done}/{total} ended")

    records = poll_until_terminal(
        stack, list(by_location), timeout_s, every_s=2.0, on_round=note, statuses=statuses
    )
    for location, record in records.items():
        by_location[location].record = record
    return statuses


def run_soak(
    stack: StackProcess, schedule: Schedule, seed: int, dump_path: Path | None = None
) -> tuple[SoakFigures, float]:
    run_id = f"{int(time.time())}"
    plan = plan_requests(schedule.count, seed, run_id)
    stack.sim.update_faults(FAULTS)
    started = time.time()
    log(f"sending {len(plan)} requests over {schedule.duration_s:g} s at {schedule.rate:g}/s "
        f"with faults {FAULTS}; outage at {schedule.outage_start_s:g} s "
        f"for {schedule.outage_s:g} s")
    tracked = run_sender(stack, plan, schedule)
    log(f"all sent and answered in {time.time() - started:.0f} s; waiting for deferred ones")
    statuses = wait_all_terminal(stack, tracked, FINAL_WAIT_S)
    stats = stack.sim.stats()
    entries = [e for e in stats["requests"] if float(e["at"]) >= started]
    if stats["total"] > len(stats["requests"]):
        log(f"warning: the simulator's log kept {len(stats['requests'])} of {stats['total']} "
            "requests; the oldest are not compared")
    if dump_path is not None:
        dump_path.write_text(json.dumps({
            "started": started,
            "tracked": [{"planned": {**vars(t.planned), "body": (t.planned.body or b"").decode()},
                         "reply": vars(t.reply) if t.reply else None,
                         "replay": vars(t.replay) if t.replay else None,
                         "record": t.record} for t in tracked],
            "kisi_requests": entries,
        }, indent=1, default=str))
    return soak_figures(tracked, entries, statuses), time.time() - started


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scenarios.soak",
                                     description="soak the local stack with faults")
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to send [5]")
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second [4]")
    parser.add_argument("--outage-start", type=float, default=None,
                        help="seconds from the start until Kisi's outage [40%% of the run]")
    parser.add_argument("--outage-seconds", type=float, default=None,
                        help="length of the outage [20%% of the run: 60 s of 5 minutes]")
    parser.add_argument("--seed", type=int, default=7, help="seed of the request mix [7]")
    parser.add_argument("--dump", type=Path, default=None,
                        help="also write every request, its answers and record, and the "
                             "simulator's log as JSON here")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 60 or not 0 < args.rate <= 20:
        parser.error("--minutes must be in (0, 60] and --rate in (0, 20]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    duration_s = args.minutes * 60
    schedule = Schedule(
        duration_s=duration_s,
        rate=args.rate,
        outage_start_s=args.outage_start if args.outage_start is not None else 0.4 * duration_s,
        outage_s=args.outage_seconds if args.outage_seconds is not None else 0.2 * duration_s,
    )
    began = time.monotonic()
    try:
        figures, elapsed = on_fresh_stack(
            "soak", soak_env(), lambda stack: run_soak(stack, schedule, args.seed, args.dump),
            log,
        )
    except KeyboardInterrupt:
        log("interrupted: the stack is stopped")
        return 130
    print()
    print(render_figures(figures, minutes=args.minutes, rate=args.rate))
    print(f"\nSoak time {elapsed:.0f} s; total {time.monotonic() - began:.0f} s "
          "(stack start and stop included).")
    violations = figures.violations()
    if violations:
        print("FAILED: " + "; ".join(violations))
        return 1
    print("OK: every must-be-zero figure is zero.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
