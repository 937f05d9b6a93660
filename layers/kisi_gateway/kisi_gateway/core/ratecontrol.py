"""The adaptive send rate: slow down for 429s the gateway caused, shrug off the ones it did not.

Kisi answers 429 when a user's bucket is empty, but a 429 can also come from elsewhere: other
clients of the same Kisi user, a limit Kisi tightened for a moment, noise. Halving the rate on
every 429 (plain AIMD) lets isolated 429s collapse throughput: at 10 % random 429s the rate sits
on its floor. So a 429 counts as evidence of *our* overload only when

- it arrives while the bucket's line is busy, i.e. the gateway has been sending at or near the
  current rate (a 429 while the line is idle cannot be the rate's fault), and
- it is *confirmed*: ``confirm`` (3) 429s, each within ``window_s`` (1 s) of the one before.
  An overload empties Kisi's bucket and rejects several requests in a row; random 429s come
  alone (at 10 % of 5 req/s, three in a row within a second happen for about one 429 in ten).

A confirmed overload multiplies the rate by ``beta`` (0.7, CUBIC's and botocore's adaptive
mode's), never below ``floor_fraction`` of the configured rate, and recovery follows CUBIC's
curve (Ha, Rhee, Xu 2008; botocore ``retries/cubic.py``): concave back to the rate at which
the overload was seen (``peak``) within ``K = cbrt((peak - low) / scale)`` seconds, then
convex probing above it, capped at the configured rate. The rate is a *function of time*
since the decrease, so a success writes nothing: no store round trip to recover.

>>> control = RateControl()
>>> state = ControlState(rate=3.5, peak=5.0, lowered_at=10.0)
>>> round(control.rate_at(state, 5.0, now=10.0), 3), control.rate_at(state, 5.0, now=20.0)
(3.5, 5.0)
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class ControlState:
    """The controller's memory in one bucket: ``rate`` just after the last decrease (or the
    configured rate), the ``peak`` it fell from, when (``lowered_at``), and the recent 429s
    (``strikes`` of them, the last at ``struck_at``) that have not yet led to a decrease."""

    rate: float
    peak: float | None = None
    lowered_at: float | None = None
    strikes: int = 0
    struck_at: float | None = None


@dataclass(frozen=True, slots=True)
class RateControl:
    """CUBIC-like control of one bucket's rate (see the module docstring)."""

    beta: float = 0.7
    scale: float = 0.4  # CUBIC's C, in (req/s) per s^3: botocore's value
    floor_fraction: float = 0.3
    confirm: int = 3
    window_s: float = 1.0
    cooldown_s: float = 1.0
    busy_s: float = 1.0  # the line was booked up to this close to now: "sending at the rate"

    def __post_init__(self) -> None:
        if not 0 < self.beta < 1:
            raise ValueError("beta must be between 0 and 1")
        if not 0 < self.floor_fraction <= 1:
            raise ValueError("floor_fraction must be in (0, 1]")
        if not self.scale > 0:
            raise ValueError("scale must be positive")
        if self.confirm < 1:
            raise ValueError("confirm must be at least 1")
        if min(self.window_s, self.cooldown_s, self.busy_s) < 0:
            raise ValueError("window_s, cooldown_s and busy_s must not be negative")

    def floor(self, configured: float) -> float:
        """The lowest rate: a trickle goes on, or no success could show Kisi recovered."""
        return configured * self.floor_fraction

    def clamp(self, rate: float, configured: float) -> float:
        """``rate`` within today's configuration (it may have changed since it was stored)."""
        return min(max(rate, self.floor(configured)), configured)

    def rate_at(self, state: ControlState, configured: float, now: float) -> float:
        """The bucket's rate at ``now``: the CUBIC curve from the last decrease.

        >>> state = ControlState(rate=3.5, peak=5.0, lowered_at=0.0)  # K = cbrt(1.5/0.4) s
        >>> [round(RateControl().rate_at(state, 5.0, now=t), 2) for t in (0.0, 1.0, 1.55, 3.0)]
        [3.5, 4.93, 5.0, 5.0]
        """
        if state.lowered_at is None or state.peak is None:
            return self.clamp(state.rate, configured)
        elapsed = max(0.0, now - state.lowered_at)
        depth = max(0.0, state.peak - state.rate)
        k = (depth / self.scale) ** (1.0 / 3.0)
        return self.clamp(state.peak + self.scale * (elapsed - k) ** 3, configured)

    def throttled(
        self, state: ControlState, configured: float, *, now: float, busy: bool
    ) -> tuple[ControlState, bool]:
        """The state after a 429 at ``now``, and whether it was a confirmed overload.

        ``busy``: the bucket's line reached ``now`` (see :meth:`is_busy`). Unconfirmed 429s are
        only counted.

        >>> control = RateControl()
        >>> once, overload = control.throttled(ControlState(5.0), 5.0, now=10.0, busy=True)
        >>> twice, overload = control.throttled(once, 5.0, now=10.4, busy=True)
        >>> overload, twice.strikes
        (False, 2)
        >>> thrice, overload = control.throttled(twice, 5.0, now=10.6, busy=True)
        >>> overload, thrice.rate, thrice.peak
        (True, 3.5, 5.0)
        """
        recent = state.struck_at is not None and 0 <= now - state.struck_at <= self.window_s
        strikes = state.strikes + 1 if recent else 1
        cooling = state.lowered_at is not None and 0 <= now - state.lowered_at < self.cooldown_s
        if not busy or cooling or strikes < self.confirm:
            # Not (yet) ours: remember it, change nothing else. During the cooldown the 429s
            # of requests sent before the decrease still arrive; they are already counted.
            return replace(state, strikes=0 if cooling else strikes, struck_at=now), False
        current = self.rate_at(state, configured, now)
        peak = current
        if state.peak is not None and current < state.peak:
            # CUBIC's fast convergence: an overload before the old peak was reached means the
            # room has shrunk, so aim a little lower than where this one was seen.
            peak = current * (1.0 + self.beta) / 2.0
        low = max(current * self.beta, self.floor(configured))
        return ControlState(rate=low, peak=max(peak, low), lowered_at=now), True

    def is_busy(self, tat: float, now: float) -> bool:
        """Whether a bucket whose next free slot is ``tat`` has been sending at its rate.

        >>> RateControl().is_busy(tat=9.5, now=10.0), RateControl().is_busy(tat=5.0, now=10.0)
        (True, False)
        """
        return tat >= now - self.busy_s
