"""The Kisi simulator in a process of its own, as Kisi is another machine: its clock and its
rate limiter are not held up by the benchmark's own threads (one interpreter, one GIL).

Configured through its ``KISI_SIM_*`` environment; reset and read through its admin API
(``/__admin/reset``, ``/__admin/stats``). Stopped by its PID, also on error.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 15.0
ADMIN_TIMEOUT_S = 30.0


@contextlib.contextmanager
def simulator_process(env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``python -m kisi_sim`` on a free loopback port with ``env`` added; yields its URL."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    child = subprocess.Popen(
        [sys.executable, "-m", "kisi_sim", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT, env=environ, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], START_TIMEOUT_S)
        line = child.stdout.readline() if ready else ""
        if "listening on " not in line:
            raise RuntimeError(f"kisi-sim did not start: {line!r}")
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=5)


def reset(url: str) -> None:
    """Fresh buckets, data and request log (start-up faults kept)."""
    requests.post(f"{url}/__admin/reset", timeout=ADMIN_TIMEOUT_S).raise_for_status()


def stats(url: str) -> dict[str, Any]:
    """Counts by status and the request log, as ``KisiSimulator.stats`` gives them."""
    answer = requests.get(f"{url}/__admin/stats", timeout=ADMIN_TIMEOUT_S)
    answer.raise_for_status()
    found: dict[str, Any] = answer.json()
    return found
