"""The Kisi simulator over real sockets: Kisi's rules, its failure modes and the admin API.

Rate-limit tests drive a fake clock (a callable whose ``now`` the test advances), so no test
sleeps to wait for a rate window. Only the hang test waits, because a hang must be real to
trip a client's read timeout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from kisi_sim import DEMO_KEY, Faults, KisiSimulator, SimConfig, SimConfigError

ROOT = Path(__file__).resolve().parents[2]
HEX6 = re.compile(r"[0-9a-f]{6}")
JSON_TYPE = "application/json; charset=utf-8"
SUNSET = "Wed, 31 Dec 2025 23:59:59 GMT"
# Tests that are not about rate limits get room enough never to meet one.
ROOMY = SimConfig(rate_per_s=1000.0, burst=1000)


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def start_sim(clock: FakeClock, wall: FakeClock) -> Iterator[Callable[..., KisiSimulator]]:
    """Start simulators on free ports with the fake clocks; stop them all afterwards."""
    started: list[KisiSimulator] = []

    def start(config: SimConfig | None = None, **kwargs: Any) -> KisiSimulator:
        sim = KisiSimulator(config, clock=clock, wall_clock=wall, **kwargs).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(start_sim: Callable[..., KisiSimulator]) -> KisiSimulator:
    return start_sim(ROOMY)


def kisi(sim: KisiSimulator, method: str, path: str, key: str | None = DEMO_KEY,
         **kwargs: Any) -> requests.Response:
    """One call the way the gateway makes it: KISI-LOGIN header, JSON, a timeout."""
    headers = {"Accept": "application/json", **kwargs.pop("headers", {})}
    if key is not None:
        headers["Authorization"] = f"KISI-LOGIN {key}"
    return requests.request(method, sim.url + path, headers=headers,
                            timeout=kwargs.pop("timeout", 5), **kwargs)


def admin(sim: KisiSimulator, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{sim.url}/__admin/{path}", timeout=5, **kwargs)


def assert_kisi_error(response: requests.Response, status: int) -> dict[str, Any]:
    """Kisi's error shape: JSON ``{"error": text, "code": six hex digits}``."""
    assert response.status_code == status
    assert response.headers["Content-Type"] == JSON_TYPE
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "code"}
    assert body["error"]
    assert HEX6.fullmatch(body["code"])
    return body


# --------------------------------------------------------------------------- authentication


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "KISI-LOGIN not-a-known-key"},
        {"Authorization": f"Bearer {DEMO_KEY}"},
        {"Authorization": "KISI-LOGIN "},
    ],
    ids=["missing", "unknown", "other-scheme", "empty-secret"],
)
def test_a_call_without_a_known_key_answers_401(sim: KisiSimulator, headers: dict[str, str]
                                                ) -> None:
    assert_kisi_error(kisi(sim, "GET", "/locks", key=None, headers=headers), 401)
    assert sim.calls() == []


def test_login_and_user_probes_name_the_key_owner(sim: KisiSimulator) -> None:
    assert kisi(sim, "GET", "/login").json() == {"id": 1, "user_id": 1}
    user = kisi(sim, "GET", "/user").json()
    assert (user["id"], user["email"]) == (1, "user1@example.com")


def test_unauthenticated_calls_share_a_per_ip_bucket(start_sim: Callable[..., KisiSimulator]
                                                     ) -> None:
    sim = start_sim()
    statuses = [kisi(sim, "GET", "/locks", key="nope").status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]


# --------------------------------------------------------------------------- pagination


