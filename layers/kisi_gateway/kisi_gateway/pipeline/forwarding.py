"""The api_call path: forward a call to Kisi, retry inline while the caller waits, else defer.

::

    validate -> repeat of an Idempotency-Key? -> guard open? -> budget slot -> send -> classify
      success / redirect / client error        -> answer as Kisi did
      429 / 5xx / network error, time to wait  -> sleep the backoff delay, send again
      429 / 5xx / network error, no time left  -> record + SQS message -> 202
      unknown outcome on a route that may not repeat it, deadline or attempts spent -> final

A request is written to the record store only when it is deferred or carries an
``Idempotency-Key``; the common synchronous call costs no DynamoDB write.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import secrets
from dataclasses import dataclass, replace

from kisi_gateway.core.backoff import Expire, schedule_retry
from kisi_gateway.core.errors import GatewayError, GatewayErrorCode, unavailable
from kisi_gateway.pipeline.calls import IncomingCall
from kisi_gateway.pipeline.kisi_http import KisiCall
from kisi_gateway.pipeline.replies import (
    LocationRewriter,
    Reply,
    accepted,
    error_reply,
    json_reply,
    pass_through,
)
from kisi_gateway.pipeline.sending import Attempted, Sender
from kisi_gateway.stores.budget import BudgetUnavailableError
from kisi_gateway.stores.queue import QueueError, RetryMessage, RetryQueue
from kisi_gateway.stores.records import (
    AttemptChange,
    AttemptEntry,
    RecordStatus,
    RecordStore,
    RecordStoreError,
    RequestRecord,
)

LOG = logging.getLogger("kisi_gateway")
STORE_RETRY_AFTER_S = 2  # what a caller is told to wait when DynamoDB or SQS failed
# API Gateway gives a Lambda integration 29 s; the function's Timeout is 29 s too. Every
# inline attempt must be able to finish (connect + read timeout) by this much after the call
# arrived, or the caller would get API Gateway's own 504 instead of an answer.
INLINE_LIMIT_S = 27.0
MAX_BUDGET_ASKS = 10  # bounded: each ask is a DynamoDB read
MIN_ASK_INTERVAL_S = 0.05


def request_id_for(scope: str, idempotency_key: str | None) -> str:
    """A new id, or the same id for every repeat of one caller's ``Idempotency-Key``."""
    if idempotency_key is None:
        return secrets.token_hex(16)
    digest = hashlib.sha256(f"{scope}\0{idempotency_key}".encode()).hexdigest()
    return digest[:32]


@dataclass(frozen=True, slots=True)
class CallContext:
    """Where a call came from: the caller's scope and how to write gateway URLs."""

    scope: str
    gateway_prefix: str
    rewrite_location: LocationRewriter


