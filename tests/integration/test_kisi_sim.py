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

from kisi_sim import (
    DEMO_EMAIL,
    DEMO_KEY,
    DEMO_PASSWORD,
    Account,
    Faults,
    KisiSimulator,
    SimConfig,
    SimConfigError,
    key_fingerprint,
    parse_authorization,
)

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


# --------------------------------------------------------------------------- identity


def sign_in(sim: KisiSimulator, email: str = DEMO_EMAIL, password: str = DEMO_PASSWORD,
            **kwargs: Any) -> requests.Response:
    """``POST /logins`` as Kisi's JS client sends it: no key, a device login."""
    body = {"login": {"type": "device"}, "user": {"email": email, "password": password}}
    return requests.post(f"{sim.url}/logins", json=kwargs.pop("json", body), timeout=5, **kwargs)


@pytest.mark.parametrize(
    ("header", "scheme", "secret"),
    [
        (None, None, None),
        ("", None, None),
        ("KISI-LOGIN abc", "KISI-LOGIN", "abc"),
        ("kisi-login  abc ", "KISI-LOGIN", "abc"),
        ("bearer tok", "Bearer", "tok"),
        ("KISI-ACCESS-KEY ak", "KISI-ACCESS-KEY", "ak"),
        ("KISI-GROUP-LINK gl", "KISI-GROUP-LINK", "gl"),
        ("KISI-SERVICE sv", "KISI-SERVICE", "sv"),
        ("KISI-LOGIN null", "KISI-LOGIN", None),  # a template with no secret yet
        ("KISI-LOGIN None", "KISI-LOGIN", None),  # Python's f"KISI-LOGIN {None}"
        ("KISI-LOGIN ", "KISI-LOGIN", None),
        ("null", "null", None),  # kisi-client 8.0.0 after signIn/signOut reset it
        ("Basic dXNlcg==", "unknown", None),
        ("just-a-token", "unknown", None),
    ],
)
def test_authorization_headers_are_read_scheme_first(
    header: str | None, scheme: str | None, secret: str | None
) -> None:
    auth = parse_authorization(header)
    assert auth.scheme == scheme
    assert (auth.credential and auth.credential.secret) == secret
    assert auth.fingerprint == (None if secret is None else key_fingerprint(secret))


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "null"}, {"Authorization": "KISI-LOGIN null"},
     {"Authorization": "KISI-LOGIN revoked-or-unknown"}],
    ids=["no-header", "bare-null", "kisi-login-null", "unknown-key"],
)
def test_sign_in_needs_no_key_and_gives_a_new_login_of_the_user(
    sim: KisiSimulator, wall: FakeClock, headers: dict[str, str]
) -> None:
    signed_in = sign_in(sim, headers=headers)
    assert signed_in.status_code == 200
    login = signed_in.json()
    assert login == {"id": 2, "type": "device", "name": None, "user_id": 1, "expire": True,
                     "created_at": "2023-11-14T22:13:20.000Z", "secret": login["secret"]}
    assert len(login["secret"]) >= 32
    assert kisi(sim, "GET", "/login", key=login["secret"]).json() == {"id": 2, "user_id": 1}
    assert kisi(sim, "GET", "/user", key=login["secret"]).json()["id"] == 1
    assert sign_in(sim).json()["secret"] != login["secret"]  # every sign-in, a new login


def test_sign_in_reads_the_email_case_insensitively_and_keeps_login_fields(
    sim: KisiSimulator
) -> None:
    body = {"login": {"type": "api", "name": "sync job", "expire": False},
            "user": {"email": DEMO_EMAIL.upper(), "password": DEMO_PASSWORD,
                     "domain": "any-organization"}}
    login = sign_in(sim, json=body).json()
    assert (login["type"], login["name"], login["expire"]) == ("api", "sync job", False)


@pytest.mark.parametrize(
    ("email", "password"),
    [(DEMO_EMAIL, "wrong"), ("nobody@example.com", DEMO_PASSWORD), (DEMO_EMAIL, ""),
     ("", "")],
)
def test_a_wrong_email_or_password_answers_401_afc516(
    sim: KisiSimulator, email: str, password: str
) -> None:
    body = assert_kisi_error(sign_in(sim, email, password), 401)
    assert body == {"error": "Wrong email address or password.", "code": "afc516"}
    assert sim.calls() == []


@pytest.mark.parametrize(
    "body",
    [{}, {"user": "x"}, {"user": {}, "login": []}, {"user": {}, "login": {"type": "phone"}},
     {"user": {}, "login": {"expire": "no"}}, ["user"]],
)
def test_a_malformed_sign_in_answers_400(sim: KisiSimulator, body: object) -> None:
    assert_kisi_error(sign_in(sim, json=body), 400)