@pytest.mark.parametrize(
    ("path", "expected_range", "expected_rows"),
    [
        ("/locks", "0-49/120", 50),
        ("/locks?offset=100&limit=50", "100-149/120", 20),  # end past the total
        ("/locks?limit=250", "0-249/120", 120),
        ("/locks?offset=20000", "20000-20049/120", 0),
        ("/users", "0-49/60", 50),
        ("/places?offset=4&limit=2", "4-5/5", 1),
        ("/groups", "0-49/8", 8),
        ("/role_assignments", "0-9/25", 10),
    ],
)
def test_lists_are_bare_arrays_with_a_collection_range(
    sim: KisiSimulator, path: str, expected_range: str, expected_rows: int
) -> None:
    response = kisi(sim, "GET", path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == JSON_TYPE
    assert response.headers["X-Collection-Range"] == expected_range
    assert isinstance(response.json(), list)
    assert len(response.json()) == expected_rows


def test_an_empty_collection_answers_star_slash_zero(start_sim: Callable[..., KisiSimulator]
                                                     ) -> None:
    sim = start_sim(SimConfig(seed_counts={"groups": 0}))
    response = kisi(sim, "GET", "/groups")
    assert (response.json(), response.headers["X-Collection-Range"]) == ([], "*/0")


def test_seed_data_is_the_same_every_run(start_sim: Callable[..., KisiSimulator]) -> None:
    first, second = start_sim(ROOMY), start_sim(ROOMY)
    assert kisi(first, "GET", "/locks?limit=250").json() == \
        kisi(second, "GET", "/locks?limit=250").json()


@pytest.mark.parametrize(
    "path",
    [
        "/locks?limit=0",
        "/locks?limit=251",
        "/users?limit=101",
        "/role_assignments?limit=",
        "/locks?limit=ten",
        "/locks?offset=-1",
        "/locks?offset=20001",
    ],
)
def test_invalid_limit_or_offset_answers_400(sim: KisiSimulator, path: str) -> None:
    assert_kisi_error(kisi(sim, "GET", path), 400)


# --------------------------------------------------------------------------- resources


def test_create_answers_200_with_the_new_object(sim: KisiSimulator) -> None:
    response = kisi(sim, "POST", "/locks", json={"lock": {"name": "Front door", "bogus": 1}})
    assert response.status_code == 200
    created = response.json()
    assert (created["id"], created["name"]) == (121, "Front door")
    assert "bogus" not in created
    assert kisi(sim, "GET", "/locks/121").json() == created


@pytest.mark.parametrize(
    ("path", "body", "errors"),
    [
        ("/locks", {"name": "unwrapped"}, {"name": ["can't be blank"]}),
        ("/locks", None, {"name": ["can't be blank"]}),
        ("/groups", {"group": {"name": "  "}}, {"name": ["can't be blank"]}),
        ("/places", {"place": "not an object"}, {"name": ["can't be blank"]}),
        ("/users", {"user": {"name": "Ada"}}, {"email": ["can't be blank or invalid"]}),
        ("/users", {"user": {"email": "ada"}}, {"email": ["can't be blank or invalid"]}),
        ("/role_assignments", {"role_assignment": {}}, {"role_id": ["can't be blank"]}),
    ],
)
def test_a_create_missing_its_required_attribute_answers_422(
    sim: KisiSimulator, path: str, body: object, errors: dict[str, list[str]]
) -> None:
    response = kisi(sim, "POST", path, json=body)
    assert response.status_code == 422
    assert response.json() == {"errors": errors}
    assert sim.calls() == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/locks/999"),
        ("PATCH", "/users/999"),
        ("DELETE", "/groups/999"),
        ("GET", "/role_assignments/999"),
        ("POST", "/locks/999/unlock"),
        ("POST", "/locks/999/lock_down"),
        ("GET", "/places/abc"),
    ],
)
def test_a_non_existent_id_answers_403_not_404(sim: KisiSimulator, method: str, path: str
                                               ) -> None:
    assert_kisi_error(kisi(sim, method, path, json={}), 403)


def test_update_and_delete_answer_204_without_a_body(sim: KisiSimulator) -> None:
    patched = kisi(sim, "PATCH", "/locks/3", json={"lock": {"name": "Back door"}})
    assert (patched.status_code, patched.content) == (204, b"")
    assert kisi(sim, "GET", "/locks/3").json()["name"] == "Back door"
    assert kisi(sim, "PATCH", "/users/3", json={"user": {"email": ""}}).status_code == 422

    deleted = kisi(sim, "DELETE", "/locks/3")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert_kisi_error(kisi(sim, "GET", "/locks/3"), 403)


def test_unlock_answers_200_with_or_without_its_optional_body(sim: KisiSimulator) -> None:
    context = {"context": {"location": {"latitude": 1.0, "longitude": 2.0}},
               "lock": {"proximity_proof": None}}
    for body in (None, context):
        response = kisi(sim, "POST", "/locks/7/unlock", json=body)
        assert (response.status_code, response.json()) == (200, {"message": "Unlocked!"})
    assert len(sim.calls("POST", "/locks/7/unlock")) == 2


def test_lock_down_and_cancel_answer_204_and_change_the_lock(sim: KisiSimulator) -> None:
    assert kisi(sim, "POST", "/locks/4/lock_down").status_code == 204
    assert sim.store.get("locks", 4)["locked_down"] is True  # type: ignore[index]
    assert kisi(sim, "POST", "/locks/4/cancel_lockdown").status_code == 204
    assert sim.store.get("locks", 4)["locked_down"] is False  # type: ignore[index]


