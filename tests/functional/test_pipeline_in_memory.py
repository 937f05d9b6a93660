"""The pipeline over the in-memory stores: api_call's forwarder and retry_worker's worker, with
a scripted Kisi and a fake clock. No moto, no sockets: each test reads as a story.

These pin the runners' side of the decisions (the tables are in tests/unit/test_decisions.py):
the budget hears about every 429, a copy delivered early is not sent early, the last attempt
ends the request inline and in the queue, the deadline is never passed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest

from kisi_gateway.config import Settings
from kisi_gateway.core.records import RecordStatus, RetryMessage
from kisi_gateway.pipeline.calls import IncomingCall, parse_call
from kisi_gateway.pipeline.forwarding import CallContext
from kisi_gateway.pipeline.kisi_http import AttemptResult, KisiCall, KisiResponse
from kisi_gateway.pipeline.replies import Reply
from kisi_gateway.pipeline.retrying import Disposition
from kisi_gateway.wiring import InMemoryGateway, build_in_memory
from tests.harness import FakeClock

START = 1_800_000_000.0
USER_BUCKET = "user-1"  # the service key's Kisi user, as GET /login names it


@dataclass
class ScriptedKisi:
    """Answers from a script (status, headers), then 200; records when each call came."""

    clock: FakeClock
    script: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    sent: list[tuple[float, str, str]] = field(default_factory=list)
    lookups: int = 0

    def send(self, call: KisiCall) -> AttemptResult:
        if (call.method, call.path) == ("GET", "/login"):  # who the key belongs to
            self.lookups += 1
            return KisiResponse(200, {}, b'{"id": 7, "user_id": 1}')
        self.sent.append((self.clock.now(), call.method, call.path))
        status, headers = self.script.popleft() if self.script else (200, {})
        body = b'{"message": "Unlocked!"}' if status == 200 else b'{"error": "x", "code": "1"}'
        return KisiResponse(status, {"content-type": "application/json", **headers}, body)

    def answer(self, *statuses: int, **headers: str) -> None:
        self.script.extend((status, dict(headers)) for status in statuses)


@dataclass
class World:
    clock: FakeClock
    kisi: ScriptedKisi
    gw: InMemoryGateway
    settings: Settings

    def call(self, method: str, path: str, *, prefer: str | None = None,
             key: str | None = None, caller: str = "me",
             authorization: str | None = None, body: str | None = None) -> Reply:
        headers = {}
        if prefer:
            headers["Prefer"] = prefer
        if key:
            headers["Idempotency-Key"] = key
        incoming: IncomingCall = parse_call(
            method=method, path=path, query=[], body=body, is_base64=False, headers=headers,
            policies=self.settings.policies, max_body_bytes=200_000, default_wait_s=5,
            max_wait_s=25,
        )
        context = CallContext(caller, authorization, "", lambda url: url)
        return self.gw.forwarder.forward(incoming, context)

    def deliver(self) -> list[Disposition]:
        """One retry_worker pass over what is visible now; done messages are deleted."""
        results = []
        for message, handle in self.gw.queue.receive(10):
            disposition = self.gw.worker.process(message, handle)
            if disposition is Disposition.DONE:
                self.gw.queue.delete(handle)
            results.append(disposition)
        return results

    def record(self, reply: Reply) -> RecordStatus | None:
        stored = self.gw.records.get(reply.headers["X-Gateway-Request-Id"])
        return stored.status if stored else None


def world_with(environ: Mapping[str, str] | None = None,
               kisi: Callable[[FakeClock], ScriptedKisi] = ScriptedKisi) -> World:
    """A fresh world: settings from ``environ``, a scripted Kisi of type ``kisi``."""
    clock = FakeClock(START)
    scripted = kisi(clock)
    settings = Settings.from_env(environ or {})
    return World(clock, scripted, build_in_memory(settings, scripted, clock, lambda: 1.0),
                 settings)


@pytest.fixture
def world() -> World:
    return world_with()


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
    assert state.gate_until == pytest.approx(START + 3)


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
    world.clock.advance(2)
    assert Disposition.DONE in world.deliver()
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
    group = '{"group": {"name": "Staff"}}'
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