@dataclass
class Forwarder:
    """Forwards calls for the api_call Lambda."""

    sender: Sender
    records: RecordStore
    queue: RetryQueue
    record_ttl_s: float
    read_timeout_s: float
    connect_timeout_s: float = 3.05
    inline_limit_s: float = INLINE_LIMIT_S

    @property
    def attempt_s(self) -> float:
        """The longest one attempt can take."""
        return self.connect_timeout_s + self.read_timeout_s

    def forward(self, call: IncomingCall, context: CallContext) -> Reply:
        """Answer one validated call; never raises for anything a caller or Kisi does."""
        request_id = request_id_for(context.scope, call.idempotency_key)
        try:
            return self._forward(call, context, request_id)
        except (RecordStoreError, QueueError, BudgetUnavailableError) as exc:
            LOG.error("gateway store unavailable", extra={"error": type(exc).__name__})
            return error_reply(
                unavailable("the gateway could not reach its own store; retry later",
                            STORE_RETRY_AFTER_S),
                request_id,
            )

    def lookup(self, request_id: str, context: CallContext) -> Reply:
        """``GET /requests/{id}``: the record, to its own caller only."""
        not_found = GatewayError(404, GatewayErrorCode.NOT_FOUND, "no such request")
        if not request_id.isalnum() or len(request_id) > 64:
            return error_reply(not_found)
        try:
            record = self.records.get(request_id)
        except RecordStoreError:
            return error_reply(unavailable("request records are unavailable", STORE_RETRY_AFTER_S))
        if record is None or record.scope != context.scope:
            return error_reply(not_found)
        return json_reply(200, record.public(), {"X-Gateway-Request-Id": request_id})

    def _forward(self, call: IncomingCall, context: CallContext, request_id: str) -> Reply:
        clock = self.sender.clock
        started = clock.now()
        keyed = call.idempotency_key is not None
        if keyed:
            existing = self.records.get(request_id)
            if existing is not None:
                return self._replay(existing, call, context)
        pause = self.sender.paused(call.route)
        if pause is not None:
            self.sender.telemetry.paused()
            return error_reply(
                GatewayError(503, GatewayErrorCode.PAUSED,
                             f"paused by the gateway's guard: {pause.reason}",
                             retry_after=pause.retry_after_s),
                request_id,
            )
        record = self._new_record(call, context, request_id, started)
        if keyed and not self.records.create(record):
            existing = self.records.get(request_id)
            if existing is not None:
                return self._replay(existing, call, context)
        return self._run(call, context, record)

    def _run(self, call: IncomingCall, context: CallContext, record: RequestRecord) -> Reply:
        run = _InlineRun(self, call, context, record)
        try:
            return run.run()
        except (RecordStoreError, QueueError, BudgetUnavailableError):
            if not run.ambiguous and call.idempotency_key is not None:
                # Kisi did not act on anything sent so far: free the key, so the caller's
                # retry starts afresh.
                with contextlib.suppress(RecordStoreError):
                    self.records.delete_unsent(record.request_id)
            raise

    def _new_record(
        self, call: IncomingCall, context: CallContext, request_id: str, now: float
    ) -> RequestRecord:
        policy = call.route.policy
        lease = min(call.prefs.wait_s, self.inline_limit_s) + self.attempt_s + 5.0
        return RequestRecord(
            request_id=request_id,
            status=RecordStatus.SENDING,
            method=call.method,
            path=call.path,
            route=call.route.key,
            policy=policy.name,
            created_at=now,
            deadline=now + policy.deadline_s,
            expires_at=int(now + self.record_ttl_s),
            claim_until=now + lease,
            scope=context.scope,
            fields_hash=call.fingerprint(),
        )

    def _replay(self, record: RequestRecord, call: IncomingCall, context: CallContext) -> Reply:
        """A repeated ``Idempotency-Key``: the first call's result, and no call to Kisi."""
        if record.scope != context.scope or record.fields_hash != call.fingerprint():
            return error_reply(
                GatewayError(422, GatewayErrorCode.UNPROCESSABLE,
                             "Idempotency-Key was already used for a different request"),
                record.request_id,
            )
        replayed = {"Idempotent-Replayed": "true"}
        now = self.sender.clock.now()
        if record.status is RecordStatus.SENDING and record.claim_until < now:
            return self._take_over(record, call, context)
        if record.status is RecordStatus.SENDING:
            return error_reply(
                GatewayError(409, GatewayErrorCode.CONFLICT,
                             "a request with this Idempotency-Key is in progress",
                             retry_after=1),
                record.request_id,
            ).with_headers(**replayed)
        if record.status is RecordStatus.QUEUED:
            return accepted(record, context.gateway_prefix).with_headers(**replayed)
        return final_reply(record, context.rewrite_location).with_headers(**replayed)


    def _take_over(self, record: RequestRecord, call: IncomingCall, context: CallContext) -> Reply:
        """The first call of this key vanished mid-send (its Lambda died or timed out).

        It may have reached Kisi. A route that may repeat an unknown outcome is sent again by
        this call; any other ends ``failed``, ``unknown_outcome``, as a timeout would.
        """
        now = self.sender.clock.now()
        lease = call.prefs.wait_s + self.attempt_s + 5.0
        taken = self.records.take_over(record.request_id, now, lease)
        if taken is None:  # another repeat took it first
            return error_reply(
                GatewayError(409, GatewayErrorCode.CONFLICT,
                             "a request with this Idempotency-Key is in progress",
                             retry_after=1),
                record.request_id,
            )
        if call.route.policy.repeat_unknown:
            fresh = replace(taken, created_at=now, deadline=min(
                taken.deadline, now + call.route.policy.deadline_s))
            return self._run(call, context, fresh)
        ended = self.records.add_attempt(
            record.request_id,
            AttemptChange(done_before=taken.attempt_count, status=RecordStatus.FAILED,
                          reason="unknown_outcome", expected=frozenset({RecordStatus.SENDING})),
        )
        self.sender.telemetry.finished(RecordStatus.FAILED.value, "unknown_outcome")
        return final_reply(ended or replace(taken, status=RecordStatus.FAILED,
                                            reason="unknown_outcome"), context.rewrite_location)