def test_a_new_login_shares_its_users_bucket(
    start_sim: Callable[..., KisiSimulator]
) -> None:
    sim = start_sim(SimConfig(rate_per_s=1.0, burst=3))
    secret = sign_in(sim).json()["secret"]  # anonymous: the caller IP's bucket
    assert [kisi(sim, "GET", "/locks").status_code for _ in range(2)] == [200, 200]
    assert kisi(sim, "GET", "/locks", key=secret).status_code == 200
    assert kisi(sim, "GET", "/locks", key=secret).status_code == 429  # user 1's bucket is empty


def test_sign_ins_share_the_per_ip_bucket_of_unauthenticated_calls(
    start_sim: Callable[..., KisiSimulator]
) -> None:
    sim = start_sim(SimConfig(rate_per_s=1.0, burst=2))
    statuses = [sign_in(sim, password="wrong").status_code for _ in range(2)]
    limited = sign_in(sim)
    assert (statuses, limited.status_code, limited.headers["Retry-After"]) == (
        [401, 401], 429, "1")


def test_sign_out_deletes_the_login_that_sent_it(sim: KisiSimulator) -> None:
    secret = sign_in(sim).json()["secret"]
    assert kisi(sim, "DELETE", "/login", key=secret).status_code == 204
    assert_kisi_error(kisi(sim, "GET", "/locks", key=secret), 401)
    assert kisi(sim, "GET", "/locks").status_code == 200  # the user's other logins live on


def test_sign_out_with_the_configured_key_revokes_it_until_reset(sim: KisiSimulator) -> None:
    assert kisi(sim, "DELETE", "/login").status_code == 204
    assert_kisi_error(kisi(sim, "GET", "/login"), 401)
    assert admin(sim, "POST", "reset").status_code == 204
    assert kisi(sim, "GET", "/login").json() == {"id": 1, "user_id": 1}


def test_reset_forgets_logins_created_since(sim: KisiSimulator) -> None:
    secret = sign_in(sim).json()["secret"]
    sim.reset()
    assert_kisi_error(kisi(sim, "GET", "/login", key=secret), 401)
    assert sign_in(sim).json()["id"] == 2  # ids start again after the configured ones


def test_logins_are_listed_per_user_without_secrets(start_sim: Callable[..., KisiSimulator]
                                                    ) -> None:
    sim = start_sim(dataclasses.replace(ROOMY, keys={DEMO_KEY: 1, "other-user": 2}))
    for _ in range(2):
        sign_in(sim)
    listed = kisi(sim, "GET", "/logins")
    assert listed.status_code == 200
    assert listed.headers["X-Collection-Range"] == "0-9/3"
    assert [(row["id"], row["user_id"]) for row in listed.json()] == [(1, 1), (3, 1), (4, 1)]
    assert all("secret" not in row for row in listed.json())
    page = kisi(sim, "GET", "/logins?limit=1&offset=2")
    assert ([row["id"] for row in page.json()], page.headers["X-Collection-Range"]) == (
        [4], "2-2/3")
    assert [row["id"] for row in kisi(sim, "GET", "/logins", key="other-user").json()] == [2]
    assert_kisi_error(kisi(sim, "GET", "/logins?limit=251"), 400)


def test_a_login_is_deleted_by_id_only_by_its_own_user(start_sim: Callable[..., KisiSimulator]
                                                       ) -> None:
    sim = start_sim(dataclasses.replace(ROOMY, keys={DEMO_KEY: 1, "other-user": 2}))
    login = sign_in(sim).json()
    assert_kisi_error(kisi(sim, "DELETE", f"/logins/{login['id']}", key="other-user"), 403)
    assert_kisi_error(kisi(sim, "DELETE", "/logins/999"), 404)
    assert_kisi_error(kisi(sim, "DELETE", "/logins/abc"), 404)
    assert kisi(sim, "DELETE", f"/logins/{login['id']}").status_code == 204
    assert_kisi_error(kisi(sim, "GET", "/login", key=login["secret"]), 401)


def test_sign_out_elsewhere_keeps_only_the_current_login(sim: KisiSimulator) -> None:
    first, second = (sign_in(sim).json()["secret"] for _ in range(2))
    assert kisi(sim, "DELETE", "/login/elsewhere", key=second).status_code == 204
    assert [row["id"] for row in kisi(sim, "GET", "/logins", key=second).json()] == [3]
    for gone in (first, DEMO_KEY):
        assert_kisi_error(kisi(sim, "GET", "/login", key=gone), 401)


