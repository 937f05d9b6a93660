"""The local stack (``make run``) measured from outside, over HTTP on 127.0.0.1.

Starts a fresh ``python -m local`` (moto as the embedded AWS, the Kisi simulator, the gateway's
local API running the unchanged handlers) with :class:`~local.stack_process.StackProcess` on
free ports, and measures two things a caller sees:

- **added latency**: ``LATENCY_CALLS`` sequential ``GET /locks/{id}`` through the gateway and
  as many made directly to the simulator with another Kisi user's key, interleaved pair by
  pair in one run, spaced so that the gateway's send budget never makes a call wait for a
  slot: the difference is what the gateway itself adds.
- **closed loop**: ``LOOP_CALLERS`` threads, each sending its next read as soon as it has the
  answer to the last, ``LOOP_READS`` reads in all, on the service login with the default wait
  (5 s, ``Prefer: wait`` unset): how many were answered inline (200) and how many deferred
  (202), and how many 429s the simulator answered meanwhile.

Bounded: the stack must be ready within its own timeout, each part stops taking new calls at
its hard stop, every call has a timeout, and the stack is stopped by its PID at the end, also
on error. ``python -m bench.stack`` prints the figures as JSON.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from kisi_sim import DEMO_KEY
from local.stack_process import StackProcess, stack_env

LATENCY_CALLS = 200
# One gateway call every 0.25 s (4/s) stays under the budget's 5 req/s paced at 95 % (4.75/s),
# so no call waits for a send slot and the difference is the gateway's own work.
LATENCY_SPACING_S = 0.25
LATENCY_STOP_S = 120.0
LOOP_CALLERS = 20
LOOP_READS = 500
LOOP_STOP_S = 240.0
DRAIN_S = 30.0  # after the loop, how long deferred reads may take to end (counted if not)
CALL_TIMEOUT_S = 30.0
PROBE_EVERY_S = 0.5
DIRECT_KEY, DIRECT_USER = "bench-direct-key", 2  # another Kisi user: not the gateway's bucket
SERVICE_USER = 1
LOCKS = 120  # the simulator's seeded locks
WAIT_S = 5.0  # the service login's default wait (README, "Prefer: wait=N")


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` quantile by the nearest-rank method (``share`` in (0, 1])."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(share * len(ordered))))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Latency:
    """Added latency: each way's median and p95 in milliseconds, over ``calls`` pairs."""

    calls: int
    gateway_median_ms: float
    gateway_p95_ms: float
    direct_median_ms: float
    direct_p95_ms: float
    failed: int = 0  # calls that did not answer 200 (either way), left out of the figures

    @property
    def added_median_ms(self) -> float:
        return self.gateway_median_ms - self.direct_median_ms

    @property
    def added_p95_ms(self) -> float:
        return self.gateway_p95_ms - self.direct_p95_ms

    @classmethod
    def of(cls, gateway_s: Sequence[float], direct_s: Sequence[float], failed: int) -> Latency:
        return cls(
            calls=min(len(gateway_s), len(direct_s)),
            gateway_median_ms=1000 * statistics.median(gateway_s) if gateway_s else math.nan,
            gateway_p95_ms=1000 * percentile(gateway_s, 0.95),
            direct_median_ms=1000 * statistics.median(direct_s) if direct_s else math.nan,
            direct_p95_ms=1000 * percentile(direct_s, 0.95),
            failed=failed,
        )


@dataclass(frozen=True, slots=True)
class ClosedLoop:
    """The closed loop's answers and what Kisi saw while it ran (and while deferred reads
    drained)."""

    callers: int
    reads: int
    inline: int  # answered 200 within the caller's wait
    deferred: int  # answered 202
    deferred_unsent: int  # of those, deferred before any attempt (the budget had no slot)
    other: dict[str, int]  # any other answer, by status ("timeout" for none)
    kisi_requests: int
    kisi_429: int
    wall_s: float
    unfinished: int = 0  # never started before the hard stop
    deferred_ended: dict[str, int] = field(default_factory=dict)  # deferred reads' end states
    wait_ms_inline_median: float = 0.0
    wait_ms_inline_p95: float = 0.0
    # Where the time went: a DynamoDB read timed every PROBE_EVERY_S while the loop ran, and
    # the CPU seconds the stack's processes (gateway + simulator, moto) spent per read.
    store_ms_idle: float = 0.0  # the same read's median before the loop began
    store_ms_median: float = 0.0
    store_ms_p95: float = 0.0
    cpu_s_gateway: float = 0.0
    cpu_s_moto: float = 0.0

    @property
    def answered(self) -> int:
        return self.inline + self.deferred + sum(self.other.values())

    @property
    def inline_pct(self) -> float:
        return 100.0 * self.inline / self.answered if self.answered else 0.0

    @property
    def kisi_429_pct(self) -> float:
        return 100.0 * self.kisi_429 / self.kisi_requests if self.kisi_requests else 0.0