def final_reply(record: RequestRecord, rewrite_location: LocationRewriter) -> Reply:
    """The answer for a request that has ended: Kisi's last answer, or why there is none."""
    if record.response is not None:
        return pass_through(
            record.response,
            request_id=record.request_id,
            attempts=record.attempt_count,
            rewrite_location=rewrite_location,
        )
    if record.reason == "unknown_outcome":
        error = GatewayError(
            504, GatewayErrorCode.UNKNOWN_OUTCOME,
            "Kisi did not answer after the request was sent; it may have been applied and "
            "this route does not repeat it",
        )
    else:
        error = GatewayError(
            504, GatewayErrorCode.EXPIRED,
            f"Kisi could not be reached before the request ended ({record.reason})",
        )
    return error_reply(error, record.request_id).with_headers(
        **{"X-Gateway-Attempts": str(record.attempt_count)}
    )


@dataclass
class _InlineRun:
    """One caller's wait: attempts while time allows, then a final answer or a deferral."""

    forwarder: Forwarder
    call: IncomingCall
    context: CallContext
    record: RequestRecord
    ambiguous: bool = False  # did an attempt reach Kisi without a readable answer?

    def run(self) -> Reply:
        sender = self.forwarder.sender
        clock = sender.clock
        route = self.call.route
        policy = route.policy
        wait_until = self.record.created_at + self.call.prefs.wait_s
        # The last moment an attempt may start and still end before the integration limit.
        latest_start = (
            self.record.created_at + self.forwarder.inline_limit_s - self.forwarder.attempt_s
        )
        entries: list[AttemptEntry] = []
        kisi_call = KisiCall(route.method, self.call.path, self.call.query, self.call.body)
        budget_asks = MAX_BUDGET_ASKS
        while True:
            now = clock.now()
            remaining = max(0.0, min(wait_until, latest_start, self.record.deadline) - now)
            book_ahead = min(remaining, policy.book_ahead_s)
            grant = sender.slot(route, book_ahead)
            if not grant.ok:
                if grant.reason == "rate" and grant.wait_s <= remaining and budget_asks:
                    # The slot is further ahead than this route may book (or a route limit
                    # keeps it from booking ahead): wait until it is close, and ask again.
                    budget_asks -= 1
                    clock.sleep(max(grant.wait_s - book_ahead, MIN_ASK_INTERVAL_S))
                    continue
                return self._defer(entries, math.ceil(max(grant.wait_s, 1.0)), None)
            clock.sleep(grant.wait_s)
            if clock.now() >= self.record.deadline:  # never send late
                return self._expire_unsent(entries, RecordStatus.EXPIRED)
            if entries:  # the first check happened before the record was created
                pause = sender.paused(route)
                if pause is not None:
                    return self._defer(entries, pause.retry_after_s, None)
            attempted = sender.attempt(route, kisi_call)
            outcome = attempted.outcome
            self.ambiguous = self.ambiguous or outcome.unknown_outcome
            if outcome.terminal:
                entries.append(attempted.entry())
                status = RecordStatus.SUCCEEDED if outcome.cls.value in (
                    "success", "redirect") else RecordStatus.FAILED
                return self._finish(entries, status, None, attempted)
            if outcome.unknown_outcome and not policy.repeat_unknown:
                entries.append(attempted.entry())
                return self._finish(entries, RecordStatus.FAILED, "unknown_outcome", attempted)
            if len(entries) + 1 >= policy.max_attempts:
                entries.append(attempted.entry())
                return self._finish(entries, RecordStatus.EXPIRED, "attempts_exhausted",
                                    attempted)
            schedule = schedule_retry(
                len(entries), policy.backoff, now=attempted.at, deadline=self.record.deadline,
                rng=sender.rng, first=True, retry_after_s=attempted.retry_after_s,
            )
            if isinstance(schedule, Expire):
                entries.append(attempted.entry())
                return self._finish(entries, RecordStatus.EXPIRED, schedule.reason, attempted)
            entries.append(attempted.entry(schedule.delay_s))
            sender.telemetry.retry_delay(schedule.delay_s)
            if self.call.prefs.respond_async or schedule.at > min(wait_until, latest_start):
                return self._defer(entries, schedule.delay_s, schedule.at)
            clock.sleep(schedule.delay_s)

    def _finish(
        self,
        entries: list[AttemptEntry],
        status: RecordStatus,
        reason: str | None,
        attempted: Attempted,
    ) -> Reply:
        forwarder = self.forwarder
        forwarder.sender.telemetry.finished(status.value, reason)
        record = replace(
            self.record,
            status=status,
            attempts=tuple(entries),
            reason=reason,
            response=attempted.response,
        )
        if self.call.idempotency_key is not None:
            change = AttemptChange(
                done_before=0, status=status, entries=tuple(entries), reason=reason,
                response=attempted.response,
                expected=frozenset({RecordStatus.SENDING}),
            )
            try:
                forwarder.records.add_attempt(record.request_id, change)
            except RecordStoreError:
                # The caller still gets Kisi's answer; a repeat of the key sees "in progress"
                # until the record's lease lapses, then is treated as an unknown outcome.
                LOG.error("could not record the final answer", extra={"id": record.request_id})
        return final_reply(record, self.context.rewrite_location)

    def _defer(self, entries: list[AttemptEntry], delay_s: int, at: float | None) -> Reply:
        forwarder = self.forwarder
        now = forwarder.sender.clock.now()
        next_at = at if at is not None else now + delay_s
        if next_at > self.record.deadline:
            last_status = RecordStatus.EXPIRED
            return self._expire_unsent(entries, last_status)
        record = replace(
            self.record,
            status=RecordStatus.QUEUED,
            attempts=tuple(entries),
            next_attempt_at=next_at,
            claim_until=0.0,
        )
        if self.call.idempotency_key is not None:
            change = AttemptChange(
                done_before=0, status=RecordStatus.QUEUED, entries=tuple(entries),
                next_attempt_at=next_at, expected=frozenset({RecordStatus.SENDING}),
            )
            if forwarder.records.add_attempt(record.request_id, change) is None:
                raise RecordStoreError("record changed while sending")
        elif not forwarder.records.create(record):
            raise RecordStoreError("request id collision")
        message = RetryMessage(
            request_id=record.request_id,
            method=record.method,
            path=record.path,
            query=self.call.query,
            body=self.call.body.decode() if self.call.body is not None else None,
            prior_attempts=len(entries),
            deadline=record.deadline,
            policy=record.policy,
            route=record.route,
            enqueued_at=now,
        )
        try:
            forwarder.queue.enqueue(message, max(0, math.ceil(next_at - now)))
        except QueueError:
            # Nothing will retry it: take the record back so the caller's retry starts clean.
            forwarder.records.delete_unsent(record.request_id)
            raise
        forwarder.sender.telemetry.deferred()
        return accepted(record, self.context.gateway_prefix)

    def _expire_unsent(self, entries: list[AttemptEntry], status: RecordStatus) -> Reply:
        """No attempt fits before the deadline (e.g. the budget or guard is closed too long)."""
        record = replace(self.record, status=status, attempts=tuple(entries), reason="deadline")
        self.forwarder.sender.telemetry.finished(status.value, "deadline")
        if self.call.idempotency_key is not None:
            self.forwarder.records.add_attempt(
                record.request_id,
                AttemptChange(done_before=0, status=status, entries=tuple(entries),
                              reason="deadline", expected=frozenset({RecordStatus.SENDING})),
            )
        return final_reply(record, self.context.rewrite_location)
