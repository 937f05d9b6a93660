"""The figures of one simulated run, computed the same way for every strategy.

Definitions (the report repeats them):

- *attempts per success*: requests Kisi received / requests that succeeded.
- *429 share*: 429 answers / requests Kisi received.
- *makespan*: from the first request until the last one ended (succeeded or not); its ratio
  is to the physical limit ``N / 5 s⁻¹``, the time Kisi's quota needs for N requests.
- *lost*: requests that never reached a terminal state (e.g. a retry message the dead-letter
  queue swallowed while its record still said "queued").
- *late sends*: requests put on the wire after their route's deadline (30 s for an unlock).
- *completion delay*: from the call to its success, for requests that succeeded.
- *unlocks opened late*: unlocks that succeeded more than 30 s after they were wanted, time
  spent waiting for a free caller included (a door opening for nobody).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.kisi_model import Attempt
from bench.tracking import Final, TrackedCall

KISI_RATE = 5.0  # Kisi: 5 requests per second per user (KISI_API.md, "Rate limits")


@dataclass(frozen=True, slots=True)
class Figures:
    """Every number the report shows for one strategy in one scenario."""

    requests: int
    succeeded: int
    rejected: int
    gave_up: int
    expired: int
    paused: int
    lost: int
    attempts: int
    attempts_per_success: float
    rate_limited: int
    rate_limited_pct: float
    server_errors: int
    unauthorized: int
    bad_requests: int
    late_sends: int
    makespan_s: float
    makespan_ratio: float
    last_success_s: float
    delay_mean_s: float
    delay_max_s: float
    reads_ok_pct: float
    unlocks_ok_pct: float
    unlocks_sent_late: int
    unlocks_opened_late: int


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def _count(calls: Sequence[TrackedCall], final: Final) -> int:
    return sum(1 for call in calls if call.final is final)


def _ok_pct(calls: Sequence[TrackedCall]) -> float:
    return _pct(_count(calls, Final.SUCCEEDED), len(calls))


def compute(calls: Sequence[TrackedCall], attempts: Sequence[Attempt]) -> Figures:
    """The figures of one run (``calls`` as ended, ``attempts`` as Kisi saw them)."""
    succeeded = [call for call in calls if call.final is Final.SUCCEEDED]
    statuses = [attempt.status for attempt in attempts]
    delays = [call.ended - call.created for call in succeeded if call.ended is not None]
    ends = [call.ended for call in calls if call.ended is not None]
    start = min((call.created for call in calls), default=0.0)
    makespan = max(ends, default=start) - start
    rate_limited = statuses.count(429)
    unlocks = [call for call in calls if call.is_unlock]
    reads = [call for call in calls if not call.is_unlock]
    return Figures(
        requests=len(calls),
        succeeded=len(succeeded),
        rejected=_count(calls, Final.REJECTED),
        gave_up=_count(calls, Final.GAVE_UP),
        expired=_count(calls, Final.EXPIRED),
        paused=_count(calls, Final.PAUSED),
        lost=sum(1 for call in calls if call.final is None),
        attempts=len(attempts),
        attempts_per_success=len(attempts) / len(succeeded) if succeeded else float("inf"),
        rate_limited=rate_limited,
        rate_limited_pct=_pct(rate_limited, len(attempts)),
        server_errors=sum(1 for status in statuses if status >= 500),
        unauthorized=statuses.count(401),
        bad_requests=sum(1 for status in statuses if 400 <= status < 500),
        late_sends=sum(1 for attempt in attempts if attempt.late),
        makespan_s=makespan,
        makespan_ratio=makespan / (len(calls) / KISI_RATE) if calls else 0.0,
        last_success_s=max((call.ended or 0.0 for call in succeeded), default=0.0) - start,
        delay_mean_s=statistics.fmean(delays) if delays else 0.0,
        delay_max_s=max(delays, default=0.0),
        reads_ok_pct=_ok_pct(reads),
        unlocks_ok_pct=_ok_pct(unlocks),
        unlocks_sent_late=sum(call.late_sends for call in unlocks),
        unlocks_opened_late=sum(1 for call in unlocks if call.opened_late),
    )
