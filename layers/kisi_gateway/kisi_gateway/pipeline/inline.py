"""One inline run of the api_call path: turns, attempts and waits while the caller waits,
then the end (Kisi's answer, or why there is none) or the hand-over to the retry queue.

:class:`~kisi_gateway.pipeline.forwarding.Forwarder` starts a run for each call it sends;
every decision is :mod:`kisi_gateway.core.decisions`', and this module performs them.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from kisi_gateway.core.backoff import retry_after_hint
from kisi_gateway.core.decisions import (
    MAX_BUDGET_ASKS,
    Defer,
    Expire,
    Finish,
    RetryLater,
    Window,
    after_attempt,
    keep_waiting,
)
from kisi_gateway.core.errors import GatewayError, GatewayErrorCode
from kisi_gateway.core.identity import CredentialKind
from kisi_gateway.core.lifecycle import Change, Event
from kisi_gateway.core.records import AttemptEntry, RecordStatus, RequestRecord, RetryMessage
from kisi_gateway.pipeline.calls import IncomingCall
from kisi_gateway.pipeline.kisi_http import KisiCall
from kisi_gateway.pipeline.replies import (
    Reply,
    accepted,
    error_reply,
    final_reply,
)
from kisi_gateway.pipeline.sending import Acting, Attempted
from kisi_gateway.stores.ports import (
    QueueError,
    RecordStoreError,
)

if TYPE_CHECKING:
    from kisi_gateway.pipeline.forwarding import CallContext, Forwarder

LOG = logging.getLogger("kisi_gateway")


@dataclass
class InlineRun:
    """One caller's wait: attempts while time allows, then a final answer or a deferral."""

    forwarder: Forwarder
    call: IncomingCall
    context: CallContext
    acting: Acting
    record: RequestRecord
    window: Window
    ambiguous: bool = False  # did an attempt reach Kisi without a readable answer?
    stored: RecordStatus | None = None  # the record's state in the store, if written
    last: Attempted | None = None

    @property
    def answers_now(self) -> bool:
        """A Kisi client that did not ask for an asynchronous answer is never deferred."""
        return self.acting.who.client and not self.call.prefs.respond_async

    def run(self) -> Reply:
        sender = self.forwarder.sender
        route = self.call.route
        entries: list[AttemptEntry] = []
        kisi_call = KisiCall(route.method, self.call.path, self.call.query, self.call.body)
        while True:
            turn = sender.wait_for_turn(
                route, self.acting, deadline=self.record.deadline, window=self.window,
                asks=MAX_BUDGET_ASKS, check_guard=bool(entries),  # the first came before
            )
            if isinstance(turn, Defer):
                return self._later(entries, turn.delay_s, None)
            if isinstance(turn, Expire):
                return self._end(entries, Finish(RecordStatus.EXPIRED, turn.reason))
            within = self.window.until - sender.clock.now() if self.answers_now else None
            attempted = sender.attempt(route, replace(kisi_call, within_s=within), self.acting)
            self.last = attempted
            self.ambiguous = self.ambiguous or attempted.outcome.unknown_outcome
            verdict = after_attempt(
                attempted.outcome, route.policy, len(entries) + 1, now=attempted.at,
                deadline=self.record.deadline, rng=sender.rng,
                retry_after_s=attempted.retry_after_s, first_delay=True,
            )
            if isinstance(verdict, Finish):
                entries.append(attempted.entry())
                return self._end(entries, verdict)
            entries.append(attempted.entry(verdict.delay_s))
            sender.telemetry.retry_delay(verdict.delay_s)
            if not keep_waiting(verdict, self.window, self.call.prefs.respond_async):
                return self._later(entries, verdict.delay_s, verdict)
            sender.clock.sleep(verdict.delay_s)

    def _later(
        self, entries: list[AttemptEntry], delay_s: int, retry: RetryLater | None
    ) -> Reply:
        """The wait ran out: a 202 (service contract) or Kisi's last answer (a client)."""
        if not self.answers_now:
            return self._defer(entries, delay_s, retry.at if retry else None)
        self.withdraw()
        if self.last is not None and self.last.response is not None:
            reply = final_reply(
                replace(self.record, attempts=tuple(entries), response=self.last.response),
                self.context.rewrite_location)
            if "Retry-After" not in reply.headers:  # say when it is worth trying again
                reply = reply.with_headers(**{"Retry-After": str(delay_s)})
            return reply
        return error_reply(GatewayError(
            429, GatewayErrorCode.RATE_LIMITED,
            "Kisi's rate limit for this user is used up for now; retry after the delay",
            retry_after=delay_s), self.record.request_id)

    def withdraw(self) -> None:
        """Forget a keyed record nothing was sent for, so the caller's retry starts afresh."""
        if self.ambiguous or self.stored is None:
            return
        with contextlib.suppress(RecordStoreError):
            self.forwarder.records.apply(self.record.request_id,
                                         Change(Event.WITHDRAW, state=self.stored))
        self.stored = None

    def _end(self, entries: list[AttemptEntry], ending: Finish) -> Reply:
        """The request ended inline: Kisi's answer, or why there is none."""
        response = self.last.response if self.last is not None and entries else None
        self.forwarder.sender.telemetry.finished(ending.status.value, ending.reason)
        record = replace(self.record, status=ending.status, attempts=tuple(entries),
                         reason=ending.reason, response=response)
        if self.stored is RecordStatus.SENDING:
            change = Change(Event.FINISH, state=RecordStatus.SENDING, status=ending.status,
                            entries=tuple(entries), reason=ending.reason, response=response)
            try:
                self.forwarder.records.apply(record.request_id, change)
            except RecordStoreError:
                # The caller still gets Kisi's answer; a repeat of the key sees "in progress"
                # until the record's lease lapses, then is treated as an unknown outcome.
                LOG.error("could not record the final answer", extra={"id": record.request_id})
        reply = final_reply(record, self.context.rewrite_location)
        if response is not None and (reply.status == 429 or reply.status >= 500) and (
                "Retry-After" not in reply.headers):
            # Kisi's 429/5xx ends the request here (its attempts or its deadline ran out
            # before the caller's wait did): still say when a new try is worth it.
            hint = retry_after_hint(len(entries), self.call.route.policy.backoff)
            reply = reply.with_headers(**{"Retry-After": str(hint)})
        return reply

    def _defer(self, entries: list[AttemptEntry], delay_s: int, at: float | None) -> Reply:
        """Hand the request to the retry queue: its record, then its message."""
        forwarder = self.forwarder
        now = forwarder.sender.clock.now()
        next_at = at if at is not None else now + delay_s
        who = self.acting.who
        sealed = None
        if who.kind is CredentialKind.CALLER and who.credential is not None:
            sealed = forwarder.vault.seal(who.credential, self.record.request_id)
        record = replace(self.record, status=RecordStatus.QUEUED, attempts=tuple(entries),
                         next_attempt_at=next_at, claim_until=0.0, sealed=sealed)
        if self.stored is RecordStatus.SENDING:
            change = Change(Event.DEFER, state=RecordStatus.SENDING, status=RecordStatus.QUEUED,
                            entries=tuple(entries), next_attempt_at=next_at, sealed=sealed)
            if forwarder.records.apply(record.request_id, change) is None:
                raise RecordStoreError("record changed while sending")
        elif not forwarder.records.create(record):
            raise RecordStoreError("request id collision")
        self.stored = RecordStatus.QUEUED
        message = RetryMessage(
            request_id=record.request_id, method=record.method, path=record.path,
            query=self.call.query,
            body=self.call.body.decode() if self.call.body is not None else None,
            prior_attempts=len(entries), deadline=record.deadline, policy=record.policy,
            route=record.route, enqueued_at=now,
        )
        try:
            forwarder.queue.enqueue(message, max(0, math.ceil(next_at - now)))
        except QueueError:
            # Nothing will retry it: take the record back so the caller's retry starts clean.
            forwarder.records.apply(record.request_id,
                                    Change(Event.WITHDRAW, state=RecordStatus.QUEUED))
            self.stored = None
            raise
        forwarder.sender.telemetry.deferred()
        return accepted(record, self.context.gateway_prefix)
