"""The api_call path: forward a call to Kisi, retry inline while the caller waits, else defer.

::

    validate -> repeat of an Idempotency-Key? (on_repeat) -> guard open? (503)
      -> turn (guard, budget: before_attempt) -> send -> after_attempt
           Finish                              -> Kisi's answer (or why there is none)
           RetryLater, the caller still waits  -> sleep the delay, next turn
           RetryLater, no time left            -> record + SQS message -> 202
      a turn that cannot come in time          -> record + SQS message (Defer) or end (Expire)

Every decision is :mod:`kisi_gateway.core.decisions`'; this module performs them. A request
is written to the record store only when it is deferred or carries an ``Idempotency-Key``;
the common synchronous call costs no record write.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import secrets
from dataclasses import dataclass, replace

from kisi_gateway.core.decisions import (
    INLINE_LIMIT_S,
    MAX_BUDGET_ASKS,
    Defer,
    Ended,
    Expire,
    Finish,
    InProgress,
    Mismatch,
    StillQueued,
    TakeOver,
    Window,
    after_attempt,
    after_vanished,
    keep_waiting,
    on_repeat,
)
from kisi_gateway.core.errors import GatewayError, GatewayErrorCode, unavailable
from kisi_gateway.core.lifecycle import Change, Event
from kisi_gateway.core.records import (
    AttemptEntry,
    RecordStatus,
    RequestRecord,
    RetryMessage,
    StoredResponse,
)
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
from kisi_gateway.pipeline.sending import Sender
from kisi_gateway.stores.ports import (
    BudgetUnavailableError,
    QueueError,
    RecordStore,
    RecordStoreError,
    RetryQueue,
)

LOG = logging.getLogger("kisi_gateway")
STORE_RETRY_AFTER_S = 2  # what a caller is told to wait when DynamoDB or SQS failed
LEASE_SLACK_S = 5.0  # a keyed call's lease outlives its longest inline run by this much
REPLAYED = {"Idempotent-Replayed": "true"}


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


def in_progress(request_id: str) -> Reply:
    return error_reply(
        GatewayError(409, GatewayErrorCode.CONFLICT,
                     "a request with this Idempotency-Key is in progress", retry_after=1),
        request_id,
    )


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

    def window(self, call: IncomingCall, started: float) -> Window:
        """How long this call may wait inline: the caller's ``Prefer: wait``, and at most until
        the last start that still ends within API Gateway's limit."""
        until = min(started + call.prefs.wait_s, started + self.inline_limit_s - self.attempt_s)
        return Window(until=until, book_ahead_s=call.route.policy.book_ahead_s)

    def _forward(self, call: IncomingCall, context: CallContext, request_id: str) -> Reply:
        started = self.sender.clock.now()
        keyed = call.idempotency_key is not None
        if keyed:
            existing = self.records.get(request_id)
            if existing is not None:
                return self._replay(existing, call, context)
        pause = self.sender.check(call.route)
        if pause is not None:
            return error_reply(
                GatewayError(503, GatewayErrorCode.PAUSED,
                             f"paused by the gateway's guard: {pause.reason}",
                             retry_after=pause.retry_after_s),
                request_id,
            )
        record = self.new_record(call, context, request_id, started)
        if keyed and not self.records.create(record):
            existing = self.records.get(request_id)
            if existing is not None:
                return self._replay(existing, call, context)
        return self._run(call, context, record)

    def new_record(
        self, call: IncomingCall, context: CallContext, request_id: str, now: float
    ) -> RequestRecord:
        """The record a call starts with: sending, leased for its longest inline run."""
        lease = min(call.prefs.wait_s, self.inline_limit_s) + self.attempt_s + LEASE_SLACK_S
        policy = call.route.policy
        return RequestRecord(
            request_id=request_id, status=RecordStatus.SENDING, method=call.method,
            path=call.path, route=call.route.key, policy=policy.name, created_at=now,
            deadline=now + policy.deadline_s, expires_at=int(now + self.record_ttl_s),
            claim_until=now + lease, scope=context.scope, fields_hash=call.fingerprint(),
        )

    def _run(self, call: IncomingCall, context: CallContext, record: RequestRecord) -> Reply:
        run = _InlineRun(self, call, context, record, self.window(call, record.created_at))
        if call.idempotency_key is not None:
            run.stored = RecordStatus.SENDING
        try:
            return run.run()
        except (RecordStoreError, QueueError, BudgetUnavailableError):
            if not run.ambiguous and run.stored is not None:
                # Kisi did not act on anything sent so far: forget the request, so the
                # caller's retry (told by the 503) starts afresh.
                with contextlib.suppress(RecordStoreError):
                    self.records.apply(record.request_id,
                                       Change(Event.WITHDRAW, state=run.stored))
            raise

    def _replay(self, record: RequestRecord, call: IncomingCall, context: CallContext) -> Reply:
        """A repeated ``Idempotency-Key``: the first call's result, and no call to Kisi."""
        now = self.sender.clock.now()
        match on_repeat(record, context.scope, call.fingerprint(), now):
            case Mismatch():
                return error_reply(
                    GatewayError(422, GatewayErrorCode.UNPROCESSABLE,
                                 "Idempotency-Key was already used for a different request"),
                    record.request_id,
                )
            case TakeOver():
                return self._take_over(record, call, context)
            case InProgress():
                return in_progress(record.request_id).with_headers(**REPLAYED)
            case StillQueued():
                return accepted(record, context.gateway_prefix).with_headers(**REPLAYED)
            case Ended():
                return final_reply(record, context.rewrite_location).with_headers(**REPLAYED)
        raise AssertionError("unreachable")  # pragma: no cover

    def _take_over(self, record: RequestRecord, call: IncomingCall, context: CallContext) -> Reply:
        """The first call of this key vanished mid-send (its Lambda died or timed out)."""
        now = self.sender.clock.now()
        lease = call.prefs.wait_s + self.attempt_s + LEASE_SLACK_S
        taken = self.records.apply(record.request_id, Change(
            Event.TAKE_OVER, state=RecordStatus.SENDING, lease_until=now + lease, now=now))
        if taken is None or taken.after is None:  # another repeat took it first
            return in_progress(record.request_id)
        current = taken.after
        policy = call.route.policy
        ending = after_vanished(policy)
        if ending is None:
            deadline = min(current.deadline, now + policy.deadline_s)
            return self._run(call, context, replace(current, created_at=now, deadline=deadline))
        ended = self.records.apply(record.request_id, Change(
            Event.FINISH, state=RecordStatus.SENDING, done=current.attempt_count,
            status=ending.status, reason=ending.reason))
        self.sender.telemetry.finished(ending.status.value, ending.reason)
        final = ended.after if ended is not None and ended.after is not None else replace(
            current, status=ending.status, reason=ending.reason)
        return final_reply(final, context.rewrite_location)


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
    window: Window
    ambiguous: bool = False  # did an attempt reach Kisi without a readable answer?
    stored: RecordStatus | None = None  # the record's state in the store, if written

    def run(self) -> Reply:
        sender = self.forwarder.sender
        route = self.call.route
        entries: list[AttemptEntry] = []
        kisi_call = KisiCall(route.method, self.call.path, self.call.query, self.call.body)
        while True:
            turn = sender.wait_for_turn(
                route, deadline=self.record.deadline, window=self.window, asks=MAX_BUDGET_ASKS,
                check_guard=bool(entries),  # the first check came before the record
            )
            if isinstance(turn, Defer):
                return self._defer(entries, turn.delay_s, None)
            if isinstance(turn, Expire):
                return self._end(entries, Finish(RecordStatus.EXPIRED, turn.reason), None)
            attempted = sender.attempt(route, kisi_call)
            self.ambiguous = self.ambiguous or attempted.outcome.unknown_outcome
            verdict = after_attempt(
                attempted.outcome, route.policy, len(entries) + 1, now=attempted.at,
                deadline=self.record.deadline, rng=sender.rng,
                retry_after_s=attempted.retry_after_s, first_delay=True,
            )
            if isinstance(verdict, Finish):
                entries.append(attempted.entry())
                return self._end(entries, verdict, attempted.response)
            entries.append(attempted.entry(verdict.delay_s))
            sender.telemetry.retry_delay(verdict.delay_s)
            if not keep_waiting(verdict, self.window, self.call.prefs.respond_async):
                return self._defer(entries, verdict.delay_s, verdict.at)
            sender.clock.sleep(verdict.delay_s)

    def _end(
        self, entries: list[AttemptEntry], ending: Finish, response: StoredResponse | None
    ) -> Reply:
        """The request ended inline: Kisi's answer, or why there is none."""
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
        return final_reply(record, self.context.rewrite_location)

    def _defer(self, entries: list[AttemptEntry], delay_s: int, at: float | None) -> Reply:
        """Hand the request to the retry queue: its record, then its message."""
        forwarder = self.forwarder
        now = forwarder.sender.clock.now()
        next_at = at if at is not None else now + delay_s
        record = replace(self.record, status=RecordStatus.QUEUED, attempts=tuple(entries),
                         next_attempt_at=next_at, claim_until=0.0)
        if self.stored is RecordStatus.SENDING:
            change = Change(Event.DEFER, state=RecordStatus.SENDING, status=RecordStatus.QUEUED,
                            entries=tuple(entries), next_attempt_at=next_at)
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
