"""The retry_worker path: one queued request, one decision, at most one attempt.

::

    on_delivery: ended already -> done (a duplicate never reaches Kisi); past its deadline or
                 its attempts -> expired, dead-letter queue; delivered early -> hide it until
                 its time
    turn (guard, budget)       -> paused or no slot: a fresh copy later, no attempt spent
    claim attempt n (conditional write; a lapsed claim: after_vanished)
    send -> after_attempt:  Finish -> record it (expired: dead-letter queue first), done
                            RetryLater -> record it, ChangeMessageVisibility(delay), later

Attempts are counted in the request record, whose conditional writes make each attempt
number happen once however many copies of a message arrive; the message carries how many
attempts came before it was (re)queued.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import StrEnum

from kisi_gateway.core.decisions import (
    WORKER_MAX_WAIT_S,
    DeadLetter,
    Defer,
    Drop,
    Expire,
    Finish,
    Postpone,
    RetryLater,
    Window,
    after_attempt,
    after_vanished,
    on_delivery,
)
from kisi_gateway.core.identity import CallerMode, CredentialKind
from kisi_gateway.core.lifecycle import Change, Event
from kisi_gateway.core.policy import PolicyTable, Route
from kisi_gateway.core.records import (
    AttemptEntry,
    RecordStatus,
    RequestRecord,
    RetryMessage,
    StoredResponse,
)
from kisi_gateway.pipeline.callers import Callers, Who
from kisi_gateway.pipeline.kisi_http import KisiCall
from kisi_gateway.pipeline.sending import Acting, Sender
from kisi_gateway.stores.ports import CredentialVault, RecordStore, RetryQueue

LOG = logging.getLogger("kisi_gateway")


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
    callers: Callers
    vault: CredentialVault
    claim_lease_s: float = 60.0

    def process(self, message: RetryMessage, receipt_handle: str) -> Disposition:
        clock = self.sender.clock
        record = self.records.get(message.request_id)
        route = self._route(message, record) if record is not None else None
        delivery = on_delivery(record, route.policy if route else None, clock.now())
        match delivery:
            case DeadLetter(reason=reason):
                self.queue.dead_letter(message, reason)
                return Disposition.DONE
            case Drop():
                LOG.info("duplicate delivery of an ended request", extra={"id": message.request_id})
                return Disposition.DONE
            case Postpone(delay_s=delay):
                self.queue.postpone(receipt_handle, delay)
                return Disposition.LATER
        assert record is not None  # a missing record is dead-lettered
        assert route is not None
        if isinstance(delivery, Expire):
            return self._end(message, record, Finish(RecordStatus.EXPIRED, delivery.reason))
        who = self._who(record)
        if who is None:
            return self._end(message, record, Finish(RecordStatus.FAILED, "credential_unavailable"))
        acting = self.sender.acting(who)
        # Queued retries book as far ahead as the worker may wait, whatever their route: they
        # already waited their turn in the queue (book_ahead_s shapes fresh calls).
        now = clock.now()
        window = Window(until=now + WORKER_MAX_WAIT_S, book_ahead_s=WORKER_MAX_WAIT_S)
        turn = self.sender.wait_for_turn(
            route, acting, deadline=record.deadline, window=window, asks=0, check_guard=True
        )
        if isinstance(turn, Defer):
            return self._wait(message, record, turn.delay_s)
        if isinstance(turn, Expire):
            return self._end(message, record, Finish(RecordStatus.EXPIRED, turn.reason))
        now = clock.now()
        claim = self.records.apply(record.request_id, Change(
            Event.CLAIM, state=RecordStatus.QUEUED, done=record.attempt_count,
            lease_until=now + self.claim_lease_s, now=now))
        if claim is None or claim.after is None:
            LOG.info("attempt claimed elsewhere", extra={"id": record.request_id})
            return Disposition.LATER
        if claim.before.claimed_attempt == claim.after.claimed_attempt:
            ending = after_vanished(route.policy)  # an earlier worker may have sent it
            if ending is not None:
                return self._end(message, claim.after, ending)
        return self._send(message, claim.after, route, acting, receipt_handle)

    def _route(self, message: RetryMessage, record: RequestRecord) -> Route:
        route = self.policies.resolve(record.method, record.path)
        if message.policy in self.policies.policies:
            route = replace(route, policy=self.policies.by_name(message.policy))
        return route

    def _who(self, record: RequestRecord) -> Who | None:
        """Who the queued request acts as; ``None`` if its caller's credential is gone.

        A caller's own credential was sealed for this request; opening it can fail only for
        an unreachable KMS (raised: the message comes back) or a record that lost it.
        """
        try:
            kind = CredentialKind(record.credential_kind)
            mode = CallerMode(record.caller_mode)
        except ValueError:
            return None
        credential = None
        if kind is CredentialKind.CALLER:
            if record.sealed is None:
                return None
            credential = self.vault.open(record.sealed, record.request_id)
        return self.callers.rebuild(record.tenant, record.caller, mode, kind, credential)

    def _send(
        self, message: RetryMessage, record: RequestRecord, route: Route, acting: Acting,
        receipt_handle: str,
    ) -> Disposition:
        body = message.body.encode() if message.body is not None else None
        attempted = self.sender.attempt(
            route, KisiCall(route.method, message.path, message.query, body), acting
        )
        attempt_no = record.attempt_count + 1
        verdict = after_attempt(
            attempted.outcome, route.policy, attempt_no, now=attempted.at,
            deadline=record.deadline, rng=self.sender.rng,
            retry_after_s=attempted.retry_after_s, first_delay=False,
        )
        if isinstance(verdict, Finish):
            return self._end(message, record, verdict, attempted.entry(), attempted.response)
        assert isinstance(verdict, RetryLater)
        self.sender.telemetry.retry_delay(verdict.delay_s)
        change = Change(
            Event.RESCHEDULE, state=RecordStatus.QUEUED, done=record.attempt_count,
            status=RecordStatus.QUEUED, entries=(attempted.entry(verdict.delay_s),),
            next_attempt_at=verdict.at,
        )
        if self.records.apply(record.request_id, change) is None:
            LOG.warning("record moved on during the attempt", extra={"id": record.request_id})
            return Disposition.DONE
        self.queue.postpone(receipt_handle, verdict.delay_s)
        return Disposition.LATER

    def _end(
        self,
        message: RetryMessage,
        record: RequestRecord,
        ending: Finish,
        entry: AttemptEntry | None = None,
        response: StoredResponse | None = None,
    ) -> Disposition:
        """Record how the request ended (with the attempt that ended it, if one did).

        Expired requests, and requests this worker ends without sending (an earlier worker
        vanished with the attempt), go to the dead-letter queue for an operator to see.
        """
        if ending.status is RecordStatus.EXPIRED or entry is None:
            # Dead-letter first: if the record write then fails, the redelivered message still
            # finds the request open; the other order could lose the dead-letter copy.
            self.queue.dead_letter(message, ending.reason or "expired")
        change = Change(
            Event.FINISH, state=RecordStatus.QUEUED, done=record.attempt_count,
            status=ending.status, entries=(entry,) if entry is not None else (),
            reason=ending.reason, response=response,
        )
        if self.records.apply(record.request_id, change) is None:
            LOG.warning("record moved on during the attempt", extra={"id": record.request_id})
            return Disposition.DONE
        self.sender.telemetry.finished(ending.status.value, ending.reason)
        return Disposition.DONE

    def _wait(self, message: RetryMessage, record: RequestRecord, delay_s: int) -> Disposition:
        """Come back later without spending an attempt: a fresh copy, the original deleted.

        A fresh copy rather than a visibility change, so waiting does not raise the
        message's receive count towards the dead-letter queue's ``maxReceiveCount``.
        """
        now = self.sender.clock.now()
        copy = replace(message, prior_attempts=record.attempt_count, enqueued_at=now)
        self.queue.enqueue(copy, delay_s)
        LOG.info("waiting", extra={"id": record.request_id, "delay_s": delay_s})
        return Disposition.DONE