@dataclass(frozen=True, slots=True)
class StackFigures:
    """One run of both parts, with the machine's load average before and after."""

    latency: Latency | None
    loop: ClosedLoop | None
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    startup_s: float


def _load() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return (one, five, fifteen)


def measure_latency(stack: StackProcess, calls: int = LATENCY_CALLS,
                    spacing_s: float = LATENCY_SPACING_S, stop_s: float = LATENCY_STOP_S,
                    direct_key: str = DIRECT_KEY) -> Latency:
    """``calls`` pairs, direct (with ``direct_key``, a Kisi user other than the gateway's
    service login) then through the gateway, one pair per ``spacing_s``."""
    gateway, direct = requests.Session(), requests.Session()
    gateway.headers["x-api-key"] = stack.api_key
    direct.headers["Authorization"] = f"KISI-LOGIN {direct_key}"
    # Warm up both ways (the gateway looks its service user up once, then caches it).
    for _ in range(3):
        gateway.get(f"{stack.url}/kisi/locks/1", timeout=CALL_TIMEOUT_S)
        direct.get(f"{stack.sim.url}/locks/1", timeout=CALL_TIMEOUT_S)
        time.sleep(spacing_s)
    through: list[float] = []
    straight: list[float] = []
    failed = 0
    began = time.monotonic()
    for index in range(calls):
        if time.monotonic() - began > stop_s:
            break
        path = f"/locks/{1 + index % LOCKS}"
        for session, url, into in ((direct, stack.sim.url + path, straight),
                                   (gateway, f"{stack.url}/kisi{path}", through)):
            sent = time.perf_counter()
            answer = session.get(url, timeout=CALL_TIMEOUT_S)
            took = time.perf_counter() - sent
            if answer.status_code == 200:
                into.append(took)
            else:
                failed += 1
        # The next pair starts one spacing after this one did (never sooner).
        next_at = began + (index + 1) * spacing_s
        time.sleep(max(0.0, next_at - time.monotonic()))
    return Latency.of(through, straight, failed)


def _reached_kisi(stack: StackProcess) -> list[dict[str, Any]]:
    return [entry for entry in stack.sim.stats()["requests"]
            if entry.get("user_id") == SERVICE_USER and entry["route"] == "/locks/{id}"]


