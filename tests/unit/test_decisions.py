"""The decision core as case tables: every boundary of before, after and delivery pinned.

Each row is one situation and the one action it must produce. The boundaries are exact: the
last attempt (inline and queued), the deadline to the second, a copy delivered a moment before
its time, a grant exactly at the edge of what may be waited for.
"""

from __future__ import annotations

import pytest

from kisi_gateway.core.breaker import Pause
from kisi_gateway.core.decisions import (
    EARLY_TOLERANCE_S,
    LATE_SEND_S,
    MIN_ASK_INTERVAL_S,
    AskAgain,
    DeadLetter,
    Defer,
    Drop,
    Ended,
    Expire,
    Finish,
    InProgress,
    Mismatch,
    Postpone,
    Proceed,
    Refuse,
    RetryLater,
    Send,
    StillQueued,
    TakeOver,
    Window,
    after_attempt,
    after_vanished,
    at_send_time,
    before_attempt,
    defer_or_expire,
    keep_waiting,
    on_delivery,
    on_repeat,
)
from kisi_gateway.core.outcome import Transport, classify_status, classify_transport
from kisi_gateway.core.policy import DEFAULT_POLICIES
from kisi_gateway.core.ratelimit import REASON_BUSY, REASON_GATE, REASON_RATE, Grant
from kisi_gateway.core.records import AttemptEntry, RecordStatus, RequestRecord

UNLOCK = DEFAULT_POLICIES["unlock"]  # 4 attempts, 30 s, repeats unknown outcomes
READ = DEFAULT_POLICIES["read"]  # 12 attempts, 24 h
CREATE = DEFAULT_POLICIES["create"]  # 10 attempts, never repeats an unknown outcome
NOW = 1_000.0
PAUSE = Pause("account", "401 storm", 7)
OK = Grant(True, 0.0)
LATER = Grant(True, 0.4)
FAR = Grant(False, 3.0, REASON_RATE)
GATE = Grant(False, 3.0, REASON_GATE)
INLINE = Window(until=NOW + 5.0, book_ahead_s=1.0)  # a caller that waits 5 s, a read
SHORT = Window(until=NOW + 2.0, book_ahead_s=1.0)


def rng_high() -> float:
    return 1.0  # the top of the jitter range: delays are exactly base * 2**n


# -- before an attempt --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pause", "grant", "deadline", "window", "asks", "fresh", "expected"),
    [
        # the guard first: a fresh call is refused, a running one waits (or ends at the deadline)
        (PAUSE, None, NOW + 60, INLINE, 10, True, Refuse(PAUSE)),
        (PAUSE, None, NOW + 60, INLINE, 10, False, Defer(7)),
        (PAUSE, None, NOW + 7, INLINE, 10, False, Defer(7)),  # exactly at the deadline: fits
        (PAUSE, None, NOW + 6.999, INLINE, 10, False, Expire("deadline")),
        # a booked slot: send once it comes
        (None, OK, NOW + 60, INLINE, 10, False, Send(0.0)),
        (None, LATER, NOW + 60, INLINE, 0, False, Send(0.4)),
        # the next slot is further than this call may book: ask again close to it
        (None, FAR, NOW + 60, INLINE, 10, False, AskAgain(2.0)),
        (None, Grant(False, 1.02, REASON_RATE), NOW + 60, INLINE, 1, False,
         AskAgain(MIN_ASK_INTERVAL_S)),
        # ...unless no asks are left, the slot is beyond the caller's wait, or it is a gate
        (None, FAR, NOW + 60, INLINE, 0, False, Defer(3)),
        (None, FAR, NOW + 60, SHORT, 10, False, Defer(3)),
        (None, Grant(False, 2.0, REASON_RATE), NOW + 60, SHORT, 1, False, AskAgain(1.0)),
        # a slot within reach that the budget refused (a route with its own, slower limit):
        # ask again just before it, not every MIN_ASK_INTERVAL_S
        (None, Grant(False, 0.8, REASON_RATE), NOW + 60, INLINE, 10, False, AskAgain(0.75)),
        (None, Grant(False, 1.0, REASON_RATE), NOW + 60, INLINE, 1, False, AskAgain(0.95)),
        (None, Grant(False, 0.06, REASON_RATE), NOW + 60, INLINE, 1, False,
         AskAgain(MIN_ASK_INTERVAL_S)),
        (None, GATE, NOW + 60, INLINE, 10, False, Defer(3)),
        # a busy bucket (every write lost a race): ask again soon, spending no ask, even with
        # none left; past the caller's wait it is deferred like anything else
        (None, Grant(False, 0.3, REASON_BUSY), NOW + 60, INLINE, 10, False,
         AskAgain(0.3, counts=False)),
        (None, Grant(False, 0.01, REASON_BUSY), NOW + 60, INLINE, 0, False,
         AskAgain(MIN_ASK_INTERVAL_S, counts=False)),
        (None, Grant(False, 0.3, REASON_BUSY), NOW + 60, Window(NOW + 0.2, 0.2), 10, False,
         Defer(1)),
        # the window never reaches past the deadline
        (None, FAR, NOW + 2.5, INLINE, 10, False, Expire("deadline")),
        # a deferral is whole seconds, at least one
        (None, Grant(False, 0.3, REASON_GATE), NOW + 60, INLINE, 10, False, Defer(1)),
        (None, Grant(False, 2.01, REASON_GATE), NOW + 60, INLINE, 10, False, Defer(3)),
    ],
)
def test_before_attempt(pause, grant, deadline, window, asks, fresh, expected) -> None:
    step = before_attempt(now=NOW, deadline=deadline, window=window, pause=pause, grant=grant,
                          asks_left=asks, fresh=fresh)
    assert step == expected


