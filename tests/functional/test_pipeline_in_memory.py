"""The pipeline over the in-memory stores: api_call's forwarder and retry_worker's worker, with
a scripted Kisi and a fake clock. No moto, no sockets: each test reads as a story.

These pin the runners' side of the decisions (the tables are in tests/unit/test_decisions.py):
the budget hears about every 429, a copy delivered early is not sent early, the last attempt
ends the request inline and in the queue, the deadline is never passed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from kisi_gateway.config import Settings
from kisi_gateway.core.identity import Credential, KisiLogin
from kisi_gateway.core.lifecycle import Change, Event
from kisi_gateway.core.outcome import Transport
from kisi_gateway.core.ratelimit import ANYONE, PACE, REASON_RATE, Booking, Grant
from kisi_gateway.core.records import (
    AttemptEntry,
    RecordStatus,
    RequestRecord,
    RetryMessage,
    StoredResponse,
)
from kisi_gateway.pipeline import sending
from kisi_gateway.pipeline.callers import Who
from kisi_gateway.pipeline.calls import IncomingCall, parse_call
from kisi_gateway.pipeline.forwarding import CallContext
from kisi_gateway.pipeline.kisi_http import AttemptResult, KisiCall, KisiResponse, TransportFailure
from kisi_gateway.pipeline.replies import Reply
from kisi_gateway.pipeline.retrying import Disposition
from kisi_gateway.pipeline.sending import Sender, SystemClock
from kisi_gateway.stores.memory import MemoryDirectory, MemoryQueue, MemoryRecordStore
from kisi_gateway.stores.ports import (
    Applied,
    BudgetUnavailableError,
    QueueError,
    RecordStoreError,
    SendBudget,
)
from kisi_gateway.wiring import InMemoryGateway, build_in_memory
from tests.harness import FakeClock

START = 1_800_000_000.0
SLOT = 1 / (5 * PACE)  # the budget's spacing: Kisi's 5 req/s, paced at 95 %
EVENT_SLOT = 1 / PACE  # POST /event_sets: Kisi's 1 per second, paced the same


def at(moment: float) -> object:
    """A moment, to the microsecond (pytest.approx's default relative tolerance, 1e-6, is half
    an hour at START)."""
    return pytest.approx(moment, rel=0, abs=1e-6)


USER_BUCKET = "user-1"  # the service key's Kisi user, as GET /login names it
OK_BODY = b'{"message": "Unlocked!"}'
SERVICE_LOGIN = Credential("KISI-LOGIN", "sim-demo-key")  # build_in_memory's default tenant's
# What Kisi answers next: a status (and headers), a transport failure, or something that
# happens while the call is on the wire (then the status it answers).
Step = tuple[int, dict[str, str], bytes] | Transport | tuple[Callable[[], object], int]


class LambdaDiedError(Exception):
    """The execution environment stopped mid-send (a timeout, a crash)."""


@dataclass
class ScriptedKisi:
    """Answers from a script, then 200; records every call and when it came."""

    clock: FakeClock
    script: deque[Step] = field(default_factory=deque)
    sent: list[tuple[float, str, str]] = field(default_factory=list)
    calls: list[KisiCall] = field(default_factory=list)
    lookups: int = 0
    looked_up: list[Credential | None] = field(default_factory=list)
    login_answer: int | Transport = 200  # what GET /login answers

    def send(self, call: KisiCall) -> AttemptResult:
        if (call.method, call.path) == ("GET", "/login"):  # who the key belongs to
            self.lookups += 1
            self.looked_up.append(call.credential)
            if isinstance(self.login_answer, Transport):
                return TransportFailure(self.login_answer)
            if self.login_answer != 200:
                return self._answer(self.login_answer, {}, None)
            return KisiResponse(200, {}, b'{"id": 7, "user_id": 1}')
        self.sent.append((self.clock.now(), call.method, call.path))
        self.calls.append(call)
        step = self.script.popleft() if self.script else (200, {}, OK_BODY)
        if isinstance(step, Transport):
            return TransportFailure(step)
        first, rest = step[0], step[1:]
        if callable(first):
            first()  # may raise LambdaDiedError
            return self._answer(rest[0], {}, None)
        return self._answer(first, *rest)

    def _answer(self, status: int, headers: dict[str, str], body: bytes | None) -> KisiResponse:
        if body is None:
            body = OK_BODY if status < 400 else b'{"error": "x", "code": "1"}'
        return KisiResponse(status, {"content-type": "application/json", **headers}, body)

    def answer(self, *statuses: int, **headers: str) -> None:
        self.script.extend((status, dict(headers), None) for status in statuses)

    def reply(self, status: int, body: bytes, **headers: str) -> None:
        self.script.append((status, dict(headers), body))

    def fail(self, kind: Transport) -> None:
        self.script.append(kind)

    def meanwhile(self, action: Callable[[], object], status: int = 200) -> None:
        """While the next call is on the wire, ``action`` happens; then Kisi answers."""
        self.script.append((action, status))

    def crash(self) -> None:
        """The next call never comes back: the Lambda sending it dies."""
        def die() -> None:
            raise LambdaDiedError
        self.script.append((die, 200))


def context(caller: str, authorization: str | None) -> CallContext:
    """Where a call came from: API Gateway's API key id ``caller`` and its Authorization."""
    return CallContext(caller, authorization, "/Prod", lambda url: url)


@dataclass
class World:
    clock: FakeClock
    kisi: ScriptedKisi
    gw: InMemoryGateway
    settings: Settings

    def call(self, method: str, path: str, *, prefer: str | None = None,
             key: str | None = None, query: tuple[tuple[str, str], ...] = (),
             body: bytes | str | None = None, caller: str = "me",
             authorization: str | None = None) -> Reply:
        incoming = self.incoming(method, path, prefer=prefer, key=key, query=query, body=body)
        return self.gw.forwarder.forward(incoming, context(caller, authorization))

    def incoming(self, method: str, path: str, *, prefer: str | None = None,
                 key: str | None = None, query: tuple[tuple[str, str], ...] = (),
                 body: bytes | str | None = None) -> IncomingCall:
        headers = {}
        if prefer:
            headers["Prefer"] = prefer
        if key:
            headers["Idempotency-Key"] = key
        return parse_call(
            method=method, path=path, query=list(query),
            body=body.decode() if isinstance(body, bytes) else body, is_base64=False,
            headers=headers, policies=self.settings.policies, max_body_bytes=200_000,
            default_wait_s=5, max_wait_s=25,
        )

    def lookup(self, request_id: str, caller: str = "me",
               authorization: str | None = None) -> Reply:
        return self.gw.forwarder.lookup(request_id, context(caller, authorization))

    def who(self, caller: str = "me", authorization: str | None = None) -> Who:
        """Who a call from ``caller`` acts as (its scope, its credential)."""
        return self.gw.forwarder.callers.who(caller, authorization, "GET /locks/{id}")

    def use_budget(self, budget: SendBudget) -> None:
        """Send with ``budget`` from now on, once the service key's Kisi user is known (its
        ``GET /login`` booked in the real budget), so ``budget`` hears only of attempts."""
        assert self.gw.sender.acting(self.who()).bucket == USER_BUCKET
        self.gw.sender.budget = budget

    def deliver(self) -> list[Disposition]:
        """One retry_worker pass over what is visible now; done messages are deleted."""
        results = []
        for message, handle in self.gw.queue.receive(10):
            disposition = self.gw.worker.process(message, handle)
            if disposition is Disposition.DONE:
                self.gw.queue.delete(handle)
            results.append(disposition)
        return results

    def stored(self, reply: Reply) -> RequestRecord:
        stored = self.gw.records.get(reply.headers["X-Gateway-Request-Id"])
        assert stored is not None
        return stored

    def record(self, reply: Reply) -> RecordStatus | None:
        stored = self.gw.records.get(reply.headers["X-Gateway-Request-Id"])
        return stored.status if stored else None

    def metric(self, name: str, **dimensions: str) -> float:
        return self.gw.sink.total(name, **dimensions)

    @property
    def queue(self) -> RecordingQueue:
        assert isinstance(self.gw.queue, RecordingQueue)
        return self.gw.queue

    @property
    def records(self) -> FlakyRecords:
        assert isinstance(self.gw.records, FlakyRecords)
        return self.gw.records


