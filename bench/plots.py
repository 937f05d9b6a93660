"""The report's figures: PNGs drawn from simulated runs (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a build machine

import matplotlib.pyplot as plt

from bench.figures import KISI_RATE
from bench.simulate import LABELS, Run
from bench.tracking import Final

COLORS = {"immediate": "#d62728", "urllib3": "#ff7f0e", "urllib3_no_ra": "#8c564b",
          "jitter": "#9467bd", "gateway": "#2ca02c"}
# Distinct dashes: in the 401 storm the baselines draw exactly the same line.
DASHES = {"immediate": "-", "urllib3": "--", "urllib3_no_ra": "-.", "jitter": ":",
          "gateway": "-"}
BIN_S = 10.0


def _style(strategy: str) -> dict[str, Any]:
    width = 2.2 if strategy == "gateway" else 1.4
    return {"color": COLORS[strategy], "linestyle": DASHES[strategy], "linewidth": width}


def _cumulative(times: Sequence[float]) -> tuple[list[float], list[int]]:
    ordered = sorted(times)
    return [0.0, *ordered], list(range(len(ordered) + 1))


def _success_times(run: Run) -> list[float]:
    return [c.ended for c in run.calls if c.final is Final.SUCCEEDED and c.ended is not None]


def burst_plot(runs: Sequence[Run], path: Path) -> None:
    """Cumulative successes and 429s over time, per strategy, for the burst."""
    fig, (ok_ax, limited_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    horizon = 0.0
    for run in runs:
        xs, ys = _cumulative(_success_times(run))
        horizon = max(horizon, xs[-1])
        ok_ax.step(xs, ys, where="post", label=f"{LABELS[run.strategy]} ({ys[-1]:,})",
                   **_style(run.strategy))
        xs, ys = _cumulative([a.at_kisi for a in run.attempts if a.status == 429])
        limited_ax.step(xs, ys, where="post", label=f"{LABELS[run.strategy]} ({ys[-1]:,})",
                        **_style(run.strategy))
    total = runs[0].figures.requests if runs else 0
    limit_end = total / KISI_RATE
    ok_ax.plot([0, limit_end], [0, total], "k:", label="physical limit (5 req/s)")
    ok_ax.set(title="Successful requests", xlabel="time (s)", ylabel="cumulative",
              xlim=(0, min(horizon, 3 * limit_end) * 1.02))
    limited_ax.set(title="429 answers from Kisi", xlabel="time (s)", ylabel="cumulative",
                   xlim=(0, min(horizon, 3 * limit_end) * 1.02))
    ok_ax.legend(loc="lower right", fontsize=8)
    limited_ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(runs[0].scenario.title if runs else "")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _binned(times: Sequence[float], end: float) -> tuple[list[float], list[float]]:
    bins = int(end // BIN_S) + 1
    counts = [0] * bins
    for t in times:
        if 0 <= t < bins * BIN_S:
            counts[int(t // BIN_S)] += 1
    return [i * BIN_S for i in range(bins)], [c / BIN_S for c in counts]


def outage_plot(runs: Sequence[Run], path: Path) -> None:
    """Kisi attempts per second and cumulative successes, with the outage shaded."""
    fig, (rate_ax, ok_ax) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    scenario = runs[0].scenario
    end = min(1.05 * max((a.sent_at for r in runs for a in r.attempts), default=1.0), 3600.0)
    for run in runs:
        label = LABELS[run.strategy]
        xs, ys = _binned([a.sent_at for a in run.attempts], end)
        rate_ax.step(xs, ys, where="post", label=f"{label} ({len(run.attempts):,} sent)",
                     **_style(run.strategy))
        xs2, ys2 = _cumulative(_success_times(run))
        ok_ax.step(xs2, ys2, where="post", label=f"{label} ({ys2[-1]:,})",
                   **_style(run.strategy))
    arrivals = sorted(c.created for c in runs[0].calls)
    ok_ax.step([0.0, *arrivals], range(len(arrivals) + 1), where="post", color="grey",
               linestyle=":", label="requests made")
    for ax, where in ((rate_ax, "upper right"), (ok_ax, "center right")):
        if scenario.outage is not None:
            ax.axvspan(*scenario.outage, color="#cccccc", alpha=0.5, label="Kisi 503 outage")
        ax.legend(loc=where, fontsize=8)
    rate_ax.axhline(KISI_RATE, color="k", linestyle=":", linewidth=1)
    rate_ax.set(title="Requests sent to Kisi (per second, 10 s bins)", ylabel="req/s",
                yscale="symlog")
    rate_ax.set_ylim(bottom=0)
    ok_ax.set(title="Successful requests", xlabel="time (s)", ylabel="cumulative",
              xlim=(0, end))
    fig.suptitle(scenario.title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def revoked_plot(runs: Sequence[Run], path: Path) -> None:
    """Cumulative 401s sent per strategy through the key revocation."""
    fig, ax = plt.subplots(figsize=(9, 4))
    scenario = runs[0].scenario
    for run in runs:
        xs, ys = _cumulative([a.sent_at for a in run.attempts if a.status == 401])
        ax.step(xs, ys, where="post", label=f"{LABELS[run.strategy]} ({ys[-1]:,})",
                **_style(run.strategy))
    if scenario.revoked is not None:
        ax.axvspan(*scenario.revoked, color="#cccccc", alpha=0.5, label="key revoked")
    ax.set(title=scenario.title, xlabel="time (s)", ylabel="401s sent (cumulative)",
           yscale="symlog")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