def test_other_schemes_map_a_configured_credential_to_its_user(
    start_sim: Callable[..., KisiSimulator]
) -> None:
    sim = start_sim(dataclasses.replace(ROOMY, credentials={
        "Bearer": {"oauth-token": 2}, "KISI-ACCESS-KEY": {"access": 3},
        "KISI-GROUP-LINK": {"link": 4}, "KISI-SERVICE": {"service": 5}}))
    for header, user_id in [("Bearer oauth-token", 2), ("bearer oauth-token", 2),
                            ("KISI-ACCESS-KEY access", 3), ("KISI-GROUP-LINK link", 4),
                            ("KISI-SERVICE service", 5)]:
        answer = kisi(sim, "GET", "/login", key=None, headers={"Authorization": header})
        assert answer.json()["user_id"] == user_id, header
    for header in ("Bearer access", f"Bearer {DEMO_KEY}", "KISI-LOGIN oauth-token"):
        assert_kisi_error(
            kisi(sim, "GET", "/login", key=None, headers={"Authorization": header}), 401)
    sim.update_faults({"revoked_keys": ["oauth-token"]})
    revoked = kisi(sim, "GET", "/login", key=None, headers={"Authorization": "Bearer oauth-token"})
    assert assert_kisi_error(revoked, 401)["code"] == "a1c402"


def test_the_log_names_the_scheme_and_the_credential_by_fingerprint(
    start_sim: Callable[..., KisiSimulator]
) -> None:
    sim = start_sim(dataclasses.replace(ROOMY, credentials={"Bearer": {"oauth-token": 2}}))
    secret = sign_in(sim, headers={"Authorization": "null"}).json()["secret"]
    kisi(sim, "GET", "/locks", key=secret)
    kisi(sim, "GET", "/locks", key=None, headers={"Authorization": "Bearer oauth-token"})
    kisi(sim, "GET", "/locks", key="null")
    kisi(sim, "GET", "/locks", key=None)
    log = [(e["route"], e["status"], e["auth_scheme"], e["credential"])
           for e in sim.stats()["requests"]]
    assert log == [
        ("/logins", 200, "null", None),
        ("/locks", 200, "KISI-LOGIN", key_fingerprint(secret)),
        ("/locks", 200, "Bearer", key_fingerprint("oauth-token")),
        ("/locks", 401, "KISI-LOGIN", None),
        ("/locks", 401, None, None),
    ]
    published = admin(sim, "GET", "stats").text
    assert secret not in published
    assert "oauth-token" not in published
    assert DEMO_PASSWORD not in published


def test_organizations_answer_one_organization(sim: KisiSimulator) -> None:
    answer = kisi(sim, "GET", "/organizations")
    assert answer.status_code == 200
    assert [org["id"] for org in answer.json()] == [1]


def test_accounts_and_credentials_from_the_environment() -> None:
    config = SimConfig.from_env({
        "KISI_SIM_ACCOUNTS": '{"Ada@Example.com": {"password": "pw-1", "user_id": 7}}',
        "KISI_SIM_CREDENTIALS": '{"bearer": {"tok": 2}, "KISI-SERVICE": {"svc": 3}}',
    })
    assert config.accounts == {"ada@example.com": Account("pw-1", 7)}
    assert config.credentials == {"Bearer": {"tok": 2}, "KISI-SERVICE": {"svc": 3}}
    assert SimConfig().accounts == {DEMO_EMAIL: Account(DEMO_PASSWORD, 1)}


@pytest.mark.parametrize(
    "value",
    ['{"not-an-email": {"password": "p-secret", "user_id": 1}}',
     '{"a@example.com": {"password": "p-secret"}}',
     '{"a@example.com": {"password": "", "user_id": 1}}',
     '{"a@example.com": "p-secret"}', "[]"],
)
def test_bad_accounts_are_named_without_the_password(value: str) -> None:
    with pytest.raises(SimConfigError, match="KISI_SIM_ACCOUNTS") as raised:
        SimConfig.from_env({"KISI_SIM_ACCOUNTS": value})
    assert "p-secret" not in str(raised.value)


@pytest.mark.parametrize(
    "value",
    ['{"KISI-LOGIN": {"s-secret": 1}}', '{"Basic": {"s-secret": 1}}',
     '{"Bearer": {"s-secret": 0}}', '{"Bearer": "s-secret"}'],
)
def test_bad_credentials_are_named_without_the_secret(value: str) -> None:
    with pytest.raises(SimConfigError, match="KISI_SIM_CREDENTIALS") as raised:
        SimConfig.from_env({"KISI_SIM_CREDENTIALS": value})
    assert "s-secret" not in str(raised.value)



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
    for forbidden in (secret, revoked, wrong):  # the scheme is shown, never the secret
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
        "auth_scheme": "KISI-LOGIN",
        "credential": key_fingerprint(secret),
    }
    assert [e["user_id"] for e in sim.stats()["requests"]] == [1, 1, None]
    assert [e["credential"] for e in sim.stats()["requests"]] == [
        key_fingerprint(k) for k in (secret, revoked, wrong)]


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
