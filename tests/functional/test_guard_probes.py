"""Pauses scoped to whoever caused them, probes the gateway chooses, and a new key in use at
once: the in-memory pipeline with a fake clock and a Kisi that knows which keys are revoked."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from kisi_gateway.pipeline.kisi_http import AttemptResult, KisiCall, KisiResponse
from kisi_gateway.wiring import IN_MEMORY_SERVICE_SECRET
from tests.functional.test_pipeline_in_memory import ScriptedKisi, World, world_with

JSON = {"content-type": "application/json"}
HOSTILE = "KISI-LOGIN hostile-caller-key"
MINE = "KISI-LOGIN my-own-key"


@dataclass
class KeyAwareKisi(ScriptedKisi):
    """401 for revoked keys (GET /login included), 403 for unlocks of locks that do not
    exist; records every request with the key it came with."""

    revoked: set[str] = field(default_factory=set)
    missing_locks: set[str] = field(default_factory=set)
    log: list[tuple[float, str, str, str]] = field(default_factory=list)

    def send(self, call: KisiCall) -> AttemptResult:
        secret = call.credential.secret if call.credential is not None else ""
        self.log.append((self.clock.now(), call.method, call.path, secret))
        if secret in self.revoked:
            return KisiResponse(401, JSON, b'{"error": "Unauthorized", "code": "000401"}')
        lock = call.path.split("/")[2] if call.path.startswith("/locks/") else ""
        if call.path.endswith("/unlock") and lock in self.missing_locks:
            return KisiResponse(403, JSON, b'{"error": "Forbidden", "code": "000403"}')
        return super().send(call)

    def sent_with(self, secret: str, method: str | None = None) -> list[str]:
        return [f"{m} {p}" for _, m, p, s in self.log
                if s == secret and (method is None or m == method)]


@pytest.fixture
def world() -> World:
    return world_with(kisi=KeyAwareKisi)


def kisi_of(world: World) -> KeyAwareKisi:
    assert isinstance(world.kisi, KeyAwareKisi)
    return world.kisi


def test_a_hostile_403_storm_never_pauses_or_probes_for_another_caller(world: World) -> None:
    kisi = kisi_of(world)
    kisi.missing_locks.update(str(n) for n in range(1000, 1060))
    hostile = [world.call("POST", f"/locks/{n}/unlock", authorization=HOSTILE)
               for n in range(1000, 1060)]
    assert {r.status for r in hostile} == {403}
    mine = []
    for second in range(120):  # two minutes of a colleague's unlocks during and after it
        world.clock.advance(1)
        mine.append(world.call("POST", f"/locks/{second % 5}/unlock", authorization=MINE))
    assert [r.status for r in mine].count(503) == 0
    assert all(r.status == 200 for r in mine)
    assert kisi.sent_with("hostile-caller-key", "POST") == [
        f"POST /locks/{n}/unlock" for n in range(1000, 1060)]


def test_the_account_probe_is_the_gateways_get_login_never_the_callers_unlock(
        world: World) -> None:
    kisi = kisi_of(world)
    world.call("GET", "/locks/1", authorization=MINE)  # the key works: its user is known
    kisi.revoked.add("my-own-key")
    for n in range(5):
        world.call("POST", f"/locks/{n}/unlock", authorization=MINE)
    unlocks_sent = len(kisi.sent_with("my-own-key", "POST"))
    assert world.call("POST", "/locks/9/unlock", authorization=MINE).status == 503

    world.clock.advance(60)  # the cooldown is over; the key is still revoked
    reply = world.call("POST", "/locks/9/unlock", authorization=MINE)
    assert reply.status == 503
    assert kisi.log[-1][1:3] == ("GET", "/login")  # the probe was the gateway's own read
    assert len(kisi.sent_with("my-own-key", "POST")) == unlocks_sent  # no unlock as a probe

    world.clock.advance(120)  # the failed probe doubled the cooldown; now the key works
    kisi.revoked.clear()
    reply = world.call("POST", "/locks/9/unlock", authorization=MINE)
    assert reply.status == 200
    assert kisi.sent_with("my-own-key")[-2:] == ["GET /login", "POST /locks/9/unlock"]


def test_a_replaced_service_key_resumes_traffic_within_ten_seconds(world: World) -> None:
    kisi = kisi_of(world)
    world.call("GET", "/locks/1")  # the service key's user is known
    kisi.revoked.add("sim-demo-key")
    for n in range(5):
        world.call("GET", f"/locks/{n}")
    assert world.call("GET", "/locks/1").status == 503  # paused, and the key re-read: same

    world.clock.advance(1)
    replaced_at = world.clock.now()
    world.gw.secrets[IN_MEMORY_SERVICE_SECRET] = "a-new-working-key"
    statuses = []
    for _ in range(10):  # one call a second, as a busy caller would
        statuses.append(world.call("GET", "/locks/1").status)
        if statuses[-1] == 200:
            break
        world.clock.advance(1)
    assert statuses[-1] == 200
    assert world.clock.now() - replaced_at <= 10
    assert kisi.log[-1][3] == "a-new-working-key"


def test_a_callers_new_credential_is_used_at_once(world: World) -> None:
    kisi = kisi_of(world)
    kisi.revoked.add("my-own-key")
    for n in range(6):
        world.call("GET", f"/locks/{n}", authorization=MINE)
    assert world.call("GET", "/locks/1", authorization=MINE).status == 503
    fresh = world.call("GET", "/locks/1", authorization="KISI-LOGIN my-rotated-key")
    assert fresh.status == 200
    assert kisi.log[-1][3] == "my-rotated-key"
