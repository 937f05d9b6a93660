"""How long to wait before the next attempt: exponential backoff with full jitter.

``delay(n) = uniform(0, min(cap, base * 2**n))`` (the "full jitter" of the AWS Architecture
Blog's backoff study), floored at a minimum delay and at Kisi's ``Retry-After`` when it sent
one, then bounded by what SQS can express and by the request's deadline. Decisions only: the
caller sleeps, or hands the delay to SQS.

The random source and the clock are arguments, so a test can ask for an exact sequence:

>>> policy = BackoffPolicy(base_s=1.0, cap_s=60.0)
>>> schedule_retry(2, policy, now=0.0, deadline=3600.0, rng=lambda: 1.0, first=True)
RetryAt(delay_s=4, at=4.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

# SQS limits (Amazon SQS Developer Guide, "Quotas"): DelaySeconds at most 15 minutes, and a
# message's visibility timeout at most 12 hours from when it was received.
SQS_MAX_DELAY_S = 900
SQS_MAX_VISIBILITY_S = 43_200
MIN_DELAY_S = 1.0
# A Retry-After further away than this is treated as this: nobody waits a week for Kisi, and
# the deadline decides anyway.
MAX_RETRY_AFTER_S = 7 * 24 * 3600.0
# Why a request ended when Kisi's Retry-After (or the gate it closed) outlasts its deadline.
RETRY_AFTER_PAST_DEADLINE = "retry_after_past_deadline"

RandomSource = Callable[[], float]  # returns a float in [0, 1), like random.random


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Parameters of the exponential curve, per route policy."""

    base_s: float = 1.0
    cap_s: float = 900.0
    min_delay_s: float = MIN_DELAY_S


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Try again after ``delay_s`` whole seconds (SQS counts in seconds), at ``at``."""

    delay_s: int
    at: float


@dataclass(frozen=True, slots=True)
class Expire:
    """No retry fits before the deadline: end the request now, with this reason."""

    reason: str


Schedule = RetryAt | Expire


def full_jitter(retry_index: int, policy: BackoffPolicy, rng: RandomSource) -> float:
    """``uniform(0, min(cap, base * 2**retry_index))``; ``retry_index`` 0 is the first retry."""
    exponent = min(max(retry_index, 0), 62)  # 2**62 seconds already dwarfs any cap
    ceiling = min(policy.cap_s, policy.base_s * float(2**exponent))
    return rng() * ceiling


def retry_after_hint(retry_index: int, policy: BackoffPolicy) -> int:
    """Whole seconds a caller should wait before trying again once the gateway has stopped
    retrying: the ceiling of the next full-jitter delay, at least the policy's minimum.

    >>> retry_after_hint(4, BackoffPolicy(base_s=1.0, cap_s=8.0))
    8
    """
    exponent = min(max(retry_index, 0), 62)
    ceiling = min(policy.cap_s, policy.base_s * float(2**exponent))
    return max(1, math.ceil(max(ceiling, policy.min_delay_s)))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or ``None`` when absent or unusable.

    Accepts delta-seconds (``"120"``) and an HTTP-date (``"Wed, 21 Oct 2015 07:28:00 GMT"``,
    ``now`` being the Unix time to measure from). A date in the past means 0; negative,
    non-finite or unparseable values are ignored rather than trusted; huge values are capped.

    >>> parse_retry_after("3", now=0.0)
    3.0
    >>> parse_retry_after("soon", now=0.0) is None
    True
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds = _delta_seconds(text)
    if seconds is None:
        seconds = _http_date_delta(text, now)
    if seconds is None:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _delta_seconds(text: str) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _http_date_delta(text: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive result means it was not one
        return None
    return when.timestamp() - now


def schedule_retry(
    retry_index: int,
    policy: BackoffPolicy,
    *,
    now: float,
    deadline: float,
    rng: RandomSource,
    first: bool,
    retry_after_s: float | None = None,
) -> Schedule:
    """When to make retry number ``retry_index`` (0-based), or why not to.

    ``first`` marks the delay that becomes the SQS message's ``DelaySeconds`` (at most 900 s);
    later delays become a visibility timeout (at most 43,200 s). A delay that would end after
    ``deadline`` expires the request instead: a late unlock opens a door for nobody.
    """
    delay = max(full_jitter(retry_index, policy, rng), policy.min_delay_s)
    honours_retry_after = retry_after_s is not None and retry_after_s >= delay
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    whole = math.ceil(delay)
    if now + whole > deadline:
        reason = RETRY_AFTER_PAST_DEADLINE if honours_retry_after else "deadline"
        return Expire(reason=reason)
    limit = SQS_MAX_DELAY_S if first else SQS_MAX_VISIBILITY_S
    whole = min(whole, limit)
    return RetryAt(delay_s=whole, at=now + whole)