def test_before_attempt_needs_a_grant_when_not_paused() -> None:
    with pytest.raises(ValueError, match="grant"):
        before_attempt(now=NOW, deadline=NOW + 9, window=INLINE, pause=None, grant=None,
                       asks_left=1, fresh=False)


@pytest.mark.parametrize(
    ("delay", "deadline", "expected"),
    [(2.0, NOW + 2, Defer(2)), (2.0, NOW + 1.999, Expire("deadline")), (0.0, NOW + 1, Defer(1))],
)
def test_defer_or_expire(delay, deadline, expected) -> None:
    assert defer_or_expire(delay, NOW, deadline) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [(NOW - 0.001, None), (NOW, Expire("deadline")), (NOW + 1, Expire("deadline"))],
)
def test_never_sent_at_or_after_the_deadline(now, expected) -> None:
    assert at_send_time(now, deadline=NOW) == expected


@pytest.mark.parametrize(
    ("woke", "expected"),
    [
        (NOW, None),  # on time
        (NOW + LATE_SEND_S - 0.001, None),  # late, within one slot: sent
        (NOW + LATE_SEND_S + 0.001, AskAgain(0.0, counts=False)),  # would bunch: book again
        (NOW + 5.0, AskAgain(0.0, counts=False)),
        (NOW + 10.0, Expire("deadline")),  # the deadline first
    ],
)
def test_a_sender_that_wakes_late_for_its_slot_books_again(woke, expected) -> None:
    assert at_send_time(woke, deadline=NOW + 10.0, slot_at=NOW) == expected


@pytest.mark.parametrize(
    ("until", "deadline", "book", "remaining", "booking"),
    [
        (NOW + 5, NOW + 60, 1.0, 5.0, 1.0),
        (NOW + 5, NOW + 3, 1.0, 3.0, 1.0),  # the deadline comes first
        (NOW + 0.5, NOW + 60, 5.0, 0.5, 0.5),  # an unlock books at most its remaining wait
        (NOW - 1, NOW + 60, 1.0, 0.0, 0.0),  # the window has passed
    ],
)
def test_window(until, deadline, book, remaining, booking) -> None:
    window = Window(until=until, book_ahead_s=book)
    assert window.remaining(NOW, deadline) == remaining
    assert window.booking(NOW, deadline) == booking


# -- after an attempt ---------------------------------------------------------------------

S200, S403, S429, S503 = (classify_status(s) for s in (200, 403, 429, 503))
S302 = classify_status(302)
TIMEOUT = classify_transport(Transport.READ_TIMEOUT)  # sent, no answer: unknown outcome
REFUSED = classify_transport(Transport.CONNECT_ERROR)  # never reached Kisi


@pytest.mark.parametrize(
    ("outcome", "policy", "attempt", "deadline", "retry_after", "first", "expected"),
    [
        (S200, READ, 1, NOW + 86_400, None, True, Finish(RecordStatus.SUCCEEDED)),
        (S302, READ, 1, NOW + 86_400, None, True, Finish(RecordStatus.SUCCEEDED)),
        (S403, READ, 1, NOW + 86_400, None, True, Finish(RecordStatus.FAILED)),
        (TIMEOUT, CREATE, 1, NOW + 86_400, None, True,
         Finish(RecordStatus.FAILED, "unknown_outcome")),
        # the last attempt, inline and queued: attempt n == max_attempts ends it
        (S503, UNLOCK, 4, NOW + 30, None, True, Finish(RecordStatus.EXPIRED, "attempts_exhausted")),
        (S503, READ, 12, NOW + 86_400, None, False,
         Finish(RecordStatus.EXPIRED, "attempts_exhausted")),
        (S503, UNLOCK, 3, NOW + 30, None, True, RetryLater(4, NOW + 4)),  # 1 s * 2**2
        (S503, READ, 11, NOW + 86_400, None, False, RetryLater(2048, NOW + 2048)),
        # an unknown outcome on a route that may repeat it, and a connect failure anywhere
        (TIMEOUT, UNLOCK, 1, NOW + 30, None, True, RetryLater(1, NOW + 1)),
        (REFUSED, CREATE, 1, NOW + 86_400, None, True, RetryLater(2, NOW + 2)),
        # Retry-After is a floor, and a deadline it would pass ends the request
        (S429, READ, 1, NOW + 86_400, 30.0, True, RetryLater(30, NOW + 30)),
        (S429, UNLOCK, 1, NOW + 30, 30.0, True, RetryLater(30, NOW + 30)),  # exactly fits
        (S429, UNLOCK, 1, NOW + 29.9, 30.0, True,
         Finish(RecordStatus.EXPIRED, "retry_after_past_deadline")),
        (S503, UNLOCK, 3, NOW + 3.5, None, True, Finish(RecordStatus.EXPIRED, "deadline")),
        # SQS bounds: DelaySeconds 900 (api_call deferring), visibility 43,200 (the worker)
        (S429, READ, 1, NOW + 86_400, 5000.0, True, RetryLater(900, NOW + 900)),
        (S429, READ, 1, NOW + 86_400, 5000.0, False, RetryLater(5000, NOW + 5000)),
    ],
)
def test_after_attempt(outcome, policy, attempt, deadline, retry_after, first, expected) -> None:
    verdict = after_attempt(outcome, policy, attempt, now=NOW, deadline=deadline, rng=rng_high,
                            retry_after_s=retry_after, first_delay=first)
    assert verdict == expected