def test_event_sets_answer_200_with_an_id(sim: KisiSimulator) -> None:
    response = kisi(sim, "POST", "/event_sets", json={"event_set": {"since": "2024-01-01"}})
    assert (response.status_code, response.json()) == (200, {"id": 1})


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/no/such/path", None, 404),
        ("POST", "/locks", b"{not json", 400),
        ("POST", "/locks", b"\xff\xfe", 400),
        ("OPTIONS", "/locks", None, 405),
        ("FOO", "/locks", None, 405),
        ("DELETE", "/locks", None, 405),
    ],
)
def test_protocol_errors_are_kisi_shaped(
    sim: KisiSimulator, method: str, path: str, body: bytes | None, status: int
) -> None:
    headers = {"Content-Type": "application/json"}
    assert_kisi_error(kisi(sim, method, path, data=body, headers=headers), status)


def test_head_answers_405_without_a_body(sim: KisiSimulator) -> None:
    response = kisi(sim, "HEAD", "/locks")
    assert (response.status_code, response.content) == (405, b"")


def test_deprecated_routes_carry_deprecation_and_sunset(
    start_sim: Callable[..., KisiSimulator]
) -> None:
    sim = start_sim(SimConfig(deprecated_routes={
        "POST /locks/{id}/unlock": SUNSET, "/places": SUNSET,
    }))
    unlocked = kisi(sim, "POST", "/locks/1/unlock")
    assert (unlocked.headers["Deprecation"], unlocked.headers["Sunset"]) == ("true", SUNSET)
    assert kisi(sim, "GET", "/places").headers["Sunset"] == SUNSET
    assert "Deprecation" not in kisi(sim, "GET", "/locks").headers


def test_an_exception_in_a_handler_answers_500_and_the_server_keeps_serving(
    sim: KisiSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_page(*args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(sim.store, "page", broken_page)
    assert_kisi_error(kisi(sim, "GET", "/locks"), 500)
    monkeypatch.undo()
    assert kisi(sim, "GET", "/locks").status_code == 200
    stats = sim.stats()
    assert stats["by_status"] == {"500": 1, "200": 1}
    assert stats["last_internal_error"] == "RuntimeError: disk on fire"


# --------------------------------------------------------------------------- rate limits


def test_the_sixth_call_in_a_second_is_429_with_retry_after(
    start_sim: Callable[..., KisiSimulator], clock: FakeClock
) -> None:
    sim = start_sim()
    assert [kisi(sim, "GET", "/locks").status_code for _ in range(5)] == [200] * 5

    limited = kisi(sim, "GET", "/locks")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.headers["Content-Type"].startswith("text/plain")
    assert limited.text == "Too Many Requests"

    clock.advance(0.2)  # 5 req/s: one token back
    assert kisi(sim, "GET", "/locks").status_code == 200
    assert kisi(sim, "GET", "/locks").status_code == 429
    assert sim.stats()["rate_limited"] == 2


def test_429_without_retry_after_and_with_a_json_body(
    start_sim: Callable[..., KisiSimulator]
) -> None:
    sim = start_sim(SimConfig(faults=Faults(retry_after=False, rate_limit_body="json")))
    responses = [kisi(sim, "GET", "/locks") for _ in range(6)]
    assert "Retry-After" not in responses[-1].headers
    assert_kisi_error(responses[-1], 429)


def test_all_keys_of_one_user_share_its_bucket(start_sim: Callable[..., KisiSimulator]) -> None:
    sim = start_sim(SimConfig(keys={"key-a": 1, "key-b": 1, "key-c": 2}))
    statuses = [kisi(sim, "GET", "/locks", key=key).status_code
                for key in ("key-a", "key-a", "key-a", "key-b", "key-b", "key-b")]
    assert statuses == [200] * 5 + [429]
    assert kisi(sim, "GET", "/locks", key="key-c").status_code == 200  # another user


@pytest.mark.parametrize(
    ("path", "retry_after"),
    [("/event_sets", "1"), ("/signed_upload_urls", "10")],
)
def test_stricter_routes_have_their_own_bucket(
    start_sim: Callable[..., KisiSimulator], clock: FakeClock, path: str, retry_after: str
) -> None:
    sim = start_sim()
    assert kisi(sim, "POST", path).status_code == 200
    limited = kisi(sim, "POST", path)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, retry_after)
    assert kisi(sim, "GET", "/locks").status_code == 200  # the user bucket still has room
    clock.advance(float(retry_after))
    assert kisi(sim, "POST", path).status_code == 200


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "fbc000"), (500, "e0e500"), (502, "e0e502")],
)
def test_error_rate_one_answers_5xx_and_changes_nothing(
    start_sim: Callable[..., KisiSimulator], status: int, code: str
) -> None:
    sim = start_sim(SimConfig(faults=Faults(error_rate=1.0, error_status=status)))
    body = assert_kisi_error(kisi(sim, "POST", "/locks/7/unlock"), status)
    assert body["code"] == code
    assert sim.calls() == []


