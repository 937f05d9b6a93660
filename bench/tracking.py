"""What the benchmark observes about each request: when it was made, how it ended, when.

The strategies differ in what they know (a plain client has no deadline, the gateway keeps a
record), so the benchmark keeps its own account of every request, the same for all of them:
the figures are computed from these and from what Kisi received, never from a strategy's own
counters. A request ends where its caller would learn how it ended: when a baseline's retry
loop returns, or when the gateway reports the end (its ``Telemetry.finished``, or api_call's
503 from the guard).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kisi_gateway.core.outcome import Outcome, OutcomeClass


class Final(StrEnum):
    """How a request ended, as its caller (or the request record) would tell it."""

    SUCCEEDED = "succeeded"  # Kisi answered 2xx/3xx
    REJECTED = "rejected"  # a 4xx other than 429: not retried by anyone
    GAVE_UP = "gave_up"  # retries exhausted: the caller got the last 429/5xx
    EXPIRED = "expired"  # the deadline came first; never sent after it
    PAUSED = "paused"  # the gateway's guard answered 503 without sending


def final_of(outcome: Outcome) -> Final:
    """The end a client reaches when it stops on ``outcome``."""
    if outcome.cls in (OutcomeClass.SUCCESS, OutcomeClass.REDIRECT):
        return Final.SUCCEEDED
    return Final.GAVE_UP if outcome.retryable else Final.REJECTED


@dataclass(slots=True)
class TrackedCall:
    """One request a caller wants made, and what became of it.

    ``deadline_s`` is the route policy's (30 s for an unlock, 24 h for a read): the benchmark
    holds every strategy to it when counting sends after the deadline, including those that do
    not know it. The deadline runs from ``created``; ``queued_at`` also counts the time the
    request waited for a free caller, which is what a person at a door experiences.
    """

    index: int
    method: str
    path: str
    route_key: str
    deadline_s: float
    queued_at: float = 0.0  # when the integrator's code wanted it (a burst: all at 0)
    created: float = 0.0  # when a caller made the call (a strategy's deadline starts here)
    ended: float | None = None
    final: Final | None = None
    reason: str = ""
    attempts: int = 0
    late_sends: int = 0

    @property
    def deadline(self) -> float:
        return self.created + self.deadline_s

    @property
    def is_unlock(self) -> bool:
        return self.path.endswith("/unlock")

    @property
    def opened_late(self) -> bool:
        """An unlock that succeeded more than its deadline after it was wanted."""
        return (
            self.is_unlock and self.final is Final.SUCCEEDED and self.ended is not None
            and self.ended - self.queued_at > self.deadline_s
        )

    def end(self, now: float, final: Final, reason: str = "") -> None:
        """Record the end; a second end is a model bug (a request ends once)."""
        if self.final is not None:
            raise RuntimeError(f"request {self.index} ended twice ({self.final}, {final})")
        self.ended, self.final, self.reason = now, final, reason
