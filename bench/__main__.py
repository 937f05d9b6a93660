"""``python -m bench`` (``make bench``): run every benchmark, print the headline, write the docs.

Writes ``docs/benchmarks.md`` and ``docs/bench_burst.png``, ``docs/bench_outage.png``,
``docs/bench_revoked.png``. ``--skip`` leaves parts out while iterating (the report says so).
Every part is bounded: the simulation in events, the real-time run at 120 s per strategy, the
subprocesses by timeouts, the local stack's parts by hard stops (the stack is stopped by its PID,
also on error).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench import coldstart, cpu_cost, plots, realtime, report, simulate, stack

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("realtime", "coldstart", "cpu", "stack")


def _plot(results: report.Results, docs: Path) -> None:
    by_scenario: dict[str, list[simulate.Run]] = {}
    for run in results.runs:
        by_scenario.setdefault(run.scenario.name, []).append(run)
    drawers = {
        "burst": (plots.burst_plot, "bench_burst.png"),
        "outage": (plots.outage_plot, "bench_outage.png"),
        "revoked_key": (plots.revoked_plot, "bench_revoked.png"),
    }
    for scenario, (draw, name) in drawers.items():
        if scenario in by_scenario:
            draw(by_scenario[scenario], docs / name)
            results.plots[scenario] = name


def _timed(label: str, started: float) -> None:
    print(f"  {label} done at {time.monotonic() - started:6.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seed", type=int, default=simulate.DEFAULT_SEED)
    parser.add_argument("--skip", action="append", choices=PARTS, default=[],
                        help="leave a part out (repeatable)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs",
                        help="where to write benchmarks.md and the plots")
    args = parser.parse_args(argv)
    started = time.monotonic()
    print("kisi-gateway benchmarks", flush=True)
    results = report.Results(seed=args.seed, runs=simulate.run_all(args.seed))
    _timed("simulation", started)
    if "realtime" not in args.skip:
        results.realtime = realtime.run_realtime()
        _timed("real-time run", started)
    if "coldstart" not in args.skip:
        results.coldstart = coldstart.measure()
        _timed("cold start", started)
    if "cpu" not in args.skip:
        results.cpu = cpu_cost.measure_in_subprocess()
        _timed("CPU per call", started)
    if "stack" not in args.skip:
        results.stack = stack.measure(log=lambda line: print(f"  {line}", flush=True))
        _timed("local stack", started)
    args.docs.mkdir(parents=True, exist_ok=True)
    _plot(results, args.docs)
    results.runtime_s = time.monotonic() - started
    report.write(results, args.docs / "benchmarks.md")
    print(report.headline(results))
    print(f"wrote {args.docs / 'benchmarks.md'} in {results.runtime_s:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