def run_loop(stack: StackProcess, reads: int = LOOP_READS, callers: int = LOOP_CALLERS,
             stop_s: float = LOOP_STOP_S, drain_s: float = DRAIN_S) -> ClosedLoop:
    """``callers`` closed-loop threads share ``reads`` reads through the gateway."""
    before = len(_reached_kisi(stack))
    pids = (stack.pid(), stack.moto_pid())
    idle_s = _probe_store(stack, [], time.monotonic() + 10.0, count=10)
    cpu_before = [cpu_seconds(pid) for pid in pids]
    lock = threading.Lock()
    next_read = iter(range(reads))
    statuses: Counter[str] = Counter()
    unsent = 0
    deferred_ids: list[str] = []
    inline_s: list[float] = []
    began = time.monotonic()
    stop_at = began + stop_s

    def caller() -> None:
        nonlocal unsent
        session = requests.Session()
        session.headers["x-api-key"] = stack.api_key
        while time.monotonic() < stop_at:
            with lock:
                index = next(next_read, None)
            if index is None:
                return
            sent = time.perf_counter()
            try:
                answer = session.get(f"{stack.url}/kisi/locks/{1 + index % LOCKS}",
                                     timeout=CALL_TIMEOUT_S)
            except requests.RequestException:
                with lock:
                    statuses["timeout"] += 1
                continue
            took = time.perf_counter() - sent
            with lock:
                statuses[str(answer.status_code)] += 1
                if answer.status_code == 200:
                    inline_s.append(took)
                elif answer.status_code == 202:
                    body = answer.json()
                    deferred_ids.append(str(body.get("request_id", "")))
                    unsent += body.get("attempts", 0) == 0

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
    for thread in threads:
        thread.start()
    store_s = _probe_store(stack, threads, stop_at + CALL_TIMEOUT_S)
    for thread in threads:
        thread.join(timeout=max(0.0, stop_at + CALL_TIMEOUT_S - time.monotonic()))
    wall_s = time.monotonic() - began
    cpu_used = [cpu_seconds(pid) - used for pid, used in zip(pids, cpu_before, strict=True)]
    ended = _drain(stack, deferred_ids, drain_s)
    reached = _reached_kisi(stack)[before:]
    answered = sum(statuses.values())
    other = {status: count for status, count in statuses.items() if status not in ("200", "202")}
    return ClosedLoop(
        callers=callers, reads=reads, inline=statuses["200"], deferred=statuses["202"],
        deferred_unsent=unsent, other=other, kisi_requests=len(reached),
        kisi_429=sum(1 for entry in reached if entry["status"] == 429), wall_s=wall_s,
        unfinished=reads - answered, deferred_ended=ended,
        wait_ms_inline_median=1000 * statistics.median(inline_s) if inline_s else 0.0,
        wait_ms_inline_p95=1000 * percentile(inline_s, 0.95) if inline_s else 0.0,
        store_ms_idle=1000 * statistics.median(idle_s) if idle_s else 0.0,
        store_ms_median=1000 * statistics.median(store_s) if store_s else 0.0,
        store_ms_p95=1000 * percentile(store_s, 0.95) if store_s else 0.0,
        cpu_s_gateway=cpu_used[0], cpu_s_moto=cpu_used[1],
    )


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 if unknown), from /proc."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of proc(5) (utime, stime), counted after the command's closing paren.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _probe_store(stack: StackProcess, threads: Sequence[threading.Thread],
                 stop_at: float, count: int | None = None) -> list[float]:
    """Time one consistent DynamoDB read every PROBE_EVERY_S while any caller still runs
    (with no callers: ``count`` reads)."""
    dynamodb = stack.client("dynamodb")
    table = stack.table("BudgetTable")
    took: list[float] = []
    while time.monotonic() < stop_at and (
            any(thread.is_alive() for thread in threads) if count is None else len(took) < count):
        sent = time.perf_counter()
        dynamodb.get_item(TableName=table, Key={"pk": {"S": "bench-probe"}},
                          ConsistentRead=True)
        took.append(time.perf_counter() - sent)
        time.sleep(PROBE_EVERY_S)
    return took


def _drain(stack: StackProcess, request_ids: Sequence[str], drain_s: float) -> dict[str, int]:
    """How each deferred read ended, polling its record until all end or ``drain_s`` passes."""
    states: dict[str, str] = {}
    deadline = time.monotonic() + drain_s
    while True:
        for request_id in request_ids:
            if states.get(request_id) in ("succeeded", "failed", "expired"):
                continue
            try:
                answer = stack.request("GET", f"/requests/{request_id}", timeout=10)
                states[request_id] = str(answer.json().get("status", answer.status_code))
            except (requests.RequestException, ValueError):
                states[request_id] = "unreadable"
        done = all(state in ("succeeded", "failed", "expired") for state in states.values())
        if done or time.monotonic() > deadline:
            return dict(Counter(states.values()))
        time.sleep(1.0)


def stack_environment() -> dict[str, str]:
    """The stack as deployed, with a second Kisi user for the direct calls."""
    return stack_env(sim_keys={DEMO_KEY: SERVICE_USER, DIRECT_KEY: DIRECT_USER})


def measure(parts: Sequence[str] = ("latency", "loop"),
            log: Callable[[str], None] = lambda line: None) -> StackFigures:
    """Start a fresh stack, run ``parts``, stop the stack (by PID) whatever happens."""
    log_path = Path(tempfile.mkdtemp(prefix="kisi-bench-stack-")) / "make-run.log"
    load_before = _load()
    stack = StackProcess(log_path, env=stack_environment())
    began = time.monotonic()
    try:
        stack.start()
        startup_s = time.monotonic() - began
        log(f"stack ready on {stack.url} in {startup_s:.0f} s (log: {log_path})")
        latency = measure_latency(stack) if "latency" in parts else None
        if latency is not None:
            log(f"latency: {json.dumps(asdict(latency))}")
        loop = run_loop(stack) if "loop" in parts else None
    finally:
        stack.stop()
    return StackFigures(latency, loop, load_before, _load(), startup_s)


def main() -> None:
    figures = measure(log=lambda line: print(line, flush=True))
    print(json.dumps(asdict(figures), indent=2))
    if figures.loop is not None:
        print(f"inline {figures.loop.inline_pct:.1f} %, Kisi 429s {figures.loop.kisi_429}"
              f" ({figures.loop.kisi_429_pct:.2f} %)")


if __name__ == "__main__":
    main()
