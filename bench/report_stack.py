"""The local stack's part of ``docs/benchmarks.md``: its section and its rows of the targets."""

from __future__ import annotations

import math

from bench.figures import KISI_RATE
from bench.markdown import table
from bench.stack import (
    LATENCY_CALLS,
    LATENCY_SPACING_S,
    LOOP_READS,
    LOOP_STOP_S,
    WAIT_S,
    ClosedLoop,
    Latency,
    StackFigures,
)
from kisi_gateway.core.ratelimit import PACE

MIN_INLINE_PCT = 95.0  # the target for the closed loop's share answered inline
PACED = KISI_RATE * PACE  # the budget's slots per second
TITLE = "## 6. The local stack, from outside (`bench/stack.py`)"


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.1f}"


def _load(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{value:.2f}" for value in load)


def target_rows(figures: StackFigures | None) -> list[list[str]]:
    """The stack's rows of "Against the targets" (none when the part was skipped)."""
    if figures is None:
        return []
    rows: list[list[str]] = []
    if figures.latency is not None:
        latency = figures.latency
        rows.append([
            "local stack: added latency per call, median / p95 (gateway − direct)",
            "(none set)",
            f"{_ms(latency.added_median_ms)} / {_ms(latency.added_p95_ms)} ms "
            f"({_ms(latency.gateway_median_ms)} vs {_ms(latency.direct_median_ms)} ms median)",
            "—",
        ])
    if figures.loop is not None:
        loop = figures.loop
        rows.append([
            f"local stack: closed loop, {loop.callers} callers, answered inline (200)",
            f"≥ {MIN_INLINE_PCT:g} %",
            f"{loop.inline}/{loop.answered} ({loop.inline_pct:.1f} %)",
            "met" if loop.inline_pct >= MIN_INLINE_PCT else "**missed**",
        ])
    return rows


def section(figures: StackFigures | None) -> str:
    """Section 6: both parts, what they assume, and where the closed loop's time went."""
    if figures is None:
        return f"{TITLE}\n\nSkipped in this run."
    text = [
        TITLE,
        "",
        "A fresh `make run` (`python -m local`: moto as the embedded AWS, the Kisi simulator, "
        "the gateway's local API running the unchanged handlers) started on free ports of "
        f"127.0.0.1 and stopped by its PID at the end. It was ready in {figures.startup_s:.0f} s. "
        f"Load average before and after (1, 5, 15 min): {_load(figures.load_before)} → "
        f"{_load(figures.load_after)}; the stack's processes share this machine's cores "
        "with each other and with anything else running, so these figures move with the load.",
    ]
    if figures.latency is not None:
        text += ["", _latency(figures.latency)]
    if figures.loop is not None:
        text += ["", _loop(figures.loop)]
    return "\n".join(text)


def _latency(latency: Latency) -> str:
    rows = [
        ["through the gateway", _ms(latency.gateway_median_ms), _ms(latency.gateway_p95_ms)],
        ["directly to the simulator", _ms(latency.direct_median_ms),
         _ms(latency.direct_p95_ms)],
        ["added by the gateway", _ms(latency.added_median_ms), _ms(latency.added_p95_ms)],
    ]
    failed = (f" {latency.failed} call(s) that did not answer 200 are left out."
              if latency.failed else "")
    return "\n".join([
        "### Added latency per call",
        "",
        f"{latency.calls} pairs of sequential `GET /locks/{{id}}` (of {LATENCY_CALLS} planned), "
        "each pair a call straight to the simulator (another Kisi user's key) and the same "
        "call through the gateway (service login), one pair every "
        f"{LATENCY_SPACING_S:g} s so that no gateway call waits for a send slot "
        f"({1 / LATENCY_SPACING_S:g} calls a second, under the budget's {PACED:g}).",
        "",
        table(["way", "median (ms)", "p95 (ms)"], rows),
        "",
        "*Assumes*: wall time per call on the client (`time.perf_counter`), connection kept "
        "alive on both ways; the simulator adds no latency of its own; the gateway's stores "
        "are moto on loopback, so each DynamoDB call costs a local HTTP round trip instead "
        "of DynamoDB's." + failed,
    ])


def _loop(loop: ClosedLoop) -> str:
    rows = [[
        f"{loop.answered}/{loop.reads}", f"{loop.inline} ({loop.inline_pct:.1f} %)",
        f"{loop.deferred} ({loop.deferred_unsent} before any attempt)",
        ", ".join(f"{status}: {count}" for status, count in sorted(loop.other.items())) or "0",
        f"{loop.kisi_429} of {loop.kisi_requests} ({loop.kisi_429_pct:.2f} %)",
        f"{_ms(loop.wait_ms_inline_median)} / {_ms(loop.wait_ms_inline_p95)}",
        f"{loop.wall_s:.0f}",
    ]]
    ended = ", ".join(f"{state} {count}" for state, count in sorted(loop.deferred_ended.items()))
    return "\n".join([
        "### Closed loop: answered inline",
        "",
        f"{loop.callers} caller threads, each sending its next `GET /locks/{{id}}` as soon as "
        f"it has the last answer, {LOOP_READS} reads in all, on the service login with the "
        f"default wait ({WAIT_S:g} s: no `Prefer` header), so a read whose send slot is not "
        "within its wait is answered `202` and finished by the retry worker. Hard stop "
        f"{LOOP_STOP_S:.0f} s; Kisi's 429s are counted by the simulator for the service "
        "user, deferred reads included.",
        "",
        table(["answered", "inline (200)", "deferred (202)", "other", "Kisi 429s",
               "inline answer, median / p95 (ms)", "wall (s)"], rows),
        "",
        f"Deferred reads afterwards: {ended or 'none'}. Where the time went: a consistent "
        f"DynamoDB read on moto took {_ms(loop.store_ms_idle)} ms (median) before the loop and "
        f"{_ms(loop.store_ms_median)} ms (p95 {_ms(loop.store_ms_p95)}) during it; the "
        f"stack's processes used {loop.cpu_s_gateway:.0f} CPU-s (gateway and simulator) and "
        f"{loop.cpu_s_moto:.0f} CPU-s (moto) in {loop.wall_s:.0f} s.",
        "",
        "*Assumes*: real clock; all callers on one identity (the service login), so its fair "
        f"share (5 s of the line ahead) and the line itself ({loop.callers} reads at {PACED:g}/s "
        f"≈ {loop.callers / PACED:.1f} s) both sit close to the {WAIT_S:g} s wait; the gateway "
        "counts that wait from when its handler starts. " + _loop_note(loop),
    ])


def _loop_note(loop: ClosedLoop) -> str:
    if loop.inline_pct >= MIN_INLINE_PCT:
        return ""
    slow = loop.store_ms_idle > 0 and loop.store_ms_median > 5 * loop.store_ms_idle
    why = (
        f"Below the target in this run: {loop.deferred_unsent} of the {loop.deferred} deferred "
        "reads were refused a slot before any attempt (the line ahead was longer than what "
        "was left of their wait). "
    )
    if slow:
        why += (
            f"Every store round trip took {loop.store_ms_median / loop.store_ms_idle:.0f}× as "
            "long as when idle. The budget is one DynamoDB item per Kisi user, booked by a read "
            "and a conditional write, so the slower a round trip, the more the callers' writes "
            "collide; a call that loses every write attempt is refused as if the line were "
            "full and asks again (each ask counts, and each takes several round trips), and "
            f"slow asks use up the caller's {WAIT_S:g} s. That is the local stack's overhead "
            "on a loaded machine (moto answers each change only after snapshotting its state "
            "to disk), not the line's length: the budget's arithmetic answers the same closed "
            "loop inline in virtual time (`python -m bench.noise`)."
        )
    return why
