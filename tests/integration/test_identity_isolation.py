"""One identity never sees or affects another's: records, ``Idempotency-Key``, guard, budget.

Over the real adapters (DynamoDB tables, SQS, KMS on moto) and the Kisi simulator on
127.0.0.1, on one fake clock. Identities here: two callers' own keys (Kisi users 2 and 3), an
OAuth token (user 5), the default tenant's service login (user 1) and a second tenant ``t2``
with its own service login (user 4) and its own caller.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from kisi_gateway.core.identity import Caller, Tenant
from kisi_gateway.core.records import RecordStatus
from kisi_gateway.pipeline.replies import Reply
from kisi_gateway.stores.directory import DynamoDirectory
from kisi_sim import DEMO_KEY, SimConfig
from tests.harness import SCOPE, Gateway, gateway

pytestmark = pytest.mark.xdist_group("moto")

KEY_A, KEY_B, T2_KEY, TOKEN_C = "own-key-a-41f3", "own-key-b-9c07", "t2-service-5e21", "tok-c-77"
AUTH = {"A": f"KISI-LOGIN {KEY_A}", "B": f"KISI-LOGIN {KEY_B}", "C": f"Bearer {TOKEN_C}"}
T2_CALLER, T2_SECRET = "key-id-of-t2-caller", "tenants/t2"
SIM = SimConfig(keys={DEMO_KEY: 1, KEY_A: 2, KEY_B: 3, T2_KEY: 4},
                credentials={"Bearer": {TOKEN_C: 5}})
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def gw(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """The harness gateway with a second tenant, ``t2``, and one caller of it."""
    with gateway(monkeypatch, sim_config=SIM, env={"SEND_RATE": "5"}) as running:
        directory = DynamoDirectory(running.dynamodb, running.names["tenants"])
        directory.put_tenant(Tenant("t2", T2_SECRET))
        directory.put_caller(Caller(T2_CALLER, "t2"))
        running.service_keys[T2_SECRET] = T2_KEY
        yield running


def as_(gw: Gateway, who: str, method: str, path: str, **kwargs: object) -> Reply:
    """A call by ``who``: A, B or C with its own credential, ``service`` (the default
    tenant's caller, no credential) or ``t2`` (the other tenant's caller)."""
    if who == "t2":
        return gw.call(method, path, scope=T2_CALLER, **kwargs)  # type: ignore[arg-type]
    return gw.call(method, path, authorization=AUTH.get(who), **kwargs)  # type: ignore[arg-type]


def lookup(gw: Gateway, who: str, request_id: str) -> Reply:
    scope = T2_CALLER if who == "t2" else SCOPE
    return gw.forwarder.lookup(request_id, gw.context(scope=scope, authorization=AUTH.get(who)))


def answer(reply: Reply) -> tuple[int, dict[str, object]]:
    return reply.status, json.loads(reply.body)


# --- records ------------------------------------------------------------------------------


def test_a_record_is_read_only_by_its_own_identity(gw: Gateway) -> None:
    # Given a request of each identity, deferred by an outage
    gw.sim.update_faults({"error_rate": 1.0})
    ids = {}
    for who in ("A", "B", "service", "t2"):
        deferred = as_(gw, who, "GET", "/locks/3", headers=ASYNC)
        assert deferred.status == 202, (who, deferred.body)
        ids[who] = deferred.json()["request_id"]
    unknown = answer(lookup(gw, "A", "0" * 32))
    assert unknown[0] == 404

    for owner, request_id in ids.items():
        for reader in ("A", "B", "C", "service", "t2"):
            # Then its owner reads it, and anyone else gets what an unknown id gets
            seen = lookup(gw, reader, request_id)
            if reader == owner:
                assert seen.status == 200, (owner, seen.body)
                assert seen.json()["request_id"] == request_id
            else:
                assert answer(seen) == unknown, (owner, reader)
                assert "X-Gateway-Request-Id" not in seen.headers

    # The same credential through another API key is another scope, too.
    other_caller = gw.forwarder.lookup(ids["A"], gw.context(scope="key-id-other",
                                                            authorization=AUTH["A"]))
    assert answer(other_caller) == unknown


# --- idempotency keys ---------------------------------------------------------------------


def test_one_idempotency_key_from_two_identities_is_two_requests(gw: Gateway) -> None:
    body = {"user": {"name": "Ada", "email": "ada@example.com"}}
    key = {"Idempotency-Key": "create-ada-1"}
    first = {who: as_(gw, who, "POST", "/users", body=body, headers=key)
             for who in ("A", "B", "service", "t2")}
    for who, reply in first.items():
        assert reply.status == 200, (who, reply.body)
        assert "Idempotent-Replayed" not in reply.headers, who
    # Four requests reached Kisi, one per identity, each under its own request id ...
    assert gw.kisi_calls("POST", "/users") == 4
    assert len({r.headers["X-Gateway-Request-Id"] for r in first.values()}) == 4
    assert len({r.json()["id"] for r in first.values()}) == 4  # four users created
    # ... and each identity's repeat replays its own answer, without reaching Kisi.
    for who, reply in first.items():
        again = as_(gw, who, "POST", "/users", body=body, headers=key)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == reply.json()
    assert gw.kisi_calls("POST", "/users") == 4
    # A different body under one identity's key is that identity's conflict alone.
    changed = as_(gw, "A", "POST", "/users", body={"user": {"name": "Eve"}}, headers=key)
    assert changed.status == 422
    assert as_(gw, "C", "POST", "/users", body={"user": {"name": "Eve",
                                                          "email": "eve@example.com"}},
               headers=key).status == 200


# --- guard --------------------------------------------------------------------------------


def test_a_revoked_callers_storm_pauses_only_that_identity(gw: Gateway) -> None:
    """Two caller credentials, one revoked: the other never gets a 503."""
    gw.sim.update_faults({"revoked_keys": [KEY_A]})
    threshold = gw.settings.guard_401_threshold
    statuses: dict[str, list[int]] = {who: [] for who in ("A", "B", "C", "service", "t2")}
    for _ in range(threshold + 5):
        gw.clock.advance(1)
        for who, seen in statuses.items():
            seen.append(as_(gw, who, "GET", "/users/2").status)
    # A's key draws 401s until the guard pauses A (503 without asking Kisi) ...
    assert statuses["A"] == [401] * threshold + [503] * 5
    # ... while every other identity, in either tenant, keeps its 200s.
    for who in ("B", "C", "service", "t2"):
        assert statuses[who] == [200] * (threshold + 5), who
    a_sent = [e for e in gw.sim.stats()["requests"] if e["path"] == "/users/2"
              and e["status"] == 401]
    assert len(a_sent) == threshold


def test_a_tenants_revoked_service_login_pauses_only_that_tenant(gw: Gateway) -> None:
    gw.sim.update_faults({"revoked_keys": [T2_KEY]})
    threshold = gw.settings.guard_401_threshold
    t2, default, own = [], [], []
    for _ in range(threshold + 3):
        gw.clock.advance(1)
        t2.append(as_(gw, "t2", "GET", "/places").status)
        default.append(as_(gw, "service", "GET", "/places").status)
        own.append(as_(gw, "B", "GET", "/places").status)
    assert t2 == [401] * threshold + [503] * 3
    assert default == own == [200] * (threshold + 3)


# --- budget -------------------------------------------------------------------------------


def test_different_kisi_users_book_in_separate_buckets(gw: Gateway) -> None:
    # Each identity's user is looked up once (GET /login), not on the clock under test.
    for who in ("A", "B", "t2"):
        assert as_(gw, who, "GET", "/places").status == 200
    gw.clock.advance(10)
    # A spends its user's budget at full speed: past the first, each send waits its slot.
    started = gw.clock.now()
    for _ in range(10):
        assert as_(gw, "A", "GET", "/locks").status == 200
    spent_by_a = gw.clock.now() - started
    assert spent_by_a >= 9 / 5 - 1e-6  # 5 per second
    # B, t2's service login and the default one are other users: no wait at all.
    for who in ("B", "t2", "service"):
        before = gw.clock.now()
        assert as_(gw, who, "GET", "/locks").status == 200
        assert gw.clock.now() == before, who
    # A's next send still waits for A's own next slot.
    before = gw.clock.now()
    assert as_(gw, "A", "GET", "/locks").status == 200
    assert gw.clock.now() > before
    assert gw.sim.stats()["rate_limited"] == 0


def test_a_deferred_callers_retry_uses_its_own_credential(gw: Gateway) -> None:
    """The worker rebuilds who a queued request acts as: A's retry goes with A's key, so it
    books in A's bucket and stays in A's records."""
    gw.sim.update_faults({"error_rate": 1.0})
    deferred = as_(gw, "A", "GET", "/locks/5", headers=ASYNC)
    assert deferred.status == 202
    request_id = deferred.json()["request_id"]
    gw.sim.update_faults({"error_rate": 0.0})
    gw.run_retries()
    assert gw.record(request_id).status is RecordStatus.SUCCEEDED
    assert lookup(gw, "A", request_id).json()["status"] == "succeeded"
    assert lookup(gw, "B", request_id).status == 404
    sent = [e for e in gw.sim.stats()["requests"] if e["path"] == "/locks/5"]
    assert {e["user_id"] for e in sent} == {2}
    assert sent[-1]["status"] == 200