def test_the_default_injected_error_is_kisis_service_unavailable(sim: KisiSimulator) -> None:
    admin(sim, "PUT", "faults", json={"error_rate": 1.0})
    response = kisi(sim, "GET", "/locks")
    assert (response.status_code, response.json()) == (
        503, {"error": "Service unavailable", "code": "fbc000"})


def test_an_outage_answers_every_call_until_it_ends(sim: KisiSimulator, wall: FakeClock) -> None:
    admin(sim, "PUT", "faults", json={"outage_seconds": 30})
    assert admin(sim, "GET", "faults").json()["outage_until"] == wall.now + 30
    assert_kisi_error(kisi(sim, "GET", "/locks"), 503)
    assert_kisi_error(kisi(sim, "GET", "/locks", key="unknown"), 503)  # before auth

    wall.advance(31)
    assert kisi(sim, "GET", "/locks").status_code == 200


def test_an_outage_set_at_start_and_ended_by_the_admin(
    start_sim: Callable[..., KisiSimulator], wall: FakeClock
) -> None:
    sim = start_sim(SimConfig(faults=Faults(outage_until=wall.now + 600, error_status=502)))
    assert kisi(sim, "GET", "/locks").status_code == 502
    admin(sim, "PUT", "faults", json={"outage_until": None})
    assert kisi(sim, "GET", "/locks").status_code == 200


def test_a_revoked_key_answers_401_with_its_own_code(sim: KisiSimulator) -> None:
    unknown = assert_kisi_error(kisi(sim, "GET", "/locks", key="never-issued"), 401)
    admin(sim, "PUT", "faults", json={"revoked_keys": [DEMO_KEY]})

    revoked = assert_kisi_error(kisi(sim, "GET", "/locks"), 401)
    assert revoked["code"] != unknown["code"]
    assert DEMO_KEY not in admin(sim, "GET", "faults").text

    admin(sim, "PUT", "faults", json={"revoked_keys": []})
    assert kisi(sim, "GET", "/locks").status_code == 200


def test_a_hung_call_is_processed_after_the_client_gave_up(sim: KisiSimulator) -> None:
    admin(sim, "PUT", "faults", json={"hang_ms": 300})
    with pytest.raises(requests.exceptions.ReadTimeout):
        kisi(sim, "POST", "/locks/7/unlock", timeout=0.05)

    deadline = time.monotonic() + 3
    while not sim.calls("POST", "/locks/7/unlock") and time.monotonic() < deadline:
        time.sleep(0.02)  # waits for the server thread, not for a rate window
    assert [c["status"] for c in sim.calls("POST", "/locks/7/unlock")] == [200]


def test_latency_uses_the_injected_sleep(start_sim: Callable[..., KisiSimulator]) -> None:
    slept: list[float] = []
    sim = start_sim(SimConfig(faults=Faults(latency_ms=250)), sleep=slept.append)
    assert kisi(sim, "GET", "/locks").status_code == 200
    assert slept == [0.25]


def test_too_many_bad_requests_suspend_the_user_until_reset(
    start_sim: Callable[..., KisiSimulator]
) -> None:
    config = SimConfig(keys={"k1": 1, "k2": 2}, rate_per_s=1000.0, burst=1000,
                       faults=Faults(suspend_after_bad=3))
    sim = start_sim(config)
    for _ in range(3):
        assert kisi(sim, "GET", "/locks/999", key="k1").status_code == 403

    suspended = assert_kisi_error(kisi(sim, "GET", "/locks", key="k1"), 403)
    assert suspended == {"error": "Integration suspended due to too many bad requests",
                         "code": "a3b2c1"}
    assert kisi(sim, "GET", "/locks", key="k2").status_code == 200
    assert sim.stats()["suspended_users"] == [1]

    assert admin(sim, "POST", "reset").status_code == 204
    assert kisi(sim, "GET", "/locks", key="k1").status_code == 200


