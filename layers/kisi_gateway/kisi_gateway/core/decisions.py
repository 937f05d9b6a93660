"""Every decision of a request's attempts, written once and shared by both Lambdas and the
benchmark.

::

    before_attempt(deadline, window, guard's verdict, budget's grant, asks left, now)
        -> Send | AskAgain | Defer | Expire | Refuse
    at_send_time(now, deadline, slot_at)              -> Expire | AskAgain | None
                                                         (never late, never bunched)
    after_attempt(outcome, policy, attempt n, deadline, rng, Retry-After, now)
        -> Finish | RetryLater
    keep_waiting(retry, window, respond_async)        -> bool   (inline: sleep, or defer)
    on_delivery(record, policy, now)                  -> Drop | DeadLetter | Expire | Postpone
                                                         | Proceed   (a queued copy arrives)
    after_vanished(policy)                            -> Finish | None   (a sender vanished)
    on_repeat(record, scope, fingerprint, now)        -> Mismatch | InProgress | TakeOver
                                                         | StillQueued | Ended

Everything is a pure function of its arguments: ``now`` and the random source come in, an
action value goes out, and :mod:`kisi_gateway.pipeline` performs it (api_call's inline run in
``forwarding``, retry_worker in ``retrying``). The tests pin every boundary from case tables:
the last attempt inline and queued, a copy delivered before its time, the deadline to the
second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kisi_gateway.core.backoff import RETRY_AFTER_PAST_DEADLINE, RandomSource, schedule_retry
from kisi_gateway.core.backoff import Expire as ScheduleExpire
from kisi_gateway.core.breaker import Pause
from kisi_gateway.core.outcome import Outcome, OutcomeClass
from kisi_gateway.core.policy import RoutePolicy
from kisi_gateway.core.ratelimit import REASON_BUSY, REASON_GATE, REASON_RATE, REASON_SHARE, Grant
from kisi_gateway.core.records import RecordStatus, RequestRecord

# API Gateway gives a Lambda integration 29 s; the function's Timeout is 29 s too. Every
# inline attempt must be able to finish (connect + read timeout) by this much after the call
# arrived, or the caller would get API Gateway's own 504 instead of an answer.
INLINE_LIMIT_S = 27.0
MAX_BUDGET_ASKS = 10  # bounded: each ask is a store round trip
MIN_ASK_INTERVAL_S = 0.05
EARLY_TOLERANCE_S = 0.5  # SQS may deliver a little before a visibility timeout ends
WORKER_MAX_WAIT_S = 2.0  # a worker may wait this long for a budget slot before requeueing
# A sender that wakes this long after its slot books again rather than send: one slot at
# Kisi's 5 req/s. Sent late, it would go out together with the slots booked after it.
LATE_SEND_S = 0.2


# -- before an attempt ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """A slot is booked ``wait_s`` from now: wait that long, then send (not before)."""

    wait_s: float


@dataclass(frozen=True, slots=True)
class AskAgain:
    """The next slot is further ahead than this call may book: ask again after ``after_s``.

    ``counts``: whether this spends one of the call's asks. A busy bucket's refusal does not
    (it says nothing about the line, and the call's time still bounds the asking).
    """

    after_s: float
    counts: bool = True


@dataclass(frozen=True, slots=True)
class Defer:
    """Not now: hand it to the queue (or requeue it) for ``delay_s`` whole seconds."""

    delay_s: int


@dataclass(frozen=True, slots=True)
class Expire:
    """End the request now, unsent this time, with ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """A fresh call the guard pauses: answer 503 with the pause's ``Retry-After``."""

    pause: Pause


Before = Send | AskAgain | Defer | Expire | Refuse


@dataclass(frozen=True, slots=True)
class Window:
    """How long a runner may wait for this attempt, and how far ahead it may book a slot.

    ``until``: the last moment the attempt may start (inline: the caller's wait, capped so the
    attempt ends within API Gateway's limit; a worker: its own short wait). ``book_ahead_s``:
    the route policy's booking horizon (by default as far as the caller can wait).
    """

    until: float
    book_ahead_s: float

    def remaining(self, now: float, deadline: float) -> float:
        """Seconds this attempt may still wait (never past the deadline)."""
        return max(0.0, min(self.until, deadline) - now)

    def booking(self, now: float, deadline: float) -> float:
        """How far ahead of ``now`` to ask the budget for a slot."""
        return min(self.remaining(now, deadline), self.book_ahead_s)


def defer_or_expire(
    delay_s: float, now: float, deadline: float, reason: str = "deadline"
) -> Defer | Expire:
    """Come back in ``delay_s`` (whole seconds, at least 1), unless that passes the deadline
    (then expire with ``reason``)."""
    whole = math.ceil(max(delay_s, 1.0))
    if now + whole > deadline:
        return Expire(reason)
    return Defer(whole)


def before_attempt(
    *,
    now: float,
    deadline: float,
    window: Window,
    pause: Pause | None,
    grant: Grant | None,
    asks_left: int,
    fresh: bool,
) -> Before:
    """What to do before an attempt, given the guard's verdict and the budget's grant.

    ``fresh``: nothing was sent yet and no record holds the request (api_call's first try),
    so a pause is answered 503 at once rather than queued. ``grant`` is ``None`` only when
    the guard paused (the budget is not asked then).
    """
    if pause is not None:
        if fresh:
            return Refuse(pause)
        return defer_or_expire(pause.retry_after_s, now, deadline)
    if grant is None:
        raise ValueError("a grant is needed when the guard lets the call through")
    if grant.ok:
        return Send(grant.wait_s)
    remaining = window.remaining(now, deadline)
    if grant.reason == REASON_BUSY and grant.wait_s <= remaining:
        # Other senders changed the bucket under every write: nothing is known about the
        # line, so ask again soon, without spending an ask; the window still ends it.
        return AskAgain(max(grant.wait_s, MIN_ASK_INTERVAL_S), counts=False)
    if grant.reason == REASON_SHARE and grant.wait_s <= remaining and asks_left > 0:
        # This caller's identity holds its fair share of the line: its turn comes when some
        # of its own slots have passed.
        return AskAgain(max(grant.wait_s, MIN_ASK_INTERVAL_S))
    if grant.reason == REASON_RATE and grant.wait_s <= remaining and asks_left > 0:
        booking = window.booking(now, deadline)
        if grant.wait_s > booking:
            # The slot is further ahead than this route may book: wait until it is close.
            after = grant.wait_s - booking
        else:
            # Within reach, yet refused: a route with its own, slower limit (POST /event_sets)
            # is booked only within one account interval of the account's next slot, so a
            # booking now would leave the account idle. Ask again just before the slot (asking
            # every MIN_ASK_INTERVAL_S would use up the asks a second before it).
            after = grant.wait_s - MIN_ASK_INTERVAL_S
        return AskAgain(max(after, MIN_ASK_INTERVAL_S))
    # A closed gate is Kisi's own Retry-After: a request it outlasts ends saying so, never as
    # "Kisi could not be reached" (nothing was tried).
    late = RETRY_AFTER_PAST_DEADLINE if grant.reason == REASON_GATE else "deadline"
    return defer_or_expire(grant.wait_s, now, deadline, late)


def at_send_time(
    now: float, deadline: float, slot_at: float | None = None
) -> Expire | AskAgain | None:
    """The last check before the wire: an attempt is never sent at or after its deadline,
    nor more than :data:`LATE_SEND_S` after its booked slot (``slot_at``).

    An unlock that arrives late opens a door for nobody (DESIGN.md "Retry delays"). A sender
    that woke late (a stalled process, a busy machine) would send together with the senders of
    the next slots, and Kisi would see a burst the budget never granted: it books again, at
    once, without spending one of its asks (the slot it missed is past and costs nobody).
    """
    if now >= deadline:
        return Expire("deadline")
    if slot_at is not None and now - slot_at > LATE_SEND_S:
        return AskAgain(0.0, counts=False)
    return None


# -- after an attempt -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finish:
    """The request ends: ``status`` (succeeded, failed, expired) and why, if not obvious."""

    status: RecordStatus
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Try again after ``delay_s`` whole seconds, at ``at``."""

    delay_s: int
    at: float


After = Finish | RetryLater


def after_attempt(
    outcome: Outcome,
    policy: RoutePolicy,
    attempt_no: int,
    *,
    now: float,
    deadline: float,
    rng: RandomSource,
    retry_after_s: float | None,
    first_delay: bool,
) -> After:
    """What attempt number ``attempt_no`` (1-based) comes to.

    ``first_delay``: the next delay becomes an SQS ``DelaySeconds`` (at most 900 s, api_call
    deferring) rather than a visibility timeout (at most 43,200 s, the worker).
    """
    if outcome.terminal:
        ok = outcome.cls in (OutcomeClass.SUCCESS, OutcomeClass.REDIRECT)
        return Finish(RecordStatus.SUCCEEDED if ok else RecordStatus.FAILED)
    if outcome.unknown_outcome and not policy.repeat_unknown:
        return Finish(RecordStatus.FAILED, "unknown_outcome")
    if attempt_no >= policy.max_attempts:
        return Finish(RecordStatus.EXPIRED, "attempts_exhausted")
    schedule = schedule_retry(
        attempt_no - 1, policy.backoff, now=now, deadline=deadline, rng=rng,
        first=first_delay, retry_after_s=retry_after_s,
    )
    if isinstance(schedule, ScheduleExpire):
        return Finish(RecordStatus.EXPIRED, schedule.reason)
    return RetryLater(schedule.delay_s, schedule.at)


def keep_waiting(retry: RetryLater, window: Window, respond_async: bool) -> bool:
    """Inline: sleep until the retry (``True``), or defer it to the queue (``False``)."""
    return not respond_async and retry.at <= window.until


def after_vanished(policy: RoutePolicy) -> Finish | None:
    """An earlier sender took this attempt and vanished: it may have reached Kisi.

    ``None``: the route may repeat an unknown outcome, so send again. Otherwise the request
    ends as a timeout after sending would.
    """
    return None if policy.repeat_unknown else Finish(RecordStatus.FAILED, "unknown_outcome")


# -- a queued copy arrives ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Drop:
    """The request has ended already: a duplicate delivery never reaches Kisi."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Nothing to retry (its record is gone): park the message with ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Postpone:
    """Delivered before its time: hide the message ``delay_s`` more seconds."""

    delay_s: int


@dataclass(frozen=True, slots=True)
class Proceed:
    """Go on with attempt number ``attempt_no``."""

    attempt_no: int


Delivery = Drop | DeadLetter | Expire | Postpone | Proceed


def on_delivery(
    record: RequestRecord | None, policy: RoutePolicy | None, now: float
) -> Delivery:
    """What the worker does with a delivered message, before asking the guard or budget.

    ``policy`` is the record's route policy (``None`` only when there is no record).
    """
    if record is None or policy is None:
        return DeadLetter("record_missing")
    if record.terminal:
        return Drop()
    attempt_no = record.attempt_count + 1
    if now >= record.deadline:
        return Expire("deadline")
    if attempt_no > policy.max_attempts:
        return Expire("attempts_exhausted")
    if record.next_attempt_at is not None and now + EARLY_TOLERANCE_S < record.next_attempt_at:
        return Postpone(math.ceil(record.next_attempt_at - now))
    return Proceed(attempt_no)


# -- a repeat of an Idempotency-Key ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The key was used by another caller or for another request: 422."""


@dataclass(frozen=True, slots=True)
class InProgress:
    """The first call is still sending: 409 with ``Retry-After``."""


@dataclass(frozen=True, slots=True)
class TakeOver:
    """The first call's lease lapsed (its Lambda died): this repeat takes the request over."""


@dataclass(frozen=True, slots=True)
class StillQueued:
    """The request waits in the queue: the 202 again."""


@dataclass(frozen=True, slots=True)
class Ended:
    """The request has ended: its final answer again."""


Repeat = Mismatch | InProgress | TakeOver | StillQueued | Ended


def on_repeat(record: RequestRecord, scope: str, fingerprint: str, now: float) -> Repeat:
    """How to answer a repeat of an ``Idempotency-Key`` whose record is ``record``."""
    if record.scope != scope or record.fields_hash != fingerprint:
        return Mismatch()
    if record.status is RecordStatus.SENDING:
        return TakeOver() if record.claim_until < now else InProgress()
    if record.status is RecordStatus.QUEUED:
        return StillQueued()
    return Ended()
