"""Whose Kisi user a credential is: one ``GET /login`` per identity, shared by the calls that
arrive while it is being asked, and a fallback bucket that says so when Kisi cannot tell."""

from __future__ import annotations

import threading
from collections import Counter

from kisi_gateway.config import Settings
from kisi_gateway.pipeline.calls import parse_call
from kisi_gateway.pipeline.forwarding import CallContext
from kisi_gateway.pipeline.kisi_http import AttemptResult, KisiCall, KisiResponse
from kisi_gateway.pipeline.replies import Reply
from kisi_gateway.wiring import InMemoryGateway, build_in_memory
from tests.harness import FakeClock

OWN = "KISI-LOGIN own-key-of-a-caller"


class LookupKisi:
    """Kisi whose ``GET /login`` waits until the test lets it answer."""

    def __init__(self, login_status: int = 200) -> None:
        self.login_status = login_status
        self.asked = threading.Event()
        self.answer = threading.Event()
        self.lookups = 0
        self.sent: Counter[str] = Counter()
        self._lock = threading.Lock()

    def send(self, call: KisiCall) -> AttemptResult:
        if (call.method, call.path) == ("GET", "/login"):
            with self._lock:
                self.lookups += 1
            self.asked.set()
            self.answer.wait(10)  # bounded: the test sets it
            return KisiResponse(self.login_status, {}, b'{"id": 3, "user_id": 77}')
        with self._lock:
            self.sent[call.path] += 1
        return KisiResponse(200, {"content-type": "application/json"}, b"[]")


def build(kisi: LookupKisi) -> tuple[InMemoryGateway, FakeClock, Settings]:
    clock = FakeClock()
    settings = Settings.from_env({})
    return build_in_memory(settings, kisi, clock, lambda: 0.5), clock, settings


def call(gw: InMemoryGateway, settings: Settings, path: str) -> Reply:
    incoming = parse_call(method="GET", path=path, query=[], body=None, is_base64=False,
                          headers={}, policies=settings.policies, max_body_bytes=200_000,
                          default_wait_s=5, max_wait_s=25)
    return gw.forwarder.forward(incoming, CallContext("caller", OWN, "", lambda url: url))


def test_calls_arriving_during_the_lookup_share_its_answer() -> None:
    kisi = LookupKisi()
    gw, _, settings = build(kisi)
    replies: list[Reply] = []
    first = threading.Thread(target=lambda: replies.append(call(gw, settings, "/locks")))
    first.start()
    assert kisi.asked.wait(10)  # the first call is asking Kisi who the key is
    others = [threading.Thread(target=lambda: replies.append(call(gw, settings, "/places")))
              for _ in range(7)]
    for thread in others:
        thread.start()
    kisi.answer.set()
    for thread in [first, *others]:
        thread.join(10)
    assert [r.status for r in replies] == [200] * 8
    assert kisi.lookups == 1
    assert [v[0] for v in gw.sink.values].count("KisiUserUnknown") == 0  # none fell back
    unused = gw.budget.state("user-0")
    assert gw.budget.state("user-77") != unused  # the eight sends booked in the user's bucket


def test_a_user_kisi_cannot_name_uses_the_identitys_bucket_and_says_so() -> None:
    kisi = LookupKisi(login_status=500)
    kisi.answer.set()
    gw, clock, settings = build(kisi)
    assert call(gw, settings, "/locks").status == 200
    assert call(gw, settings, "/locks").status == 200
    assert kisi.lookups == 1  # not asked again for a while
    assert [v[0] for v in gw.sink.values].count("KisiUserUnknown") == 1
    clock.advance(61)
    assert call(gw, settings, "/locks").status == 200
    assert kisi.lookups == 2  # asked again after LOOKUP_RETRY_S
