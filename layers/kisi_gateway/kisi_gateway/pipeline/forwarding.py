"""The api_call path: forward a call to Kisi, retry inline while the caller waits, else defer.

::

    validate -> who (callers) -> repeat of an Idempotency-Key? (on_repeat) -> guard open? (503)
      -> turn (guard, budget: before_attempt) -> send -> after_attempt
           Finish                              -> Kisi's answer (or why there is none)
           RetryLater, the caller still waits  -> sleep the delay, next turn
           RetryLater, no time left            -> service contract: record + SQS message -> 202
                                                  client contract: Kisi's last answer
      a turn that cannot come in time          -> Defer (as above) or Expire

Two contracts (RFC 7240 ``Prefer``): a caller on the service login gets a 202 and a record to
poll when Kisi keeps failing; a Kisi client (a caller with its own credential, by default)
is answered as Kisi would answer it: never a 202 it did not ask for with ``Prefer:
respond-async``, Kisi's last answer (with ``Retry-After``) when its short wait runs out, and
nothing queued. Every decision is :mod:`kisi_gateway.core.decisions`'; this module performs
them. A record is written only when a call is deferred or carries an ``Idempotency-Key``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field, replace

from kisi_gateway.core.decisions import (
    INLINE_LIMIT_S,
    Ended,
    InProgress,
    Mismatch,
    StillQueued,
    TakeOver,
    Window,
    after_vanished,
    on_repeat,
)
from kisi_gateway.core.errors import GatewayError, GatewayErrorCode, unavailable
from kisi_gateway.core.lifecycle import Change, Event
from kisi_gateway.core.records import RecordStatus, RequestRecord
from kisi_gateway.pipeline.callers import Callers, Who, kept_from_records
from kisi_gateway.pipeline.calls import IncomingCall
from kisi_gateway.pipeline.inline import InlineRun
from kisi_gateway.pipeline.preflight import Screen
from kisi_gateway.pipeline.replies import (
    LocationRewriter,
    Reply,
    accepted,
    error_reply,
    final_reply,
    json_reply,
)
from kisi_gateway.pipeline.sending import Acting, Sender
from kisi_gateway.stores.ports import (
    BudgetUnavailableError,
    CredentialVault,
    DirectoryError,
    QueueError,
    RecordStore,
    RecordStoreError,
    RetryQueue,
    SecretUnavailableError,
    VaultError,
)

LOG = logging.getLogger("kisi_gateway")
STORE_RETRY_AFTER_S = 2  # what a caller is told to wait when DynamoDB or SQS failed
LEASE_SLACK_S = 5.0  # a keyed call's lease outlives its longest inline run by this much
REPLAYED = {"Idempotent-Replayed": "true"}
STORES_DOWN = (RecordStoreError, QueueError, BudgetUnavailableError, DirectoryError,
               VaultError, SecretUnavailableError)


def request_id_for(scope: str, idempotency_key: str | None) -> str:
    """A new id, or the same id for every repeat of one caller's ``Idempotency-Key``."""
    if idempotency_key is None:
        return secrets.token_hex(16)
    digest = hashlib.sha256(f"{scope}\0{idempotency_key}".encode()).hexdigest()
    return digest[:32]