def test_429s_count_as_bad_requests(start_sim: Callable[..., KisiSimulator],
                                    clock: FakeClock) -> None:
    sim = start_sim(SimConfig(burst=1, faults=Faults(suspend_after_bad=2)))
    statuses = [kisi(sim, "GET", "/locks").status_code for _ in range(3)]
    assert statuses == [200, 429, 429]
    clock.advance(10)
    assert_kisi_error(kisi(sim, "GET", "/locks"), 403)


def test_bad_requests_outside_the_window_do_not_suspend(
    start_sim: Callable[..., KisiSimulator], clock: FakeClock
) -> None:
    sim = start_sim(dataclasses.replace(ROOMY, faults=Faults(suspend_after_bad=3)))
    kisi(sim, "GET", "/locks/999")
    kisi(sim, "GET", "/locks/999")
    clock.advance(61)
    kisi(sim, "GET", "/locks/999")
    assert kisi(sim, "GET", "/locks").status_code == 200


# --------------------------------------------------------------------------- stats and log


def test_the_log_and_stats_never_hold_a_key(start_sim: Callable[..., KisiSimulator]) -> None:
    secret, revoked, wrong = "s3cr3t-value", "old-s3cr3t", "wrong-s3cr3t"
    sim = start_sim(SimConfig(keys={secret: 1, revoked: 1}, rate_per_s=1000.0, burst=1000,
                              faults=Faults(revoked_keys=(revoked,))))
    body = {"lock": {"name": "Side door"}}
    kisi(sim, "POST", "/locks", key=secret, json=body)
    kisi(sim, "GET", "/locks?limit=2", key=revoked)
    kisi(sim, "GET", "/locks", key=wrong)

    published = admin(sim, "GET", "stats").text + repr(sim.stats()) + repr(sim.calls())
    published += admin(sim, "GET", "faults").text
    for forbidden in (secret, revoked, wrong, "KISI-LOGIN"):
        assert forbidden not in published

    created = sim.calls("POST", "/locks")[0]
    assert created == {
        "at": 1_700_000_000.0,
        "method": "POST",
        "path": "/locks",
        "query": "",
        "status": 200,
        "user_id": 1,
        "body_sha256": hashlib.sha256(json.dumps(body).encode()).hexdigest(),
        "route": "/locks",
        "processed": True,
    }
    assert [e["user_id"] for e in sim.stats()["requests"]] == [1, 1, None]


def test_calls_count_only_what_kisi_processed(
    start_sim: Callable[..., KisiSimulator]
) -> None:
    sim = start_sim()
    sim.update_faults({"error_rate": 1.0})
    assert kisi(sim, "POST", "/locks/7/unlock").status_code == 503
    sim.update_faults({"error_rate": 0.0})
    assert kisi(sim, "POST", "/locks/7/unlock").status_code == 200
    for _ in range(3):
        kisi(sim, "GET", "/locks")
    assert kisi(sim, "POST", "/locks/7/unlock").status_code == 429

    assert len(sim.calls("POST", "/locks/7/unlock")) == 1
    assert len(sim.calls("post", "/locks/{id}/unlock")) == 1
    assert sim.calls("POST", "/locks/8/unlock") == []
    stats = sim.stats()
    assert stats["by_route"] == {"POST /locks/{id}/unlock": 3, "GET /locks": 3}
    assert (stats["total"], stats["rate_limited"]) == (6, 1)


# --------------------------------------------------------------------------- admin API


def test_admin_faults_merge_field_by_field(sim: KisiSimulator) -> None:
    defaults = admin(sim, "GET", "faults").json()
    assert (defaults["error_rate"], defaults["error_status"], defaults["retry_after"]) == (
        0.0, 503, True)

    admin(sim, "PUT", "faults", json={"error_rate": 0.5})
    merged = admin(sim, "PUT", "faults", json={"latency_ms": 5}).json()
    assert (merged["error_rate"], merged["latency_ms"]) == (0.5, 5)
    assert admin(sim, "GET", "faults").json() == merged


