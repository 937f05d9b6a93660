"""Figures both scenarios report: Kisi's answers by outcome class, percentiles, text tables.

Pure functions of the simulator's request log and plain numbers (tested in
``tests/unit/test_scenarios.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["OUTCOME_CLASSES", "kisi_outcomes", "outcome_class", "percentile", "render_table"]

# Outcome classes in table order, as the gateway's kisi_gateway.core.outcome names them.
OUTCOME_CLASSES = (
    "success", "redirect", "client_error", "rate_limited", "server_error", "network_error",
)


def outcome_class(status: int | None) -> str:
    """The gateway's outcome class of a Kisi status (``None``: no answer, a network error).

    >>> [outcome_class(s) for s in (204, 302, 401, 429, 503, None)]
    ['success', 'redirect', 'client_error', 'rate_limited', 'server_error', 'network_error']
    """
    if status is None:
        return "network_error"
    if 200 <= status < 300:
        return "success"
    if 300 <= status < 400:
        return "redirect"
    if status == 429:
        return "rate_limited"
    if 400 <= status < 500:
        return "client_error"
    return "server_error"


def kisi_outcomes(entries: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Requests that reached Kisi (the simulator's log), by outcome class."""
    return Counter(outcome_class(int(entry["status"])) for entry in entries)


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The ``pct`` percentile (nearest rank) of ``values``; ``None`` when empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 95)
    (2.0, 4.0)
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def render_table(rows: Sequence[tuple[str, str]], title: str) -> str:
    """A two-column text table with a title line."""
    width = max([len(name) for name, _ in rows] + [10])
    lines = [title, "-" * len(title)]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)
