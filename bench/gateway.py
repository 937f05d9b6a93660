"""kisi-gateway in virtual time: the library's own api_call and retry_worker code, unchanged.

The pipeline is the one :func:`kisi_gateway.wiring.build_in_memory` composes — a
:class:`~kisi_gateway.pipeline.forwarding.Forwarder` and a
:class:`~kisi_gateway.pipeline.retrying.RetryWorker` sharing one
:class:`~kisi_gateway.pipeline.sending.Sender` over the in-memory stores
(:class:`~kisi_gateway.stores.memory.MemoryRecordStore`,
:class:`~kisi_gateway.stores.memory.MemorySendBudget`,
:class:`~kisi_gateway.stores.memory.MemoryGuard`) — on a
:class:`~bench.vthreads.VirtualClock`. Each api_call (``parse_call`` then
``Forwarder.forward``) and each retry_worker invocation (``RetryWorker.process`` for every
message of its batch) runs in a virtual thread of its own (:mod:`bench.vthreads`). What the
bench puts around the pipeline, and only that:

- Kisi is :class:`~bench.kisi_model.VirtualKisi` (the simulator's core behind a seeded network)
  behind the library's ``send(KisiCall)`` port;
- the retry queue is the SQS model :class:`~bench.sqs_model.VirtualQueue` in place of
  ``MemoryQueue``, fed to retry_worker by Lambda's event source model;
- each DynamoDB or SQS call costs ``store_op_s`` of virtual time, and every resource the
  deployed adapters would use is metered on the request in hand (:mod:`bench.metering`,
  priced by :mod:`bench.costs`);
- how a request ended is what the gateway itself reports: its ``Telemetry.finished(status,
  reason)`` call, attributed to the request the calling thread serves, or api_call's 503
  answer when the guard paused it. The counters come from the same events (see
  :class:`GatewayCounters`).
"""

from __future__ import annotations

import contextlib
import enum
import math
from dataclasses import dataclass, field, replace
from functools import partial

from bench.costs import Usage
from bench.engine import Engine, Process
from bench.kisi_model import VirtualKisi
from bench.metering import (
    ChargedBudget,
    ChargedKnownBad,
    ChargedQueue,
    ChargedRecords,
    MeteredGuard,
    MeteredSink,
    metered_logs,
)
from bench.sqs_model import EventSourceMapping, Message, VirtualQueue
from bench.tracking import Final, TrackedCall
from bench.vthreads import InThread, VirtualClock, VirtualThreads
from kisi_gateway.config import Settings
from kisi_gateway.core.backoff import RandomSource
from kisi_gateway.core.errors import GatewayErrorCode
from kisi_gateway.core.identity import KisiLogin
from kisi_gateway.core.records import RecordStatus, RetryMessage
from kisi_gateway.pipeline.calls import parse_call
from kisi_gateway.pipeline.forwarding import CallContext
from kisi_gateway.pipeline.kisi_http import AttemptResult, KisiCall, KisiResponse
from kisi_gateway.pipeline.replies import Reply
from kisi_gateway.pipeline.retrying import Disposition
from kisi_gateway.pipeline.telemetry import MetricSink, Telemetry
from kisi_gateway.wiring import InMemoryGateway, build_in_memory

STORE_OP_S = 0.01  # one DynamoDB or SQS round trip from a Lambda, roughly
# One caller (an API key id) on the default tenant's service login: no Authorization header.
CONTEXT = CallContext(api_key_id="bench", authorization=None, gateway_prefix="",
                      rewrite_location=lambda url: url)


def deployed_settings() -> Settings:
    """The defaults template.yaml deploys with (no overrides)."""
    return Settings.from_env({})


class Role(enum.Enum):
    """Which Lambda a virtual thread stands for."""

    API_CALL = "api_call"
    RETRY_WORKER = "retry_worker"


@dataclass(slots=True)
class Serving:
    """What a virtual thread is doing: its Lambda, the request in hand, whether it was sent."""

    role: Role
    call: TrackedCall | None = None
    sent: bool = False  # an attempt of ``call`` went out in this api_call / for this message