@pytest.mark.parametrize(
    ("at", "respond_async", "expected"),
    [(NOW + 5, False, True), (NOW + 5.001, False, False), (NOW + 1, True, False)],
)
def test_keep_waiting_inline_only_within_the_callers_wait(at, respond_async, expected) -> None:
    assert keep_waiting(RetryLater(1, at), INLINE, respond_async) is expected


def test_a_vanished_sender_repeats_only_what_the_route_allows() -> None:
    assert after_vanished(UNLOCK) is None
    assert after_vanished(READ) is None
    assert after_vanished(CREATE) == Finish(RecordStatus.FAILED, "unknown_outcome")


# -- a queued copy arrives ----------------------------------------------------------------


def record(status=RecordStatus.QUEUED, attempts=1, next_at: float | None = NOW,
           deadline=NOW + 30, **extra) -> RequestRecord:
    return RequestRecord(
        request_id="r1", status=status, method="POST", path="/locks/1/unlock",
        route="POST /locks/{id}/unlock", policy="unlock", created_at=NOW - 10,
        deadline=deadline, expires_at=int(NOW + 86_400),
        attempts=tuple(AttemptEntry(NOW - 5, "server_error", 503, 1) for _ in range(attempts)),
        next_attempt_at=next_at, **extra,
    )


@pytest.mark.parametrize(
    ("stored", "now", "expected"),
    [
        (None, NOW, DeadLetter("record_missing")),
        (record(status=RecordStatus.SUCCEEDED), NOW, Drop()),
        (record(status=RecordStatus.EXPIRED), NOW + 99, Drop()),
        (record(), NOW, Proceed(2)),
        # the deadline to the second
        (record(deadline=NOW), NOW, Expire("deadline")),
        (record(deadline=NOW + 0.001), NOW, Proceed(2)),
        # attempts: the fourth unlock attempt may still happen, a fifth may not
        (record(attempts=3), NOW, Proceed(4)),
        (record(attempts=4), NOW, Expire("attempts_exhausted")),
        # early delivery: within the tolerance it goes, earlier it hides until its time
        (record(next_at=NOW + EARLY_TOLERANCE_S), NOW, Proceed(2)),
        (record(next_at=NOW + EARLY_TOLERANCE_S + 0.01), NOW, Postpone(1)),
        (record(next_at=NOW + 7.2), NOW, Postpone(8)),
        (record(next_at=None), NOW, Proceed(2)),
        # the deadline wins over an early copy
        (record(next_at=NOW + 9, deadline=NOW - 1), NOW, Expire("deadline")),
    ],
)
def test_on_delivery(stored, now, expected) -> None:
    assert on_delivery(stored, UNLOCK if stored is not None else None, now) == expected


def test_a_message_whose_record_is_gone_is_dead_lettered_whatever_its_policy() -> None:
    assert on_delivery(None, UNLOCK, NOW) == DeadLetter("record_missing")


# -- a repeat of an Idempotency-Key -------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "scope", "fingerprint", "expected"),
    [
        (record(scope="a", fields_hash="h"), "b", "h", Mismatch()),
        (record(scope="a", fields_hash="h"), "a", "other", Mismatch()),
        (record(status=RecordStatus.SENDING, scope="a", fields_hash="h", claim_until=NOW + 1),
         "a", "h", InProgress()),
        (record(status=RecordStatus.SENDING, scope="a", fields_hash="h", claim_until=NOW),
         "a", "h", InProgress()),  # the lease is still good at its last instant
        (record(status=RecordStatus.SENDING, scope="a", fields_hash="h", claim_until=NOW - 0.01),
         "a", "h", TakeOver()),
        (record(scope="a", fields_hash="h"), "a", "h", StillQueued()),
        (record(status=RecordStatus.FAILED, scope="a", fields_hash="h"), "a", "h", Ended()),
    ],
)
def test_on_repeat(stored, scope, fingerprint, expected) -> None:
    assert on_repeat(stored, scope, fingerprint, NOW) == expected
