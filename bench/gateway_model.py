"""kisi-gateway in virtual time: api_call and retry_worker, step for step, on the real policies.

The control flow mirrors :class:`kisi_gateway.pipeline.forwarding._InlineRun` (retry inline while
the
caller's ``Prefer: wait`` lasts, else record + SQS message with the first delay) and
:meth:`kisi_gateway.pipeline.retrying.RetryWorker.process` (expiry at the deadline, waiting for the
guard or the budget without spending an attempt, ``ChangeMessageVisibility`` to the next
delay, dead-letter queue). It is re-stated here as generators because the library's own
classes block on a clock, and the simulation may not sleep or use threads. Every *decision*
is the library's: :func:`~kisi_gateway.core.outcome.classify_status`,
:func:`~kisi_gateway.core.backoff.schedule_retry`,
:func:`~kisi_gateway.core.backoff.parse_retry_after`,
the route policies of :meth:`~kisi_gateway.core.policy.PolicyTable.default`, the adaptive budget
:class:`~kisi_gateway.stores.budget.InMemorySendBudget` (with ``now`` = virtual time) and the
guard's
pure functions (:mod:`bench.memory_guard`). Constants (``MAX_BUDGET_ASKS``,
``WORKER_MAX_WAIT_S``, ``EARLY_TOLERANCE_S``, the default wait) are imported, not copied.

Each DynamoDB or SQS call costs ``store_op_s`` of virtual time, so time passes between a
decision and the send as it does on AWS.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from bench.engine import Engine, Process, Sleep
from bench.kisi_model import Reply, VirtualKisi
from bench.sqs_model import EventSourceMapping, Message, VirtualQueue
from bench.tracking import Final, TrackedCall, final_of
from kisi_gateway.config import Settings
from kisi_gateway.core.backoff import Expire, parse_retry_after, schedule_retry
from kisi_gateway.core.breaker import GuardRules
from kisi_gateway.core.decisions import (
    EARLY_TOLERANCE_S,
    INLINE_LIMIT_S,
    MAX_BUDGET_ASKS,
    MIN_ASK_INTERVAL_S,
    WORKER_MAX_WAIT_S,
)
from kisi_gateway.core.outcome import Outcome, classify_status
from kisi_gateway.core.policy import PolicyTable, Route
from kisi_gateway.pipeline.retrying import Disposition
from kisi_gateway.stores.memory import MemoryGuard as InMemoryGuard
from kisi_gateway.stores.memory import MemorySendBudget as InMemorySendBudget

IDENTITY = "id-00000000"  # the one identity the simulated callers share
STORE_OP_S = 0.01  # one DynamoDB or SQS round trip from a Lambda, roughly


@dataclass(slots=True)
class Record:
    """The request record, as far as the retry path reads and writes it."""

    call: TrackedCall
    route: Route
    deadline: float
    attempts: int
    next_attempt_at: float | None


@dataclass(frozen=True, slots=True)
class _Sent:
    reply: Reply
    outcome: Outcome
    retry_after_s: float | None


@dataclass(slots=True)
class GatewayCounters:
    """What the gateway did besides sending: for the report."""

    deferred: int = 0
    waits_budget: int = 0
    waits_guard: int = 0
    early_deliveries: int = 0
    paused_calls: int = 0
    expired_unsent: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def ended(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def deployed_settings() -> Settings:
    """The defaults template.yaml deploys with (no overrides)."""
    return Settings.from_env({})


class GatewayModel:
    """The whole gateway for one simulated Kisi user: callers' api_calls, queue and workers."""

    name = "gateway"

    def __init__(
        self,
        engine: Engine,
        kisi: VirtualKisi,
        rng: random.Random,
        settings: Settings | None = None,
        store_op_s: float = STORE_OP_S,
    ) -> None:
        settings = settings or deployed_settings()
        self._engine = engine
        self._kisi = kisi
        self._rng = rng
        self._store_op_s = store_op_s
        self._wait_s = settings.default_wait_s
        # Forwarder.attempt_s: the longest one attempt can take (connect + read timeout).
        self._attempt_s = settings.connect_timeout_s + settings.read_timeout_s
        self._policies: PolicyTable = settings.policies
        self.budget = InMemorySendBudget(rate=settings.send_rate, route_rates=settings.rates())
        self.guard = InMemoryGuard(
            GuardRules(
                consecutive_401_threshold=settings.guard_401_threshold,
                cooldown_s=settings.guard_cooldown_s,
                cache_s=settings.guard_cache_s,
            )
        )
        self.queue = VirtualQueue(engine)
        self.mapping = EventSourceMapping(engine, self.queue, self._invocation)
        self.records: dict[int, Record] = {}
        self.counters = GatewayCounters()

    # -- api_call ---------------------------------------------------------------------------

    def call(self, call: TrackedCall) -> Process[None]:
        """One api_call: ``Forwarder._forward`` then ``_InlineRun.run``."""
        route = self._policies.resolve(call.method, call.path)
        policy = route.policy
        started = self._engine.now
        pause = self.guard.check(IDENTITY, route.key, started)
        if pause is not None:
            self.counters.paused_calls += 1
            call.end(started, Final.PAUSED, pause.reason)
            return
        record = Record(call, route, started + policy.deadline_s, 0, None)
        # The caller's wait, and the last start that still ends within API Gateway's limit.
        inline_until = min(started + self._wait_s, started + INLINE_LIMIT_S - self._attempt_s)
        budget_asks = MAX_BUDGET_ASKS
        while True:
            remaining = max(0.0, min(inline_until, record.deadline) - self._engine.now)
            book_ahead = min(remaining, policy.book_ahead_s)
            yield Sleep(self._store_op_s)
            grant = self.budget.acquire(IDENTITY, route.key, self._engine.now, book_ahead)
            if not grant.ok:
                if grant.reason == "rate" and grant.wait_s <= remaining and budget_asks:
                    budget_asks -= 1
                    yield Sleep(max(grant.wait_s - book_ahead, MIN_ASK_INTERVAL_S))
                    continue
                yield from self._defer(record, math.ceil(max(grant.wait_s, 1.0)), None)
                return
            yield Sleep(grant.wait_s)
            if self._engine.now >= record.deadline:  # never send late
                self._finish(record.call, Final.EXPIRED, "deadline")
                return
            if record.attempts:
                pause = self.guard.check(IDENTITY, route.key, self._engine.now)
                if pause is not None:
                    yield from self._defer(record, pause.retry_after_s, None)
                    return
            sent = yield from self._attempt(route, call)
            if sent.outcome.terminal:
                self._finish(call, final_of(sent.outcome), "")
                return
            if record.attempts + 1 >= policy.max_attempts:
                self._finish(call, Final.EXPIRED, "attempts_exhausted")
                return
            schedule = schedule_retry(
                record.attempts, policy.backoff, now=sent.reply.at, deadline=record.deadline,
                rng=self._rng.random, first=True, retry_after_s=sent.retry_after_s,
            )
            if isinstance(schedule, Expire):
                self._finish(call, Final.EXPIRED, schedule.reason)
                return
            record.attempts += 1
            if schedule.at > inline_until:
                yield from self._defer(record, schedule.delay_s, schedule.at)
                return
            yield Sleep(schedule.delay_s)

    def _defer(self, record: Record, delay_s: int, at: float | None) -> Process[None]:
        """``_InlineRun._defer``: record as queued, then an SQS message with the delay."""
        now = self._engine.now
        next_at = at if at is not None else now + delay_s
        if next_at > record.deadline:
            self.counters.expired_unsent += 1
            self._finish(record.call, Final.EXPIRED, "deadline")
            return
        record.next_attempt_at = next_at
        yield Sleep(self._store_op_s)  # records.create
        self.records[record.call.index] = record
        yield Sleep(self._store_op_s)  # queue.enqueue
        self.queue.send(record.call, record.attempts, max(0, math.ceil(next_at - now)))
        self.counters.deferred += 1

    def _attempt(self, route: Route, call: TrackedCall) -> Process[_Sent]:
        """``Sender.attempt``: send, classify, then tell the guard and the budget."""
        reply = yield from self._kisi.request(call)
        outcome = classify_status(reply.status)
        now = self._engine.now
        retry_after = parse_retry_after(reply.retry_after, now)
        self.guard.observe(IDENTITY, route.key, outcome, now)
        self.budget.observe(IDENTITY, route.key, outcome, retry_after, now)
        return _Sent(reply, outcome, retry_after)

    def _finish(self, call: TrackedCall, final: Final, reason: str) -> None:
        self.counters.ended(reason or final.value)
        call.end(self._engine.now, final, reason)

    # -- retry_worker -----------------------------------------------------------------------

    def _invocation(self, batch: list[Message]) -> Process[None]:
        """One retry_worker invocation: its batch in order; DONE messages are deleted."""
        for message in batch:
            disposition = yield from self.process(message)
            if disposition is Disposition.DONE:
                self.queue.delete(message)

    def process(self, message: Message) -> Process[Disposition]:
        """``RetryWorker.process`` for one message."""
        yield Sleep(self._store_op_s)  # records.get
        now = self._engine.now
        record = self.records[message.call.index]
        call = record.call
        if call.final is not None:
            return Disposition.DONE
        policy = record.route.policy
        attempt_no = record.attempts + 1
        if now >= record.deadline:
            return self._end(message, Final.EXPIRED, "deadline")
        if attempt_no > policy.max_attempts:
            return self._end(message, Final.EXPIRED, "attempts_exhausted")
        if record.next_attempt_at is not None and now + EARLY_TOLERANCE_S < record.next_attempt_at:
            self.counters.early_deliveries += 1
            self.queue.change_visibility(message, math.ceil(record.next_attempt_at - now))
            return Disposition.LATER
        pause = self.guard.check(IDENTITY, record.route.key, now)
        if pause is not None:
            self.counters.waits_guard += 1
            return (yield from self._wait(message, record, pause.retry_after_s))
        yield Sleep(self._store_op_s)  # budget
        max_wait = max(0.0, min(WORKER_MAX_WAIT_S, record.deadline - self._engine.now))
        grant = self.budget.acquire(IDENTITY, record.route.key, self._engine.now, max_wait)
        if not grant.ok:
            self.counters.waits_budget += 1
            delay = math.ceil(max(grant.wait_s, 1.0))
            return (yield from self._wait(message, record, delay))
        yield Sleep(grant.wait_s)
        if self._engine.now >= record.deadline:  # never send late
            return self._end(message, Final.EXPIRED, "deadline")
        yield Sleep(self._store_op_s)  # records.claim
        return (yield from self._send(message, record, attempt_no))

    def _send(self, message: Message, record: Record, attempt_no: int) -> Process[Disposition]:
        """``RetryWorker._send``: one attempt, then final, expired or the next delay."""
        policy = record.route.policy
        sent = yield from self._attempt(record.route, record.call)
        yield Sleep(self._store_op_s)  # records.add_attempt
        if sent.outcome.terminal:
            return self._record_end(message, final_of(sent.outcome), "")
        if attempt_no >= policy.max_attempts:
            return self._record_end(message, Final.EXPIRED, "attempts_exhausted")
        schedule = schedule_retry(
            attempt_no - 1, policy.backoff, now=sent.reply.at, deadline=record.deadline,
            rng=self._rng.random, first=False, retry_after_s=sent.retry_after_s,
        )
        if isinstance(schedule, Expire):
            return self._record_end(message, Final.EXPIRED, schedule.reason)
        record.attempts = attempt_no
        record.next_attempt_at = schedule.at
        self.queue.change_visibility(message, schedule.delay_s)
        return Disposition.LATER

    def _record_end(self, message: Message, final: Final, reason: str) -> Disposition:
        """``RetryWorker._record``: the final state; an expired request goes to the DLQ."""
        self._finish(message.call, final, reason)
        if final is Final.EXPIRED:
            self.queue.dead_letter(message, reason)
        return Disposition.DONE

    def _end(self, message: Message, final: Final, reason: str) -> Disposition:
        """``RetryWorker._end``: end without sending; DLQ."""
        self._finish(message.call, final, reason)
        self.queue.dead_letter(message, reason)
        return Disposition.DONE

    def _wait(self, message: Message, record: Record, delay_s: int) -> Process[Disposition]:
        """``RetryWorker._wait``: a fresh copy later, no attempt spent; or expire."""
        now = self._engine.now
        if now + delay_s > record.deadline:
            return self._end(message, Final.EXPIRED, "deadline")
        yield Sleep(self._store_op_s)  # queue.enqueue
        self.queue.send(record.call, record.attempts, delay_s)
        return Disposition.DONE
