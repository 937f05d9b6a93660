"""The retry_worker path: one queued request, one decision, at most one attempt.

::

    record ended already          -> done (a duplicate delivery never reaches Kisi)
    past its deadline             -> expired, never sent, dead-letter queue
    delivered early               -> hide the message until its time
    guard paused / no budget slot -> requeue a copy for later: waiting spends no attempt
    claim attempt n (conditional) -> send -> classify
      terminal                    -> record final state, done (message deleted)
      retryable, attempts left    -> record, ChangeMessageVisibility(next delay), later
      retryable, last attempt     -> expired, dead-letter queue

Attempts are counted in the request record, whose conditional writes make each attempt
number happen once however many copies of a message arrive; the message carries how many
attempts came before it was (re)queued.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from enum import StrEnum

from kisi_gateway.core.backoff import Expire, schedule_retry
from kisi_gateway.core.outcome import OutcomeClass
from kisi_gateway.core.policy import PolicyTable, Route
from kisi_gateway.pipeline.kisi_http import KisiCall
from kisi_gateway.pipeline.sending import Sender
from kisi_gateway.stores.queue import RetryMessage, RetryQueue
from kisi_gateway.stores.records import (
    AttemptChange,
    AttemptEntry,
    RecordStatus,
    RecordStore,
    RequestRecord,
    StoredResponse,
)

LOG = logging.getLogger("kisi_gateway")
EARLY_TOLERANCE_S = 0.5  # SQS may deliver a little before a visibility timeout ends
WORKER_MAX_WAIT_S = 2.0  # a worker may wait this long for a budget slot before requeueing


class Disposition(StrEnum):
    """What to do with the message."""

    DONE = "done"  # delete it
    LATER = "later"  # leave it (its visibility says when it comes back)


@dataclass
class RetryWorker:
    """Processes retry messages for the retry_worker Lambda."""

    sender: Sender
    records: RecordStore
    queue: RetryQueue
    policies: PolicyTable
    claim_lease_s: float = 60.0

    def process(self, message: RetryMessage, receipt_handle: str) -> Disposition:
        now = self.sender.clock.now()
        record = self.records.get(message.request_id)
        if record is None:
            self.queue.dead_letter(message, "record_missing")
            return Disposition.DONE
        if record.terminal:
            LOG.info("duplicate delivery of an ended request", extra={"id": record.request_id})
            return Disposition.DONE
        route = self._route(message, record)
        policy = route.policy
        attempt_no = record.attempt_count + 1
        if now >= record.deadline:
            return self._end(message, record, RecordStatus.EXPIRED, "deadline")
        if attempt_no > policy.max_attempts:
            return self._end(message, record, RecordStatus.EXPIRED, "attempts_exhausted")
        if record.next_attempt_at is not None and now + EARLY_TOLERANCE_S < record.next_attempt_at:
            self.queue.postpone(receipt_handle, math.ceil(record.next_attempt_at - now))
            return Disposition.LATER
        pause = self.sender.paused(route)
        if pause is not None:
            self.sender.telemetry.paused()
            return self._wait(message, record, pause.retry_after_s, f"guard: {pause.reason}")
        # A slot is only worth waiting for if the attempt still starts before the deadline.
        # Queued retries book as far ahead as the worker may wait, whatever their route: they
        # already waited their turn in the queue (book_ahead_s shapes fresh calls).
        grant = self.sender.slot(route, max(0.0, min(WORKER_MAX_WAIT_S, record.deadline - now)))
        if not grant.ok:
            return self._wait(message, record, math.ceil(max(grant.wait_s, 1.0)), "budget")
        self.sender.clock.sleep(grant.wait_s)
        now = self.sender.clock.now()
        if now >= record.deadline:  # never send late, however the wait went
            return self._end(message, record, RecordStatus.EXPIRED, "deadline")
        claim = self.records.claim(record.request_id, attempt_no, now, self.claim_lease_s)
        if claim.record is None:
            LOG.info("attempt claimed elsewhere", extra={"id": record.request_id})
            return Disposition.LATER
        if claim.lapsed and not policy.repeat_unknown:
            # An earlier worker took this attempt and vanished: it may have reached Kisi.
            return self._end(message, claim.record, RecordStatus.FAILED, "unknown_outcome")
        return self._send(message, claim.record, route, attempt_no, receipt_handle)

    def _route(self, message: RetryMessage, record: RequestRecord) -> Route:
        route = self.policies.resolve(record.method, record.path)
        if message.policy in self.policies.policies:
            route = replace(route, policy=self.policies.by_name(message.policy))
        return route

    def _send(
        self,
        message: RetryMessage,
        record: RequestRecord,
        route: Route,
        attempt_no: int,
        receipt_handle: str,
    ) -> Disposition:
        policy = route.policy
        body = message.body.encode() if message.body is not None else None
        attempted = self.sender.attempt(
            route, KisiCall(route.method, message.path, message.query, body)
        )
        outcome = attempted.outcome
        if outcome.terminal:
            ok = outcome.cls in (OutcomeClass.SUCCESS, OutcomeClass.REDIRECT)
            status = RecordStatus.SUCCEEDED if ok else RecordStatus.FAILED
            return self._record(message, record, attempted.entry(), status, None,
                                attempted.response)
        if outcome.unknown_outcome and not policy.repeat_unknown:
            return self._record(message, record, attempted.entry(), RecordStatus.FAILED,
                                "unknown_outcome", attempted.response)
        if attempt_no >= policy.max_attempts:
            return self._record(message, record, attempted.entry(), RecordStatus.EXPIRED,
                                "attempts_exhausted", attempted.response)
        schedule = schedule_retry(
            attempt_no - 1, policy.backoff, now=attempted.at, deadline=record.deadline,
            rng=self.sender.rng, first=False, retry_after_s=attempted.retry_after_s,
        )
        if isinstance(schedule, Expire):
            return self._record(message, record, attempted.entry(), RecordStatus.EXPIRED,
                                schedule.reason, attempted.response)
        self.sender.telemetry.retry_delay(schedule.delay_s)
        change = AttemptChange(
            done_before=attempt_no - 1, status=RecordStatus.QUEUED,
            entries=(attempted.entry(schedule.delay_s),), next_attempt_at=schedule.at,
            expected=frozenset({RecordStatus.QUEUED}),
        )
        if self.records.add_attempt(record.request_id, change) is None:
            LOG.warning("record moved on during the attempt", extra={"id": record.request_id})
            return Disposition.DONE
        self.queue.postpone(receipt_handle, schedule.delay_s)
        return Disposition.LATER

    def _record(
        self,
        message: RetryMessage,
        record: RequestRecord,
        entry: AttemptEntry,
        status: RecordStatus,
        reason: str | None,
        response: StoredResponse | None,
    ) -> Disposition:
        if status is RecordStatus.EXPIRED:
            # Dead-letter first: if the record write then fails, the redelivered message still
            # finds the request open; the other order could lose the dead-letter copy.
            self.queue.dead_letter(message, reason or "expired")
        change = AttemptChange(
            done_before=record.attempt_count, status=status, entries=(entry,), reason=reason,
            response=response, expected=frozenset({RecordStatus.QUEUED}),
        )
        if self.records.add_attempt(record.request_id, change) is None:
            LOG.warning("record moved on during the attempt", extra={"id": record.request_id})
            return Disposition.DONE
        self.sender.telemetry.finished(status.value, reason)
        return Disposition.DONE

    def _end(
        self, message: RetryMessage, record: RequestRecord, status: RecordStatus, reason: str
    ) -> Disposition:
        """End a request without sending it."""
        self.queue.dead_letter(message, reason)  # first, as in _record
        change = AttemptChange(
            done_before=record.attempt_count, status=status, reason=reason,
            expected=frozenset({RecordStatus.QUEUED}),
        )
        if self.records.add_attempt(record.request_id, change) is not None:
            self.sender.telemetry.finished(status.value, reason)
        return Disposition.DONE

    def _wait(
        self, message: RetryMessage, record: RequestRecord, delay_s: int, why: str
    ) -> Disposition:
        """Come back later without spending an attempt: a fresh copy, the original deleted.

        A fresh copy rather than a visibility change, so waiting does not raise the
        message's receive count towards the dead-letter queue's ``maxReceiveCount``.
        """
        now = self.sender.clock.now()
        if now + delay_s > record.deadline:
            return self._end(message, record, RecordStatus.EXPIRED, "deadline")
        copy = replace(message, prior_attempts=record.attempt_count, enqueued_at=now)
        self.queue.enqueue(copy, delay_s)
        LOG.info("waiting", extra={"id": record.request_id, "why": why, "delay_s": delay_s})
        return Disposition.DONE