class RecordingQueue(MemoryQueue):
    """The in-memory queue, noting what the runners asked of it; ``enqueue`` can fail."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.enqueued: list[tuple[RetryMessage, int]] = []
        self.postponed: list[int] = []
        self.failing = False

    def enqueue(self, message: RetryMessage, delay_s: int) -> None:
        if self.failing:
            raise QueueError("SQS is unavailable")
        self.enqueued.append((message, delay_s))
        super().enqueue(message, delay_s)

    def postpone(self, receipt_handle: str, delay_s: int) -> None:
        self.postponed.append(delay_s)
        super().postpone(receipt_handle, delay_s)


class FlakyRecords(MemoryRecordStore):
    """The in-memory record store, whose operations named in ``failing`` fail (``apply`` by
    event: ``"apply:finish"``); ``before["apply:<event>"]`` runs once just before that write
    (another Lambda's write landing first)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()
        self.before: dict[str, Callable[[], object]] = {}

    def create(self, record: RequestRecord) -> bool:
        self._maybe_fail("create")
        return super().create(record)

    def get(self, request_id: str) -> RequestRecord | None:
        self._maybe_fail("get")
        return super().get(request_id)

    def apply(self, request_id: str, change: Change) -> Applied | None:
        self._maybe_fail(f"apply:{change.event}")
        hook = self.before.pop(f"apply:{change.event}", None)
        if hook is not None:
            hook()
        return super().apply(request_id, change)

    def _maybe_fail(self, operation: str) -> None:
        if operation in self.failing:
            raise RecordStoreError(f"DynamoDB is unavailable ({operation})")


def world_with(environ: Mapping[str, str] | None = None,
               kisi: Callable[[FakeClock], ScriptedKisi] = ScriptedKisi) -> World:
    """A fresh world: settings from ``environ``, a scripted Kisi of type ``kisi``, records
    that can be made to fail and a queue that remembers every message."""
    clock = FakeClock(START)
    scripted = kisi(clock)
    settings = Settings.from_env(environ or {})
    gw = build_in_memory(settings, scripted, clock, lambda: 1.0, records=FlakyRecords(),
                         queue=RecordingQueue(clock.now))
    return World(clock, scripted, gw, settings)


# These stories are about the runners, not preflight (tests/functional/test_account_safety.py):
# their creates carry no body, which Kisi's documented table would refuse before any send.
RUNNERS_ONLY = {"KISI_API_OVERRIDES": '{"body_checks": false}'}


def make_world() -> World:
    return world_with(RUNNERS_ONLY)


@pytest.fixture
def world() -> World:
    return make_world()


def test_a_success_is_answered_inline_and_writes_nothing(world: World) -> None:
    reply = world.call("GET", "/locks/1")
    assert reply.status == 200
    assert world.gw.records.all() == []
    assert len(world.gw.queue) == 0


def test_every_429_is_told_to_the_budget(world: World) -> None:
    """Isolated 429s are only counted; a third in a row is an overload: the budget slows down
    by 0.7 and closes its gate for Kisi's Retry-After."""
    world.kisi.answer(429, 429, 429, **{"retry-after": "3"})
    for n in (1, 2):
        assert world.call("GET", f"/locks/{n}", prefer="respond-async").status == 202
    state = world.gw.budget.state(USER_BUCKET)
    assert (state.rate, state.gate_until, state.strikes) == (5.0, 0.0, 2)
    assert world.call("GET", "/locks/3", prefer="respond-async").status == 202
    state = world.gw.budget.state(USER_BUCKET)
    assert state.rate == pytest.approx(3.5)
    assert state.gate_until == at(world.kisi.sent[-1][0] + 3)


def test_429s_within_the_cooldown_are_one_overload(world: World) -> None:
    world.kisi.answer(429, 429, 429, 429)
    for n in range(4):
        world.call("GET", f"/locks/{n + 1}", prefer="respond-async")
    assert world.gw.budget.state(USER_BUCKET).rate == pytest.approx(3.5)
    assert len(world.kisi.sent) == 4


def test_inline_retries_end_at_the_last_attempt(world: World) -> None:
    """An unlock gets 4 attempts; the caller waits 25 s, so all 4 happen inline."""
    world.kisi.answer(503, 503, 503, 503, 503)
    reply = world.call("POST", "/locks/1/unlock", prefer="wait=25")
    assert reply.status == 503  # Kisi's last answer, passed through
    assert reply.headers["X-Gateway-Attempts"] == "4"
    assert len(world.kisi.sent) == 4
    assert len(world.gw.queue) == 0


def test_the_queue_ends_at_the_last_attempt_and_dead_letters_it(world: World) -> None:
    world.kisi.answer(*[503] * 6)
    reply = world.call("POST", "/locks/1/unlock", prefer="respond-async")
    assert reply.status == 202
    for _ in range(10):
        world.clock.advance(9)
        world.deliver()
    stored = world.gw.records.get(reply.headers["X-Gateway-Request-Id"])
    assert stored is not None
    assert (stored.status, stored.reason) == (RecordStatus.EXPIRED, "attempts_exhausted")
    assert stored.attempt_count == 4
    assert len(world.kisi.sent) == 4
    assert [reason for _, reason in world.gw.queue.dead_lettered] == ["attempts_exhausted"]


def test_a_copy_delivered_early_is_not_sent_before_its_time(world: World) -> None:
    world.kisi.answer(503)
    reply = world.call("GET", "/locks/1", prefer="respond-async")
    stored = world.gw.records.get(reply.headers["X-Gateway-Request-Id"])
    assert stored is not None
    assert stored.next_attempt_at == START + 2
    # A duplicate of its message arrives at once (SQS delivers at least once).
    world.gw.queue.enqueue(message_for(stored.request_id, world), 0)
    assert world.deliver() == [Disposition.LATER]
    assert len(world.kisi.sent) == 1  # not sent early
    assert world.queue.postponed == [2]  # hidden until its time, not the visibility timeout
    world.clock.advance(2)
    assert world.deliver() == [Disposition.DONE, Disposition.DONE]  # it and the original
    assert len(world.kisi.sent) == 2
    assert world.kisi.sent[1][0] == START + 2


def message_for(request_id: str, world: World) -> RetryMessage:
    """A copy of the message api_call queued for a ``GET /locks/1``."""
    return RetryMessage(request_id, "GET", "/locks/1", (), None, 1, START + 86_400, "read",
                        "GET /locks/{id}", world.clock.now())


def test_an_unlock_is_never_sent_after_its_deadline(world: World) -> None:
    world.kisi.answer(503)
    reply = world.call("POST", "/locks/1/unlock", prefer="respond-async")
    world.clock.advance(31)
    world.deliver()
    assert world.record(reply) is RecordStatus.EXPIRED
    assert all(at < START + 30 for at, _, _ in world.kisi.sent)
    assert [reason for _, reason in world.gw.queue.dead_lettered] == ["deadline"]


def test_a_duplicate_of_an_ended_request_never_reaches_kisi(world: World) -> None:
    world.kisi.answer(503)
    reply = world.call("GET", "/locks/1", prefer="respond-async")
    world.clock.advance(2)
    world.deliver()
    assert world.record(reply) is RecordStatus.SUCCEEDED
    stored = world.gw.records.get(reply.headers["X-Gateway-Request-Id"])
    assert stored is not None
    world.gw.queue.enqueue(message_for(stored.request_id, world), 0)
    assert world.deliver() == [Disposition.DONE]
    assert len(world.kisi.sent) == 2


def test_a_repeated_idempotency_key_replays_without_calling_kisi(world: World) -> None:
    group = b'{"group": {"name": "Staff"}}'
    first = world.call("POST", "/groups", key="k1", body=group)
    again = world.call("POST", "/groups", key="k1", body=group)
    assert (first.status, again.status) == (200, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(world.kisi.sent) == 1


def test_the_401_fast_path_pauses_after_five(world: World) -> None:
    world.kisi.answer(*[401] * 5)
    for n in range(5):
        assert world.call("GET", f"/locks/{n}").status == 401
    paused = world.call("GET", "/locks/9")
    assert paused.status == 503
    assert paused.json()["code"] == "9e0503"
    assert len(world.kisi.sent) == 5


# -- what reaches Kisi, what the caller gets back ------------------------------------------

JSON = "application/json"
GROUP = b'{"group": {"name": "Ops"}}'
QUERY = (("a", "1"), ("b", "2"))
DAY = 86_400


def error_body(message: str, code: str) -> dict[str, str]:
    return {"error": message, "code": code}


def test_a_call_reaches_kisi_as_it_was_sent(world: World) -> None:
    reply = world.call("POST", "/groups", query=QUERY, body=GROUP)
    assert world.kisi.calls == [KisiCall("POST", "/groups", QUERY, GROUP, SERVICE_LOGIN)]
    request_id = reply.headers["X-Gateway-Request-Id"]
    assert len(request_id) == 32
    assert reply == Reply(200, {"Content-Type": JSON, "X-Gateway-Request-Id": request_id,
                                "X-Gateway-Attempts": "1"}, OK_BODY)
    assert world.metric("Attempts") == 1
    assert world.metric("AttemptsByTenant", Tenant="default", Credential="service") == 1
    assert world.metric("Finished", Status="succeeded") == 1
    assert world.gw.sink.total("GuardPaused") == 0


def test_each_call_gets_its_own_id(world: World) -> None:
    ids = {world.call("GET", "/locks/1").headers["X-Gateway-Request-Id"] for _ in range(3)}
    assert len(ids) == 3


def test_a_deferred_call_is_recorded_and_queued_as_it_was_sent(world: World) -> None:
    world.kisi.answer(503)
    reply = world.call("POST", "/groups", prefer="respond-async", query=QUERY, body=GROUP)
    request_id = reply.headers["X-Gateway-Request-Id"]
    deadline = START + DAY  # a create: 24 h
    assert reply.status == 202
    assert reply.headers == {
        "Content-Type": JSON, "Location": f"/Prod/requests/{request_id}", "Retry-After": "2",
        "X-Gateway-Request-Id": request_id, "X-Gateway-Attempts": "1",
    }
    assert reply.json() == {
        "request_id": request_id, "status": "queued", "attempts": 1,
        "next_attempt_at": START + 2, "deadline": deadline,
        "last_outcome": {"class": "server_error", "status": 503},
    }
    fingerprint = world.incoming("POST", "/groups", query=QUERY, body=GROUP).fingerprint()
    assert world.stored(reply) == RequestRecord(
        request_id=request_id, status=RecordStatus.QUEUED, method="POST", path="/groups",
        route="POST /groups", policy="create", created_at=START, deadline=deadline,
        expires_at=int(START + 7 * DAY), attempts=(AttemptEntry(START, "server_error", 503, 2),),
        next_attempt_at=START + 2, scope=world.who().scope, fields_hash=fingerprint,
        tenant="default", caller="me", credential_kind="service", caller_mode="auto", sealed=None,
    )
    assert world.queue.enqueued == [(RetryMessage(
        request_id, "POST", "/groups", QUERY, GROUP.decode(), 1, deadline, "create",
        "POST /groups", START), 2)]
    assert (world.metric("Deferred"), world.metric("RetryDelay")) == (1, 2)
    assert world.metric("Finished", Status="succeeded") == 0


def test_a_keyed_deferral_is_the_same_and_a_repeat_gets_the_same_202(world: World) -> None:
    world.kisi.answer(503)
    reply = world.call("POST", "/groups", prefer="respond-async", key="k1", body=GROUP)
    record = world.stored(reply)
    assert (record.status, record.attempts, record.next_attempt_at, record.claim_until) == (
        RecordStatus.QUEUED, (AttemptEntry(START, "server_error", 503, 2),), START + 2, 0.0)
    assert [delay for _, delay in world.queue.enqueued] == [2]
    again = world.call("POST", "/groups", prefer="respond-async", key="k1", body=GROUP)
    assert again == reply.with_headers(**{"Idempotent-Replayed": "true"})
    assert len(world.kisi.calls) == 1
    assert len(world.queue.enqueued) == 1


def test_a_call_the_budget_cannot_fit_is_queued_unsent(world: World) -> None:
    """Kisi's Retry-After closed the gate for 30 s: a caller is not kept waiting that long."""
    world.kisi.answer(429, **{"retry-after": "30"})
    world.call("GET", "/locks/1", prefer="respond-async")
    reply = world.call("GET", "/locks/2", prefer="wait=10")
    assert reply.status == 202
    assert reply.json()["last_outcome"] is None
    assert reply.headers["X-Gateway-Attempts"] == "0"
    record = world.stored(reply)
    assert (record.attempts, record.next_attempt_at) == ((), START + 30)
    message, delay = world.queue.enqueued[-1]
    assert (message.path, message.prior_attempts, delay) == ("/locks/2", 0, 30)
    assert len(world.kisi.calls) == 1


def test_inline_retries_wait_each_delay_then_answer(world: World) -> None:
    world.kisi.answer(503, 503)
    reply = world.call("GET", "/locks/1", prefer="wait=10")
    assert [at for at, _, _ in world.kisi.sent] == [START, START + 2, START + 6]
    assert (reply.status, reply.headers["X-Gateway-Attempts"]) == (200, "3")
    assert world.metric("RetryDelay") == 2 + 4
    assert world.gw.records.all() == []


def test_an_unlock_that_cannot_be_sent_before_its_deadline_ends_unsent(world: World) -> None:
    world.kisi.answer(429, **{"retry-after": "40"})
    world.call("GET", "/locks/1", prefer="respond-async")  # the gate closes for 40 s
    reply = world.call("POST", "/locks/2/unlock")
    request_id = reply.headers["X-Gateway-Request-Id"]
    assert reply == Reply(504, {"Content-Type": JSON, "X-Gateway-Request-Id": request_id,
                                "X-Gateway-Attempts": "0"}, reply.body)
    assert reply.json() == error_body(
        "Kisi asked to wait (Retry-After) until after this request's deadline; the gateway "
        "honours it, so the request ended unsent", "9e0509")
    assert len(world.kisi.calls) == 1
    assert world.metric("FinishedByReason", Status="expired",
                        Reason="retry_after_past_deadline") == 1


def test_a_create_that_timed_out_is_not_repeated_and_says_so(world: World) -> None:
    world.kisi.fail(Transport.READ_TIMEOUT)
    reply = world.call("POST", "/groups", body=GROUP, prefer="wait=25")
    assert (reply.status, reply.headers["X-Gateway-Attempts"]) == (504, "1")
    assert reply.json() == error_body(
        "Kisi did not answer after the request was sent; it may have been applied and this "
        "route does not repeat it", "9e0504")
    assert len(world.kisi.calls) == 1
    assert world.metric("NetworkErrors") == 1
    assert world.metric("FinishedByReason", Status="failed", Reason="unknown_outcome") == 1


def test_a_connect_error_is_retried_inline(world: World) -> None:
    world.kisi.fail(Transport.CONNECT_ERROR)
    reply = world.call("POST", "/groups", body=GROUP, prefer="wait=10")
    assert (reply.status, reply.headers["X-Gateway-Attempts"]) == (200, "2")
    assert [at for at, _, _ in world.kisi.sent] == [START, START + 2]


def test_kisis_codes_and_deprecations_are_counted(world: World) -> None:
    world.kisi.reply(403, b'{"error": "Forbidden", "code": "abc123"}')
    world.kisi.answer(200, 200, deprecation="true")
    world.kisi.answer(200, sunset="Wed, 01 Jan 2031 00:00:00 GMT")
    world.call("GET", "/locks/1")
    world.call("GET", "/locks/2")
    world.call("GET", "/locks/3")
    world.call("GET", "/places/1")
    world.call("GET", "/users/1")
    assert world.metric("BadRequestsByCode", Status="403", Code="abc123") == 1
    assert world.metric("Deprecated", Route="GET /locks/{id}") == 1  # once per route
    assert world.metric("Deprecated", Route="GET /places/{id}") == 1
    assert world.metric("Deprecated", Route="GET /users/{id}") == 0


def test_a_retry_after_date_closes_the_gate_and_sets_the_next_attempt(world: World) -> None:
    at = format_datetime(datetime.fromtimestamp(START + 30, UTC), usegmt=True)
    world.kisi.answer(429, **{"retry-after": at})
    reply = world.call("GET", "/locks/1", prefer="respond-async")
    assert world.gw.budget.state(USER_BUCKET).gate_until == START + 30
    assert world.stored(reply).next_attempt_at == START + 30


def test_a_429_on_a_route_with_its_own_limit_is_counted_in_that_route(world: World) -> None:
    """The 429 is a strike in the route's own bucket (three in a row would slow it), and the
    rate is left as it was."""
    world.kisi.answer(429)
    world.call("POST", "/event_sets", body=b"{}", prefer="respond-async")
    route = world.gw.budget.state(USER_BUCKET, "POST /event_sets")
    assert (route.rate, route.strikes) == (1.0, 1)


@pytest.mark.parametrize("authorization", [None, "KISI-LOGIN own-key"])
def test_event_sets_within_a_second_wait_for_their_slots(
    world: World, authorization: str | None,
) -> None:
    """POST /event_sets: one per second (Kisi). The budget books such a slot only within one
    account interval (0.2 s) of the account's next one; a caller that waits (5 s, a Kisi
    client 4 s) gets each one, sent on the second, not a 202 or a 429 half a second in."""
    replies = [world.call("POST", "/event_sets", body=b"{}", authorization=authorization)
               for _ in range(3)]
    assert [reply.status for reply in replies] == [200, 200, 200]
    assert [at for at, _, _ in world.kisi.sent] == [
        START, START + EVENT_SLOT, START + 2 * EVENT_SLOT]
    assert world.gw.records.all() == []


class StandInBudget:
    """A send budget that decides grants its own way (``acquire``) and ignores outcomes."""

    def acquire(self, bucket: str, route_key: str, now: float,
                max_wait_s: float = 0.0,
                booking: Booking = ANYONE) -> Grant:
        raise NotImplementedError

    def observe(self, bucket: str, route_key: str, outcome: object,
                retry_after_s: float | None, now: float) -> None:
        return None


@dataclass
class ScriptedBudget(StandInBudget):
    """A budget answering from a script; notes each ask (bucket, route, when, how far ahead)."""

    grants: deque[Grant]
    asked: list[tuple[str, str, float, float]] = field(default_factory=list)

    def acquire(self, bucket: str, route_key: str, now: float,
                max_wait_s: float = 0.0,
                booking: Booking = ANYONE) -> Grant:
        self.asked.append((bucket, route_key, now, max_wait_s))
        return self.grants.popleft()


def test_a_refused_slot_within_the_wait_is_asked_for_again_just_before_it(
    world: World,
) -> None:
    """A read books as far ahead as its caller waits (5 s): told "3 s" anyway (a route limit,
    a fair share), it asks again just before then, with what is left of its wait."""
    budget = ScriptedBudget(deque([Grant(False, 3.0, REASON_RATE), Grant(True, 1.0)]))
    world.use_budget(budget)
    reply = world.call("GET", "/locks/1")
    assert reply.status == 200
    [(first, first_at, first_wait), (second, second_at, second_wait)] = [
        (route, now - START, wait) for _, route, now, wait in budget.asked]
    assert (first, first_at, first_wait) == ("GET /locks/{id}", 0.0, 5.0)
    assert second == "GET /locks/{id}"
    assert second_at == pytest.approx(3.0 - 0.05)
    assert second_wait == pytest.approx(5.0 - second_at)
    assert [at - START for at, _, _ in world.kisi.sent] == [pytest.approx(second_at + 1.0)]


@dataclass
class FarBudget(StandInBudget):
    """A budget whose next slot is always ``wait_s`` ahead, beyond what a call may book."""

    wait_s: float
    asked: int = 0

    def acquire(self, bucket: str, route_key: str, now: float,
                max_wait_s: float = 0.0,
                booking: Booking = ANYONE) -> Grant:
        self.asked += 1
        return Grant(False, self.wait_s, REASON_RATE)


@dataclass
class LateBudget(StandInBudget):
    """A budget that grants a slot ``wait_s`` ahead, however far that is."""

    wait_s: float

    def acquire(self, bucket: str, route_key: str, now: float,
                max_wait_s: float = 0.0,
                booking: Booking = ANYONE) -> Grant:
        return Grant(True, self.wait_s)


def test_a_caller_asks_the_budget_a_bounded_number_of_times(world: World) -> None:
    budget = FarBudget(1.5)
    world.use_budget(budget)
    reply = world.call("GET", "/locks/1", prefer="wait=25")
    assert reply.status == 202
    assert budget.asked == 10  # bounded: ten asks in all, then the call is deferred
    assert world.kisi.calls == []


def test_a_slot_past_the_deadline_is_never_used(world: World) -> None:
    world.use_budget(LateBudget(31.0))
    reply = world.call("POST", "/locks/1/unlock", prefer="wait=25")
    assert reply.status == 504
    assert reply.json()["code"] == "9e0508"
    assert world.kisi.calls == []


# -- an Idempotency-Key repeated --------------------------------------------------------------


def test_a_key_reused_for_another_request_is_refused(world: World) -> None:
    first = world.call("POST", "/groups", key="k1", body=GROUP)
    other = world.call("POST", "/groups", key="k1", body=b'{"group": {"name": "Dev"}}')
    assert other == Reply(422, {"Content-Type": JSON,
                                "X-Gateway-Request-Id": first.headers["X-Gateway-Request-Id"]},
                          other.body)
    assert other.json() == error_body(
        "Idempotency-Key was already used for a different request", "9e0422")
    assert len(world.kisi.calls) == 1


def test_the_same_key_from_another_caller_is_another_request(world: World) -> None:
    first = world.call("POST", "/groups", key="k1", body=GROUP)
    other = world.call("POST", "/groups", key="k1", body=GROUP, caller="someone else")
    assert (first.status, other.status) == (200, 200)
    assert first.headers["X-Gateway-Request-Id"] != other.headers["X-Gateway-Request-Id"]
    assert len(world.kisi.calls) == 2


def test_a_repeat_while_the_first_is_sending_is_told_to_come_back(world: World) -> None:
    repeats: list[Reply] = []
    world.kisi.meanwhile(lambda: repeats.append(world.call("POST", "/groups", key="k1")))
    first = world.call("POST", "/groups", key="k1")
    request_id = first.headers["X-Gateway-Request-Id"]
    assert first.status == 200
    [repeat] = repeats
    assert repeat == Reply(409, {"Content-Type": JSON, "Retry-After": "1",
                                 "X-Gateway-Request-Id": request_id,
                                 "Idempotent-Replayed": "true"}, repeat.body)
    assert repeat.json() == error_body(
        "a request with this Idempotency-Key is in progress", "9e0490")
    assert len(world.kisi.calls) == 1


def test_a_keyed_call_whose_end_cannot_be_written_still_answers(world: World) -> None:
    world.records.failing.add("apply:finish")
    reply = world.call("POST", "/groups", key="k1")
    assert reply.status == 200
    assert world.record(reply) is RecordStatus.SENDING
    world.records.failing.clear()
    assert world.call("POST", "/groups", key="k1").status == 409  # until its lease lapses


LEASE = 5 + 13.05 + 5  # the caller's wait + connect and read timeouts + slack


def crashed_first_call(world: World, method: str, path: str) -> str:
    """A keyed call whose Lambda died while Kisi had it: its record stays ``sending``."""
    world.kisi.crash()
    with pytest.raises(LambdaDiedError):
        world.call(method, path, key="k1")
    [record] = world.gw.records.all()
    assert record.status is RecordStatus.SENDING
    assert record.claim_until == at(START + LEASE)
    return record.request_id


def test_a_repeat_takes_over_a_vanished_unlock_and_sends_it(world: World) -> None:
    request_id = crashed_first_call(world, "POST", "/locks/1/unlock")
    world.clock.advance(LEASE - 0.01)
    assert world.call("POST", "/locks/1/unlock", key="k1").status == 409  # the lease still runs
    world.clock.advance(0.02)
    took_over = world.clock.now()
    leases: list[float] = []
    world.kisi.answer(503)  # and the take-over retries inline, within its own wait
    world.kisi.meanwhile(lambda: leases.append(world.gw.records.get(request_id).claim_until))
    reply = world.call("POST", "/locks/1/unlock", key="k1")
    assert (reply.status, reply.headers["X-Gateway-Attempts"]) == (200, "2")
    assert [at for at, _, _ in world.kisi.sent] == [START, took_over, took_over + 1]
    assert leases == [at(took_over + LEASE)]
    record = world.gw.records.get(request_id)
    assert record is not None
    assert (record.status, record.deadline) == (RecordStatus.SUCCEEDED, START + 30)


def test_a_vanished_unlock_repeated_after_its_deadline_is_not_sent(world: World) -> None:
    crashed_first_call(world, "POST", "/locks/1/unlock")
    world.clock.advance(31)
    reply = world.call("POST", "/locks/1/unlock", key="k1")
    assert (reply.status, reply.json()["code"]) == (504, "9e0508")
    assert len(world.kisi.calls) == 1


def test_a_vanished_create_ends_as_an_unknown_outcome(world: World) -> None:
    request_id = crashed_first_call(world, "POST", "/groups")
    world.clock.advance(LEASE + 1)
    reply = world.call("POST", "/groups", key="k1")
    assert reply == Reply(504, {"Content-Type": JSON, "X-Gateway-Request-Id": request_id,
                                "X-Gateway-Attempts": "0"}, reply.body)
    assert reply.json()["code"] == "9e0504"
    record = world.gw.records.get(request_id)
    assert record is not None
    assert (record.status, record.reason) == (RecordStatus.FAILED, "unknown_outcome")
    assert world.metric("FinishedByReason", Status="failed", Reason="unknown_outcome") == 1
    assert len(world.kisi.calls) == 1


def test_of_two_repeats_taking_over_at_once_one_is_told_to_come_back(world: World) -> None:
    request_id = crashed_first_call(world, "POST", "/groups")
    world.clock.advance(LEASE + 1)
    others: list[Reply] = []
    world.records.before["apply:take_over"] = lambda: others.append(
        world.call("POST", "/groups", key="k1"))
    reply = world.call("POST", "/groups", key="k1")
    assert [other.json()["code"] for other in others] == ["9e0504"]  # it took over, and ended
    assert reply == Reply(409, {"Content-Type": JSON, "Retry-After": "1",
                                "X-Gateway-Request-Id": request_id}, reply.body)
    assert len(world.kisi.calls) == 1


def test_a_take_over_overtaken_by_the_slow_first_call_still_answers(world: World) -> None:
    """The first call was only slow: its own answer lands between the repeat's take-over and
    the repeat's end. The repeat, which never saw Kisi's answer, says the outcome is unknown
    (true for it); the record keeps Kisi's answer for GET /requests."""
    request_id = crashed_first_call(world, "POST", "/groups")
    world.clock.advance(LEASE + 1)
    answer = StoredResponse(200, {"content-type": JSON}, OK_BODY)
    world.records.before["apply:finish"] = lambda: world.gw.records.apply(request_id, Change(
        Event.FINISH, state=RecordStatus.SENDING, status=RecordStatus.SUCCEEDED,
        entries=(AttemptEntry(START, "success", 200, None),), response=answer))
    reply = world.call("POST", "/groups", key="k1")
    assert (reply.status, reply.headers["X-Gateway-Attempts"]) == (504, "0")
    assert reply.json()["code"] == "9e0504"
    record = world.gw.records.get(request_id)
    assert record is not None
    assert (record.status, record.response) == (RecordStatus.SUCCEEDED, answer)
    assert len(world.kisi.calls) == 1


# -- GET /requests/{id} ----------------------------------------------------------------------


def test_a_record_is_shown_to_its_caller_only(world: World) -> None:
    world.kisi.answer(503)
    reply = world.call("GET", "/locks/1", prefer="respond-async")
    request_id = reply.headers["X-Gateway-Request-Id"]
    shown = world.lookup(request_id)
    assert (shown.status, shown.headers) == (200, {"Content-Type": JSON,
                                                   "X-Gateway-Request-Id": request_id})
    assert shown.json() == world.stored(reply).public()
    for other_id, caller in [(request_id, "someone else"), ("0" * 32, "me"), ("ab-cd", "me"),
                            ("a" * 65, "me")]:
        missing = world.lookup(other_id, caller)
        assert (missing.status, missing.headers) == (404, {"Content-Type": JSON})
        assert missing.json() == error_body("no such request", "9e0440")


def test_a_lookup_checks_the_id_before_asking_the_store(world: World) -> None:
    world.records.failing.add("get")
    unavailable = world.lookup("a" * 64)
    assert (unavailable.status, unavailable.headers) == (
        503, {"Content-Type": JSON, "Retry-After": "2"})
    assert unavailable.json() == error_body("request records are unavailable", "9e0530")
    assert world.lookup("a" * 65).status == 404
    assert world.lookup("ab-cd").status == 404


# -- the gateway's own stores failing ---------------------------------------------------------

STORE_DOWN = error_body("the gateway could not reach its own store; retry later", "9e0530")


@dataclass
class DownBudget(StandInBudget):
    """A budget store that answers ``answers`` times, then is unreachable."""

    inner: object
    answers: int = 0

    def acquire(self, bucket: str, route_key: str, now: float,
                max_wait_s: float = 0.0,
                booking: Booking = ANYONE) -> Grant:
        if self.answers <= 0:
            raise BudgetUnavailableError("the budget table is unreachable")
        self.answers -= 1
        return self.inner.acquire(  # type: ignore[attr-defined]
            bucket, route_key, now, max_wait_s, booking)


def test_a_record_store_failure_answers_503_and_kisi_is_not_called(world: World) -> None:
    world.records.failing.add("create")
    reply = world.call("POST", "/groups", key="k1")
    assert (reply.status, reply.headers) == (503, {
        "Content-Type": JSON, "Retry-After": "2",
        "X-Gateway-Request-Id": reply.headers["X-Gateway-Request-Id"]})
    assert reply.json() == STORE_DOWN
    assert world.kisi.calls == []


@pytest.mark.parametrize("key", [None, "k1"])
def test_a_call_that_could_not_be_queued_leaves_no_record(world: World, key: str | None) -> None:
    world.kisi.answer(503)
    world.queue.failing = True
    reply = world.call("POST", "/groups", prefer="respond-async", key=key)
    assert (reply.status, reply.json()) == (503, STORE_DOWN)
    assert world.gw.records.all() == []
    world.queue.failing = False
    world.kisi.answer(503)
    again = world.call("POST", "/groups", prefer="respond-async", key=key)
    assert again.status == 202  # the caller's retry starts afresh


def test_a_keyed_call_kisi_never_saw_is_forgotten_when_the_budget_fails(world: World) -> None:
    world.use_budget(DownBudget(world.gw.budget))
    reply = world.call("POST", "/groups", key="k1")
    assert (reply.status, reply.json()) == (503, STORE_DOWN)
    assert world.gw.records.all() == []
    assert world.kisi.calls == []


def test_a_keyed_call_kisi_may_have_seen_is_kept_when_the_budget_fails(world: World) -> None:
    world.use_budget(DownBudget(world.gw.budget, answers=1))
    world.kisi.fail(Transport.READ_TIMEOUT)  # an unlock may repeat it: one more turn
    reply = world.call("POST", "/locks/1/unlock", key="k1", prefer="wait=10")
    assert (reply.status, reply.json()) == (503, STORE_DOWN)
    [record] = world.gw.records.all()
    assert record.status is RecordStatus.SENDING  # a repeat must not send it blindly
    assert len(world.kisi.calls) == 1


# -- the retry worker -------------------------------------------------------------------------


def deferred(world: World, method: str = "GET", path: str = "/locks/1", **kwargs: object) -> str:
    """A call Kisi answered 503, queued for 2 s later (a read or create: base 2 s)."""
    world.kisi.answer(503)
    reply = world.call(method, path, prefer="respond-async", **kwargs)  # type: ignore[arg-type]
    assert reply.status == 202
    return reply.headers["X-Gateway-Request-Id"]


def test_the_worker_sends_as_queued_and_reschedules_then_ends(world: World) -> None:
    request_id = deferred(world, "POST", "/groups", query=QUERY, body=GROUP)
    world.clock.advance(2)
    world.kisi.answer(503)
    assert world.deliver() == [Disposition.LATER]
    assert world.kisi.calls[1] == KisiCall("POST", "/groups", QUERY, GROUP, SERVICE_LOGIN)
    record = world.gw.records.get(request_id)
    assert record is not None
    assert record.attempts[1:] == (AttemptEntry(START + 2, "server_error", 503, 4),)
    assert (record.status, record.next_attempt_at) == (RecordStatus.QUEUED, START + 6)
    assert world.queue.postponed == [4]
    assert world.metric("RetryDelay") == 2 + 4
    world.clock.advance(4)
    assert world.deliver() == [Disposition.DONE]
    record = world.gw.records.get(request_id)
    assert record is not None
    assert record.status is RecordStatus.SUCCEEDED
    assert record.response == StoredResponse(200, {"content-type": JSON}, OK_BODY)
    assert record.attempts[2:] == (AttemptEntry(START + 6, "success", 200, None),)
    assert world.metric("Finished", Status="succeeded") == 1
    assert len(world.gw.queue) == 0


def test_the_worker_keeps_kisis_retry_after_beyond_sqs_first_delay(world: World) -> None:
    deferred(world)
    world.clock.advance(2)
    world.kisi.answer(429, **{"retry-after": "5000"})
    assert world.deliver() == [Disposition.LATER]
    assert world.queue.postponed == [5000]  # a visibility change may reach 43,200 s


def test_the_last_queued_attempt_keeps_kisis_answer(world: World) -> None:
    request_id = deferred(world, "POST", "/locks/1/unlock")
    world.kisi.answer(503, 503, 503)
    for _ in range(4):
        world.clock.advance(9)
        world.deliver()
    record = world.gw.records.get(request_id)
    assert record is not None
    assert (record.status, record.attempt_count) == (RecordStatus.EXPIRED, 4)
    assert record.response is not None
    assert record.response.status == 503
    [(message, reason)] = world.gw.queue.dead_lettered
    assert (message.request_id, reason) == (request_id, "attempts_exhausted")
    assert world.metric("FinishedByReason", Status="expired", Reason="attempts_exhausted") == 1


def test_a_queued_call_past_its_deadline_is_dead_lettered_unsent(world: World) -> None:
    request_id = deferred(world, "POST", "/locks/1/unlock")
    [(queued, _)] = world.queue.enqueued
    world.clock.advance(31)
    assert world.deliver() == [Disposition.DONE]
    assert world.gw.queue.dead_lettered == [(queued, "deadline")]
    record = world.gw.records.get(request_id)
    assert record is not None
    assert (record.status, record.reason) == (RecordStatus.EXPIRED, "deadline")
    assert record.attempts == (AttemptEntry(START, "server_error", 503, 1),)  # none added
    assert world.metric("FinishedByReason", Status="expired", Reason="deadline") == 1


def trip_the_guard(world: World) -> None:
    world.kisi.answer(*[401] * 5)
    for n in range(5):
        world.call("GET", f"/users/{n}")


def test_a_queued_call_waits_for_the_guard_without_spending_an_attempt(world: World) -> None:
    request_id = deferred(world)
    [(queued, _)] = world.queue.enqueued
    trip_the_guard(world)
    world.clock.advance(2)
    assert world.deliver() == [Disposition.DONE]
    assert len(world.kisi.calls) == 6  # the first attempt and the five 401s
    copy, delay = world.queue.enqueued[-1]
    tripped_at = world.kisi.sent[-1][0]
    assert copy == replace(queued, prior_attempts=1, enqueued_at=copy.enqueued_at)
    assert copy.enqueued_at == at(tripped_at + 2)
    assert delay == 58  # the rest of the guard's 60 s cooldown
    record = world.gw.records.get(request_id)
    assert record is not None
    assert (record.status, record.attempt_count) == (RecordStatus.QUEUED, 1)
    assert world.metric("GuardPaused") == 1


def test_a_queued_call_waits_for_the_budget_without_spending_an_attempt(world: World) -> None:
    deferred(world)
    world.kisi.answer(429, **{"retry-after": "30"})
    world.call("GET", "/locks/2", prefer="respond-async")  # at START + 0.2: gate to + 30.2
    world.clock.advance(2)
    assert world.deliver() == [Disposition.DONE]
    copy, delay = world.queue.enqueued[-1]
    assert (copy.path, copy.prior_attempts, delay) == ("/locks/1", 1, 28)
    assert copy.enqueued_at == at(START + 2 + SLOT)
    assert len(world.kisi.calls) == 2


def test_after_the_cooldown_one_call_probes_and_traffic_resumes(world: World) -> None:
    trip_the_guard(world)
    assert world.call("GET", "/locks/1").status == 503
    world.clock.advance(61)
    assert world.call("GET", "/locks/1").status == 200  # the probe
    assert world.call("GET", "/locks/2").status == 200
    assert world.metric("GuardPaused") == 1


def test_a_paused_call_is_refused_with_the_pause(world: World) -> None:
    trip_the_guard(world)
    reply = world.call("GET", "/locks/1")
    assert reply.headers["Retry-After"] == "60"
    assert reply.json() == error_body(
        "paused by the gateway's guard: 5 consecutive 401 from Kisi: the key looks expired or "
        "revoked", "9e0503")


def test_a_copy_delivered_while_another_worker_sends_is_left_alone(world: World) -> None:
    deferred(world)
    [(queued, _)] = world.queue.enqueued
    world.clock.advance(2)
    others: list[Disposition] = []
    world.kisi.meanwhile(lambda: others.append(world.gw.worker.process(queued, "r-other")))
    assert world.deliver() == [Disposition.DONE]
    assert others == [Disposition.LATER]
    assert len(world.kisi.calls) == 2


@pytest.mark.parametrize(
    ("method", "path", "status", "kisi_calls", "dead_lettered"),
    [
        ("GET", "/locks/1", RecordStatus.SUCCEEDED, 3, []),  # a read is sent again
        ("POST", "/groups", RecordStatus.FAILED, 2, ["unknown_outcome"]),  # a create is not
    ],
)
def test_a_worker_that_vanished_mid_send(
    world: World, method: str, path: str, status: RecordStatus, kisi_calls: int,
    dead_lettered: list[str],
) -> None:
    request_id = deferred(world, method, path)
    world.clock.advance(2)
    world.kisi.crash()
    [(message, handle)] = world.gw.queue.receive(10)
    with pytest.raises(LambdaDiedError):
        world.gw.worker.process(message, handle)
    record = world.gw.records.get(request_id)
    assert record is not None
    assert (record.claimed_attempt, record.claim_until) == (2, START + 2 + 60)
    world.clock.advance(180)  # the message's visibility timeout
    assert world.deliver() == [Disposition.DONE]
    record = world.gw.records.get(request_id)
    assert record is not None
    assert record.status is status
    assert record.attempt_count == kisi_calls - 1  # the vanished attempt is not recorded
    assert len(world.lookup(request_id).json()["attempts"]) == kisi_calls - 1
    assert len(world.kisi.calls) == kisi_calls
    assert world.gw.queue.dead_lettered == [(message, reason) for reason in dead_lettered]


def test_the_system_clock_sleeps_only_positive_times(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(sending.time, "sleep", slept.append)
    clock = SystemClock()
    for seconds in (0.5, 0.0, -1.0):
        clock.sleep(seconds)
    assert slept == [0.5]


# -- a caller's own credential ----------------------------------------------------------------

OWN = "KISI-LOGIN own-key"
OWN_LOGIN = Credential("KISI-LOGIN", "own-key")


def test_a_callers_credential_is_sealed_for_the_queue_and_used_by_the_worker(
    world: World,
) -> None:
    """A Kisi client that asks for an asynchronous answer: its credential is sealed in the
    record, the worker sends with it, and the record forgets it when the request ends."""
    world.kisi.answer(503)
    reply = world.call("GET", "/locks/1", prefer="respond-async", authorization=OWN)
    assert reply.status == 202
    record = world.stored(reply)
    assert (record.credential_kind, record.caller_mode, record.scope) == (
        "caller", "auto", world.who(authorization=OWN).scope)
    assert record.sealed is not None
    assert world.gw.vault.open(record.sealed, record.request_id) == OWN_LOGIN
    world.clock.advance(2)
    assert world.deliver() == [Disposition.DONE]
    assert [call.credential for call in world.kisi.calls] == [OWN_LOGIN, OWN_LOGIN]
    assert world.metric("AttemptsByTenant", Tenant="default", Credential="caller") == 2
    record = world.stored(reply)
    assert (record.status, record.sealed) == (RecordStatus.SUCCEEDED, None)


def test_a_callers_record_is_shown_to_that_credential_only(world: World) -> None:
    world.kisi.answer(503)
    reply = world.call("GET", "/locks/1", prefer="respond-async", authorization=OWN)
    request_id = reply.headers["X-Gateway-Request-Id"]
    assert world.lookup(request_id, authorization=OWN).status == 200
    assert world.lookup(request_id).status == 404  # the same API key on the service login
    assert world.lookup(request_id, authorization="KISI-LOGIN other").status == 404
    bad = world.lookup(request_id, authorization="Basic x")
    assert (bad.status, bad.json()["code"]) == (400, "9e0402")


@pytest.mark.parametrize(
    "damage",
    [
        {"sealed": None},  # the sealed credential is gone
        {"credential_kind": "telepathy"},  # written by a version this one does not know
        {"caller_mode": "telepathy"},
    ],
)
def test_a_queued_call_whose_credential_cannot_be_rebuilt_fails_unsent(
    world: World, damage: dict[str, object],
) -> None:
    world.kisi.answer(503)
    reply = world.call("GET", "/locks/1", prefer="respond-async", authorization=OWN)
    record = world.stored(reply)
    damaged = replace(record, request_id="f" * 32, next_attempt_at=None,
                      **damage)  # type: ignore[arg-type]
    assert world.gw.records.create(damaged)
    message = replace(world.queue.enqueued[0][0], request_id=damaged.request_id)
    world.gw.queue.enqueue(message, 0)
    assert world.deliver() == [Disposition.DONE]  # the original is not visible yet
    ended = world.gw.records.get(damaged.request_id)
    assert ended is not None
    assert (ended.status, ended.reason) == (RecordStatus.FAILED, "credential_unavailable")
    assert world.gw.queue.dead_lettered == [(message, "credential_unavailable")]
    assert len(world.kisi.calls) == 1


def test_a_message_whose_record_is_gone_is_dead_lettered(world: World) -> None:
    message = message_for("0" * 32, world)
    world.gw.queue.enqueue(message, 0)
    assert world.deliver() == [Disposition.DONE]
    assert world.gw.queue.dead_lettered == [(message, "record_missing")]
    assert world.kisi.calls == []


def test_a_wait_after_a_worker_attempt_carries_the_attempts_made(world: World) -> None:
    """The copy queued while the guard pauses counts the worker's attempt too."""
    deferred(world)
    world.clock.advance(2)
    world.kisi.answer(503)
    assert world.deliver() == [Disposition.LATER]  # attempt 2, visible again in 4 s
    trip_the_guard(world)
    world.clock.advance(4)
    assert world.deliver() == [Disposition.DONE]
    copy, _ = world.queue.enqueued[-1]
    assert (copy.prior_attempts, copy.enqueued_at) == (2, at(world.clock.now()))


def test_a_replayed_answer_keeps_kisis_location_rewritten(world: World) -> None:
    world.kisi.reply(201, b'{"id": 5}', location="https://api.kisi.io/groups/5")
    first = world.call("POST", "/groups", key="k1", body=GROUP)
    again = world.call("POST", "/groups", key="k1", body=GROUP)
    assert first.headers["Location"] == again.headers["Location"] == (
        "https://api.kisi.io/groups/5")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(world.kisi.calls) == 1


def test_a_keyed_call_whose_withdrawal_fails_still_answers_503(world: World) -> None:
    world.use_budget(DownBudget(world.gw.budget))
    world.records.failing.add("apply:withdraw")
    reply = world.call("POST", "/groups", key="k1")
    assert (reply.status, reply.json()) == (503, STORE_DOWN)
    assert world.kisi.calls == []


def test_a_queued_event_set_whose_slot_is_taken_comes_back_unsent(world: World) -> None:
    """A worker does not wait for a route-limited slot a fresh call took: a copy a second later,
    no attempt spent."""
    request_id = deferred(world, "POST", "/event_sets", body=b"{}")
    world.clock.advance(2)
    assert world.call("POST", "/event_sets", body=b"{}").status == 200  # takes this second
    assert world.deliver() == [Disposition.DONE]
    copy, delay = world.queue.enqueued[-1]
    assert (copy.request_id, copy.prior_attempts, delay) == (request_id, 1, 2)  # 1.05 s: up
    assert len(world.kisi.calls) == 2
    record = world.gw.records.get(request_id)
    assert record is not None
    assert (record.status, record.attempt_count) == (RecordStatus.QUEUED, 1)


def test_a_queued_unlock_the_budget_holds_past_its_deadline_expires_unsent(
    world: World,
) -> None:
    request_id = deferred(world, "POST", "/locks/1/unlock")  # next attempt at START + 1
    world.kisi.answer(429, **{"retry-after": "40"})
    world.call("GET", "/locks/2", prefer="respond-async")  # the gate closes for 40 s
    world.clock.advance(1)
    [(queued, _)] = [(m, d) for m, d in world.queue.enqueued if m.request_id == request_id]
    assert world.deliver() == [Disposition.DONE]
    record = world.gw.records.get(request_id)
    assert record is not None
    assert (record.status, record.reason, record.attempt_count) == (
        RecordStatus.EXPIRED, "retry_after_past_deadline", 1)
    assert world.gw.queue.dead_lettered == [(queued, "retry_after_past_deadline")]
    assert len(world.kisi.calls) == 2


def test_a_sign_in_goes_without_a_credential_and_is_never_kept(world: World) -> None:
    """A sign-in (POST /logins) sent without Authorization goes without one: the service login
    is never attached to it. Its answer holds a new secret, so it is never kept: Kisi's 503
    is retried inline, never queued, and no record is written."""
    body = b'{"login": {"email": "a@b.c", "password": "x"}}'
    world.kisi.answer(503)
    reply = world.call("POST", "/logins", body=body)
    assert (reply.status, reply.headers["X-Gateway-Attempts"]) == (200, "2")
    assert [call.credential for call in world.kisi.calls] == [None, None]
    assert world.kisi.lookups == 0  # nobody's Kisi user to look up
    assert (world.gw.records.all(), len(world.gw.queue)) == ([], 0)
    assert world.gw.budget.state("unauthenticated").tat > START  # Kisi's per-IP bucket


# -- whose Kisi user a credential is (GET /login) -----------------------------------------------


@dataclass
class CountingDirectory:
    """The directory's login memory, counting reads (each one a DynamoDB read when deployed)."""

    inner: MemoryDirectory
    reads: int = 0

    def login(self, identity: str, now: float) -> KisiLogin | None:
        self.reads += 1
        return self.inner.login(identity, now)

    def remember_login(self, identity: str, login: KisiLogin, until: float) -> None:
        self.inner.remember_login(identity, login, until)


def test_the_kisi_user_is_looked_up_once_an_hour_and_shared(world: World) -> None:
    directory = CountingDirectory(world.gw.directory)
    world.gw.sender.directory = directory  # type: ignore[assignment]
    identity = world.who().identity
    world.call("GET", "/locks/1")
    assert (world.kisi.looked_up, directory.reads) == ([SERVICE_LOGIN], 1)
    assert world.gw.directory.logins == {identity: (KisiLogin(1, 7), START + 3600)}
    # The lookup is booked in the identity's own bucket, the call in its user's.
    assert world.gw.budget.state(identity).tat == at(START + SLOT)
    assert world.gw.budget.state(USER_BUCKET).tat == at(START + SLOT)
    world.clock.advance(3599)
    world.call("GET", "/locks/2")
    assert (world.kisi.lookups, directory.reads) == (1, 1)  # this process remembers
    world.clock.advance(2)
    world.call("GET", "/locks/3")
    assert (world.kisi.lookups, directory.reads) == (2, 2)  # an hour on: asked again
    assert world.metric("KisiUserUnknown") == 0


def test_a_user_another_lambda_learnt_is_not_asked_again(world: World) -> None:
    world.gw.directory.remember_login(world.who().identity, KisiLogin(42, 9), START + 100)
    world.call("GET", "/locks/1")
    assert world.kisi.lookups == 0
    assert world.gw.budget.state("user-42").tat == at(START + SLOT)


def test_a_sender_without_a_directory_asks_kisi(world: World) -> None:
    sender = Sender(kisi_factory=lambda: world.kisi, budget=world.gw.budget,
                    guard=world.gw.guard, telemetry=world.gw.sender.telemetry,
                    clock=world.clock, rng=lambda: 1.0)
    assert sender.acting(world.who()).bucket == USER_BUCKET
    assert world.kisi.lookups == 1


@pytest.mark.parametrize("answer", [500, Transport.CONNECT_ERROR])
def test_an_unknown_user_books_in_its_own_bucket_and_is_asked_again_a_minute_on(
    world: World, answer: int | Transport,
) -> None:
    world.kisi.login_answer = answer
    identity = world.who().identity
    assert world.call("GET", "/locks/1").status == 200  # the call goes all the same
    assert world.kisi.sent[0][0] == at(START + SLOT)  # behind its own lookup, in its own bucket
    assert world.gw.budget.state(identity).tat == at(START + 2 * SLOT)
    assert world.gw.directory.logins == {}
    assert world.metric("KisiUserUnknown", Tenant="default", Credential="service") == 1
    world.clock.advance(59)
    world.call("GET", "/locks/2")
    assert world.kisi.lookups == 1  # not asked again for a minute
    world.clock.advance(2)
    world.call("GET", "/locks/3")
    assert world.kisi.lookups == 2


@pytest.mark.parametrize(
    ("body", "login"),
    [
        (b'{"id": 7, "user_id": 42}', KisiLogin(42, 7)),
        (b'{"user_id": 42}', KisiLogin(42, None)),
        (b'{"id": "7", "user_id": 42}', KisiLogin(42, None)),
        (b'{"id": true, "user_id": 42}', KisiLogin(42, None)),
        (b'{"id": 7, "user_id": true}', None),
        (b'{"id": 7, "user_id": "42"}', None),
        (b'{"id": 7, "user_id": 0}', None),
        (b'{"id": 7, "user_id": -1}', None),
        (b'{"id": 7}', None),
        (b'[42]', None),
        (b"<html>", None),
    ],
)
def test_the_kisi_user_is_read_from_get_login_strictly(
    body: bytes, login: KisiLogin | None,
) -> None:
    assert sending.login_of(body) == login


def test_a_client_the_budget_cannot_fit_gets_a_429_not_a_202(world: World) -> None:
    """Kisi's Retry-After closed the user's gate: a Kisi client is answered at once, as Kisi
    would answer it, and nothing is queued."""
    world.kisi.answer(429, **{"retry-after": "30"})
    world.call("GET", "/locks/1", prefer="respond-async", authorization=OWN)
    reply = world.call("GET", "/locks/2", authorization=OWN)
    assert reply == Reply(429, {"Content-Type": JSON, "Retry-After": "30",
                                "X-Gateway-Request-Id": reply.headers["X-Gateway-Request-Id"]},
                          reply.body)
    assert reply.json() == error_body(
        "Kisi's rate limit for this user is used up for now; retry after the delay", "9e0429")
    assert len(world.kisi.calls) == 1
    assert len(world.queue.enqueued) == 1  # the first call's, which asked for a 202


def test_a_client_whose_wait_runs_out_gets_kisis_last_answer(world: World) -> None:
    """A Kisi client waits 4 s: attempts at 0 and 2 s, the next would be at 6 s. It gets
    Kisi's last answer, told when to try again, and nothing is queued."""
    world.kisi.answer(503, 503, 503)
    reply = world.call("GET", "/locks/1", authorization=OWN)
    assert reply == Reply(503, {"Content-Type": JSON, "Retry-After": "4",
                                "X-Gateway-Request-Id": reply.headers["X-Gateway-Request-Id"],
                                "X-Gateway-Attempts": "2"}, b'{"error": "x", "code": "1"}')
    assert [at for at, _, _ in world.kisi.sent] == [START, START + 2]
    assert (world.gw.records.all(), world.queue.enqueued) == ([], [])


def test_a_client_keeps_kisis_own_retry_after(world: World) -> None:
    world.kisi.answer(429, 429, **{"retry-after": "3"})
    reply = world.call("GET", "/locks/1", authorization=OWN)
    assert (reply.status, reply.headers["Retry-After"]) == (429, "3")
    assert reply.headers["X-Gateway-Attempts"] == "2"
    assert world.queue.enqueued == []