@dataclass(frozen=True, slots=True)
class CallContext:
    """Where a call came from: the caller's API key id and ``Authorization``, and how to
    write gateway URLs for it."""

    api_key_id: str | None
    authorization: str | None = field(repr=False)
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
    callers: Callers
    vault: CredentialVault
    record_ttl_s: float
    read_timeout_s: float
    connect_timeout_s: float = 3.05
    inline_limit_s: float = INLINE_LIMIT_S
    client_wait_s: float = 4.0  # a Kisi client's answer by then: its timeout is 5 s
    screen: Screen | None = None  # None: Kisi's documented table, no known-bad memory

    @property
    def attempt_s(self) -> float:
        """The longest one attempt can take."""
        return self.connect_timeout_s + self.read_timeout_s

    def forward(self, call: IncomingCall, context: CallContext) -> Reply:
        """Answer one validated call; never raises for anything a caller or Kisi does."""
        request_id = ""
        try:
            who = kept_from_records(
                self.callers.who(context.api_key_id, context.authorization, call.route.key), call)
            request_id = request_id_for(who.scope, call.idempotency_key)
            return self._forward(call, context, who, request_id)
        except GatewayError as error:
            return error_reply(error, request_id or None)
        except STORES_DOWN as exc:
            LOG.error("gateway store unavailable", extra={"error": type(exc).__name__})
            return error_reply(
                unavailable("the gateway could not reach its own store; retry later",
                            STORE_RETRY_AFTER_S),
                request_id or None,
            )

    def lookup(self, request_id: str, context: CallContext) -> Reply:
        """``GET /requests/{id}``: the record, to its own caller only."""
        not_found = GatewayError(404, GatewayErrorCode.NOT_FOUND, "no such request")
        if not request_id.isalnum() or len(request_id) > 64:
            return error_reply(not_found)
        try:
            who = self.callers.who(context.api_key_id, context.authorization, "GET /requests")
            record = self.records.get(request_id)
        except GatewayError as error:
            return error_reply(error)
        except STORES_DOWN:
            return error_reply(unavailable("request records are unavailable", STORE_RETRY_AFTER_S))
        if record is None or record.scope != who.scope:
            return error_reply(not_found)
        return json_reply(200, record.public(), {"X-Gateway-Request-Id": request_id})

    def window(self, call: IncomingCall, who: Who, started: float) -> Window:
        """How long this call may wait inline: the caller's ``Prefer: wait`` (a Kisi client's
        shorter default), and at most until the last start that still ends within API
        Gateway's limit."""
        wait = call.prefs.wait_s
        if who.client and not call.prefs.explicit_wait:
            wait = min(wait, self.client_wait_s)
        until = min(started + wait, started + self.inline_limit_s - self.attempt_s)
        return Window(until=until, book_ahead_s=call.route.policy.book_ahead_s)

    def _forward(
        self, call: IncomingCall, context: CallContext, who: Who, request_id: str
    ) -> Reply:
        started = self.sender.clock.now()
        if call.idempotency_key is not None:
            existing = self.records.get(request_id)
            if existing is not None:
                return self._replay(existing, call, context, who)
        screen = self.screen or Screen(self.sender.telemetry, self.sender.login)
        if (early := screen.before_send(call, who, started)) is not None:
            return early.with_headers(**{"X-Gateway-Request-Id": request_id})
        acting = self.sender.acting(who)
        pause = self.sender.check(call.route, acting)
        if pause is not None and (fresh := self.callers.rotated(who)) is not None:
            # The service key was replaced while paused: the new key is a new identity.
            who, acting = fresh, self.sender.acting(fresh)
            pause = self.sender.check(call.route, acting)
        if pause is not None:
            return error_reply(
                GatewayError(503, GatewayErrorCode.PAUSED,
                             f"paused by the gateway's guard: {pause.reason}",
                             retry_after=pause.retry_after_s),
                request_id,
            )
        record = self.new_record(call, who, request_id, started)
        if call.idempotency_key is not None and not self.records.create(record):
            existing = self.records.get(request_id)
            if existing is not None:
                return self._replay(existing, call, context, who)
        return self._run(call, context, acting, record)

    def new_record(
        self, call: IncomingCall, who: Who, request_id: str, now: float
    ) -> RequestRecord:
        """The record a call starts with: sending, leased for its longest inline run."""
        lease = min(call.prefs.wait_s, self.inline_limit_s) + self.attempt_s + LEASE_SLACK_S
        policy = call.route.policy
        return RequestRecord(
            request_id=request_id, status=RecordStatus.SENDING, method=call.method,
            path=call.path, route=call.route.key, policy=policy.name, created_at=now,
            deadline=now + policy.deadline_s, expires_at=int(now + self.record_ttl_s),
            claim_until=now + lease, scope=who.scope, fields_hash=call.fingerprint(),
            tenant=who.tenant, caller=who.caller, credential_kind=who.kind.value,
            caller_mode=who.mode.value,
        )

    def _run(
        self, call: IncomingCall, context: CallContext, acting: Acting, record: RequestRecord
    ) -> Reply:
        window = self.window(call, acting.who, record.created_at)
        run = InlineRun(self, call, context, acting, record, window)
        if call.idempotency_key is not None:
            run.stored = RecordStatus.SENDING
        try:
            return run.run()
        except STORES_DOWN:
            run.withdraw()
            raise

    def _replay(
        self, record: RequestRecord, call: IncomingCall, context: CallContext, who: Who
    ) -> Reply:
        """A repeated ``Idempotency-Key``: the first call's result, and no call to Kisi."""
        now = self.sender.clock.now()
        match on_repeat(record, who.scope, call.fingerprint(), now):
            case Mismatch():
                return error_reply(
                    GatewayError(422, GatewayErrorCode.UNPROCESSABLE,
                                 "Idempotency-Key was already used for a different request"),
                    record.request_id,
                )
            case TakeOver():
                return self._take_over(record, call, context, who)
            case InProgress():
                return in_progress(record.request_id).with_headers(**REPLAYED)
            case StillQueued():
                return accepted(record, context.gateway_prefix).with_headers(**REPLAYED)
            case Ended():
                return final_reply(record, context.rewrite_location).with_headers(**REPLAYED)
        raise AssertionError("unreachable")  # pragma: no cover

    def _take_over(
        self, record: RequestRecord, call: IncomingCall, context: CallContext, who: Who
    ) -> Reply:
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
            fresh = replace(current, created_at=now, deadline=deadline)
            return self._run(call, context, self.sender.acting(who), fresh)
        ended = self.records.apply(record.request_id, Change(
            Event.FINISH, state=RecordStatus.SENDING, done=current.attempt_count,
            status=ending.status, reason=ending.reason))
        self.sender.telemetry.finished(ending.status.value, ending.reason)
        final = ended.after if ended is not None and ended.after is not None else replace(
            current, status=ending.status, reason=ending.reason)
        return final_reply(final, context.rewrite_location)