@pytest.mark.parametrize(
    "body",
    [
        b'{"no_such_fault": 1}',
        b'{"error_rate": 2}',
        b'{"error_status": 418}',
        b'{"rate_limit_body": "xml"}',
        b'{"rate_limit_body": ["text"]}',
        b'{"retry_after": "maybe"}',
        b"[1, 2]",
        b"{not json",
    ],
)
def test_admin_rejects_bad_faults_and_keeps_the_old_ones(sim: KisiSimulator, body: bytes
                                                         ) -> None:
    before = admin(sim, "GET", "faults").json()
    assert_kisi_error(admin(sim, "PUT", "faults", data=body), 400)
    assert admin(sim, "GET", "faults").json() == before


def test_admin_reset_restores_data_faults_and_stats(sim: KisiSimulator) -> None:
    kisi(sim, "POST", "/locks", json={"lock": {"name": "Temporary"}})
    admin(sim, "PUT", "faults", json={"latency_ms": 1})

    assert admin(sim, "POST", "reset").status_code == 204
    assert admin(sim, "GET", "faults").json()["latency_ms"] == 0
    assert sim.stats()["total"] == 0
    assert_kisi_error(kisi(sim, "GET", "/locks/121"), 403)


def test_admin_calls_need_no_key_and_are_never_counted(sim: KisiSimulator) -> None:
    assert admin(sim, "GET", "faults").status_code == 200
    assert admin(sim, "GET", "stats?log=0").json()["requests"] == []
    assert_kisi_error(admin(sim, "GET", "nothing-here"), 404)
    assert_kisi_error(admin(sim, "DELETE", "faults"), 405)
    assert sim.stats()["total"] == 0


# --------------------------------------------------------------------------- configuration


def test_config_from_env_reads_every_kind_of_variable() -> None:
    config = SimConfig.from_env({
        "KISI_SIM_KEYS": '{"a": 1, "b": 1}',
        "KISI_SIM_SEED_COUNTS": '{"locks": 3}',
        "KISI_SIM_RATE_PER_S": "2.5",
        "KISI_SIM_ROUTE_RATES": '{"POST /event_sets": 0.5}',
        "KISI_SIM_DEPRECATED_ROUTES": json.dumps({"/locks": SUNSET}),
        "KISI_SIM_ERROR_RATE": "0.25",
        "KISI_SIM_ERROR_STATUS": "502",
        "KISI_SIM_RETRY_AFTER": "false",
        "KISI_SIM_REVOKED_KEYS": "a, b",
        "KISI_SIM_SUSPEND_AFTER_BAD": "",  # empty means default
        "OTHER": "ignored",
    })
    assert config.keys == {"a": 1, "b": 1}
    assert config.seed_counts["locks"] == 3
    assert config.seed_counts["users"] == 60
    assert (config.rate_per_s, config.route_rates) == (2.5, {"POST /event_sets": 0.5})
    assert config.deprecated_routes == {"/locks": SUNSET}
    assert config.faults == Faults(error_rate=0.25, error_status=502, retry_after=False,
                                   revoked_keys=("a", "b"))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KISI_SIM_ERROR_RATE", "1.5"),
        ("KISI_SIM_ERROR_STATUS", "404"),
        ("KISI_SIM_BURST", "0"),
        ("KISI_SIM_KEYS", '{"a": "one"}'),
        ("KISI_SIM_SEED_COUNTS", '{"doors": 3}'),
        ("KISI_SIM_RETRY_AFTER", "perhaps"),
        ("KISI_SIM_LATENCY_MS", "-1"),
    ],
)
def test_config_from_env_names_the_bad_variable(variable: str, value: str) -> None:
    with pytest.raises(SimConfigError, match=variable):
        SimConfig.from_env({variable: value})


def test_an_outage_from_the_environment_starts_with_the_simulator(
    start_sim: Callable[..., KisiSimulator], wall: FakeClock
) -> None:
    sim = start_sim(SimConfig.from_env({"KISI_SIM_OUTAGE_SECONDS": "5"}))
    assert sim.faults.outage_until == wall.now + 5
    assert kisi(sim, "GET", "/locks").status_code == 503


def test_the_cli_prints_one_ready_line_and_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "kisi_sim", "--port", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline().strip()
        found = re.fullmatch(r"kisi-sim listening on (http://127\.0\.0\.1:\d+)", ready)
        assert found, ready
        login = requests.get(f"{found[1]}/login", timeout=5,
                             headers={"Authorization": f"KISI-LOGIN {DEMO_KEY}"})
        assert login.json() == {"id": 1, "user_id": 1}
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=5)
    finally:
        process.kill()
    assert (process.returncode, errors) == (0, "")