@dataclass(slots=True)
class GatewayCounters:
    """What the gateway did besides sending, from its own events: for the report.

    - ``deferred``: ``Telemetry.deferred`` (requests api_call handed to the queue);
    - ``waits_guard``: ``Telemetry.paused`` for a request already accepted (retry_worker, or a
      retry inline), i.e. a wait for the guard rather than a 503;
    - ``waits_budget``: budget refusals in retry_worker (each requeues or expires a message);
    - ``early_deliveries``: ``ChangeMessageVisibility`` by retry_worker on a message it did not
      send (delivered before its time);
    - ``paused_calls``: api_call's 503 answers (code ``PAUSED``);
    - ``expired_unsent``: requests that ended ``expired`` without ever reaching Kisi;
    - ``reasons``: ``Telemetry.finished`` by reason, or by status when it gave none;
    - ``late_sends``: attempts sent after the request's deadline, by the Lambda that sent them.
    """

    deferred: int = 0
    waits_budget: int = 0
    waits_guard: int = 0
    early_deliveries: int = 0
    paused_calls: int = 0
    expired_unsent: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    late_sends: dict[str, int] = field(default_factory=dict)

    def ended(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def final_of_status(status: str, reason: str | None) -> Final:
    """How the bench names the end the gateway reported with ``Telemetry.finished``.

    ``failed`` without a reason is a final 4xx (rejected); with one (``unknown_outcome``) the
    gateway gave up on a request it could not repeat.
    """
    match RecordStatus(status):
        case RecordStatus.SUCCEEDED:
            return Final.SUCCEEDED
        case RecordStatus.EXPIRED:
            return Final.EXPIRED
        case RecordStatus.FAILED:
            return Final.REJECTED if reason is None else Final.GAVE_UP
    raise ValueError(f"the gateway finished a request as {status!r}")


class Ledger:
    """The gateway's events, attributed to requests through the running virtual thread."""

    def __init__(self, engine: Engine, threads: VirtualThreads) -> None:
        self._engine = engine
        self._threads = threads
        self.counters = GatewayCounters()
        self.by_request: dict[str, TrackedCall] = {}  # request id -> the bench's request
        self.usage: dict[int, Usage] = {}  # the bench's request index -> what it used
        self.overhead = Usage()  # what no request was in hand for

    def serving(self) -> Serving:
        serving = self._threads.context
        if not isinstance(serving, Serving):
            raise RuntimeError(f"a gateway event in a thread that serves {serving!r}")
        return serving

    def request(self) -> TrackedCall:
        call = self.serving().call
        if call is None:
            raise RuntimeError("a gateway event outside any request")
        return call

    def meter(self) -> Usage:
        """The resources of the request the running thread serves."""
        return self.usage.setdefault(self.request().index, Usage())

    def meter_if_serving(self) -> Usage:
        """As :meth:`meter`, or the overhead when no request is in hand."""
        try:
            serving = self._threads.context
        except RuntimeError:  # the engine itself, not a virtual thread
            serving = None
        call = serving.call if isinstance(serving, Serving) else None
        return self.overhead if call is None else self.usage.setdefault(call.index, Usage())

    def finished(self, status: str, reason: str | None) -> None:
        call = self.request()
        final = final_of_status(status, reason)
        if final is Final.EXPIRED and call.attempts == 0:
            self.counters.expired_unsent += 1
        self.counters.ended(reason or status)
        call.end(self._engine.now, final, reason or "")

    def sending(self) -> TrackedCall:
        """An attempt of the current request is going out now."""
        serving = self.serving()
        call = self.request()
        serving.sent = True
        if self._engine.now > call.deadline:
            late = self.counters.late_sends
            late[serving.role.value] = late.get(serving.role.value, 0) + 1
        return call

    def paused(self) -> None:
        serving = self.serving()
        if serving.role is Role.RETRY_WORKER or serving.sent:
            self.counters.waits_guard += 1

    def refused(self) -> None:
        if self.serving().role is Role.RETRY_WORKER:
            self.counters.waits_budget += 1

    def postponed(self) -> None:
        serving = self.serving()
        if serving.role is Role.RETRY_WORKER and not serving.sent:
            self.counters.early_deliveries += 1

    def enqueued(self, message: RetryMessage) -> None:
        call = self.request()
        known = self.by_request.setdefault(message.request_id, call)
        if known is not call:
            raise RuntimeError(f"request id {message.request_id} serves two requests")

    def answered(self, call: TrackedCall, reply: Reply) -> None:
        """api_call's answer to ``call``: a 202 leaves it to the queue; a 503 from the guard
        ends it unsent; anything else must come after the gateway reported the end."""
        if reply.status == 202:
            if self.by_request.get(reply.headers.get("X-Gateway-Request-Id", "")) is not call:
                raise RuntimeError(f"request {call.index} deferred without its message")
            return
        if call.final is not None:
            return
        body = reply.json() or {}
        if reply.status == 503 and body.get("code") == GatewayErrorCode.PAUSED:
            self.counters.paused_calls += 1
            call.end(self._engine.now, Final.PAUSED, str(body.get("error", "")))
            return
        raise RuntimeError(
            f"request {call.index}: api_call answered {reply.status} {body} and never ended it"
        )


class _Telemetry(Telemetry):
    """The gateway's telemetry, unchanged, that also tells the ledger what ended and why."""

    def __init__(self, sink: MetricSink, ledger: Ledger) -> None:
        super().__init__(sink)
        self._ledger = ledger

    def finished(self, status: str, reason: str | None = None) -> None:
        super().finished(status, reason)
        self._ledger.finished(status, reason)

    def deferred(self) -> None:
        super().deferred()
        self._ledger.counters.deferred += 1

    def paused(self) -> None:
        super().paused()
        self._ledger.paused()


@dataclass(frozen=True, slots=True)
class _Kisi:
    """The library's Kisi port over the virtual network: the thread parks for the round trip."""

    kisi: VirtualKisi
    threads: VirtualThreads
    ledger: Ledger

    def send(self, call: KisiCall) -> AttemptResult:
        current = self.ledger.request()
        if (call.method, call.path) != (current.method, current.path):
            if call.method != "GET":
                raise RuntimeError(f"request {current.index} sent as {call.method} {call.path}")
            # The gateway's own safe read (a half-open probe, a GET /login lookup): it reaches
            # Kisi like any request, but belongs to no caller's request.
            own = TrackedCall(-1, call.method, call.path, f"GET {call.path}", math.inf)
            reply = self.threads.wait(self.kisi.request(own))
            return KisiResponse(reply.status, dict(reply.headers), reply.body)
        tracked = self.ledger.sending()
        reply = self.threads.wait(self.kisi.request(tracked))
        return KisiResponse(reply.status, dict(reply.headers), reply.body)


SERVICE_USER = KisiLogin(user_id=1, login_id=1)  # the simulator's first key (DEMO_KEY)


def _know_the_service_user(pipeline: InMemoryGateway) -> None:
    """The directory already holds ``GET /login``'s answer for the service login.

    The deployed directory keeps that answer for an hour, shared by every Lambda, so the
    lookup is one request per identity per hour: the scenarios measure that steady state, not
    a stack's first call (whose extra ``GET /login`` the virtual Kisi could not attribute to a
    caller's request).
    """
    who = pipeline.forwarder.callers.who(CONTEXT.api_key_id, CONTEXT.authorization, "GET /login")
    pipeline.directory.remember_login(who.identity, SERVICE_USER, math.inf)


class Gateway:
    """The whole gateway for one simulated Kisi user: api_calls, the queue and its workers."""

    name = "gateway"

    def __init__(
        self,
        engine: Engine,
        kisi: VirtualKisi,
        rng: RandomSource,
        threads: VirtualThreads,
        settings: Settings | None = None,
        store_op_s: float = STORE_OP_S,
    ) -> None:
        self.settings = settings or deployed_settings()
        self._threads = threads
        self.clock = VirtualClock(threads)
        self.ledger = ledger = Ledger(engine, threads)
        self._engine = engine
        self.sink = MeteredSink(ledger, self.settings.metrics_namespace)
        self.queue = VirtualQueue(engine)
        self.mapping = EventSourceMapping(engine, self.queue, self._invocation)
        pipeline = build_in_memory(
            self.settings, _Kisi(kisi, threads, ledger), self.clock, rng,
            telemetry=_Telemetry(self.sink, ledger),
        )
        self.records, self.budget, self.guard = pipeline.records, pipeline.budget, pipeline.guard
        _know_the_service_user(pipeline)
        charge = partial(self.clock.sleep, store_op_s)
        records = ChargedRecords(pipeline.records, charge, ledger)
        queue = ChargedQueue(self.queue, charge, ledger)
        budget = ChargedBudget(pipeline.budget, charge, ledger, self.settings.send_rate,
                               self.settings.rates())
        known_bad = pipeline.sender.known_bad
        if known_bad is not None:
            # No hints: every send looks its entries up, as if each Lambda's view of the
            # identity were older than the guard's cache (what the cost model assumes of the
            # guard's reads too); the deployed hint can only spare lookups.
            known_bad = replace(known_bad, store=ChargedKnownBad(known_bad.store, charge, ledger),
                                hints=None)
        sender = replace(pipeline.sender, budget=budget,
                         guard=MeteredGuard(pipeline.guard, ledger), known_bad=known_bad)
        screen = pipeline.forwarder.screen
        if screen is not None:
            screen = replace(screen, known_bad=known_bad)
        self.forwarder = replace(pipeline.forwarder, sender=sender, records=records, queue=queue,
                                 screen=screen)
        self.worker = replace(pipeline.worker, sender=sender, records=records, queue=queue)
        self._calls: list[TrackedCall] = []

    @property
    def counters(self) -> GatewayCounters:
        return self.ledger.counters

    def call(self, call: TrackedCall) -> Process[None]:
        """A caller's request: one api_call, in a virtual thread; returns when it answers."""
        yield InThread(self._threads, partial(self._api_call, call),
                       Serving(Role.API_CALL, call))

    def notes(self) -> dict[str, float]:
        """The queue's and the workers' figures, for the report."""
        return {
            "dlq_redriven": len(self.queue.redriven),
            "dlq_dead_lettered": len(self.queue.dead_lettered),
            "messages_sent": self.queue.sent,
            "invocations": self.mapping.invocations,
            "longest_invocation_s": self.mapping.longest_invocation_s,
            "guard_trips": len(self.guard.trips),
        }

    def metric_totals(self) -> dict[str, float]:
        """The gateway's own metrics (what CloudWatch would count), summed by name."""
        totals: dict[str, float] = {}
        for name, value, _, _ in self.sink.values:
            totals[name] = totals.get(name, 0.0) + value
        return totals

    def metering(self) -> contextlib.AbstractContextManager[None]:
        """Meter the library's log lines while the run lasts."""
        return metered_logs(self.ledger, self.settings.service_name)

    def usage(self) -> dict[str, Usage]:
        """What the requests used, by kind: answered by api_call (*synchronous*) or handed to
        the queue (*deferred*); calls the guard answered 503 are in neither."""
        deferred = {id(call) for call in self.ledger.by_request.values()}
        kinds: dict[str, Usage] = {"synchronous": Usage(), "deferred": Usage()}
        for call in self._calls:
            if call.final is Final.PAUSED and id(call) not in deferred:
                continue
            kind = kinds["deferred" if id(call) in deferred else "synchronous"]
            kind.requests += 1
            kind.add(self.ledger.usage.get(call.index, Usage()))
        return kinds

    def _api_call(self, call: TrackedCall) -> None:
        self._calls.append(call)
        started = self._engine.now
        settings = self.settings
        incoming = parse_call(
            method=call.method, path=call.path, query=[], body=None, is_base64=False,
            headers={}, policies=settings.policies, max_body_bytes=settings.max_body_bytes,
            default_wait_s=settings.default_wait_s, max_wait_s=settings.max_wait_s,
        )
        reply = self.forwarder.forward(incoming, CONTEXT)
        usage = self.ledger.meter()
        usage.api_requests += 1
        usage.lambda_run(self._engine.now - started)
        self.ledger.answered(call, reply)

    def _invocation(self, batch: list[Message]) -> Process[None]:
        """One retry_worker invocation, in a virtual thread."""
        yield InThread(self._threads, partial(self._retry_worker, batch),
                       Serving(Role.RETRY_WORKER))

    def _retry_worker(self, batch: list[Message]) -> None:
        """The batch in order, as Powertools' batch processor feeds it: DONE messages are
        deleted (by the event source), LATER ones stay for their visibility timeout."""
        serving = self.ledger.serving()
        share = 1 / len(batch)  # of the invocation, its ReceiveMessage and DeleteMessageBatch
        for message in batch:
            serving.call = self.ledger.by_request[message.body.request_id]
            serving.sent = False
            started = self._engine.now
            if self.worker.process(message.body, message.receipt_handle) is Disposition.DONE:
                self.queue.delete(message)
            usage = self.ledger.meter()
            usage.lambda_run(self._engine.now - started, share)
            usage.sqs_requests += 2 * share
        serving.call = None
