"""The probe the gateway sends for a half-open scope: a safe read, never a caller's write."""

import pytest

from kisi_gateway.core.breaker import route_scope
from kisi_gateway.core.kisi_api import from_config
from kisi_gateway.core.outcome import classify_status
from kisi_gateway.core.probes import probe_for
from kisi_gateway.stores.memory import MemoryGuard

ME = "id-0a1b2c3d"


@pytest.mark.parametrize(("route", "read"), [
    ("POST /locks/{id}/unlock", "GET /locks"),
    ("PATCH /users/{id}", "GET /users"),
    ("POST /groups", "GET /groups"),
    ("DELETE /role_assignments/{id}", "GET /role_assignments"),
    ("GET /locks/{id}", "GET /locks"),
    ("GET /nothing_documented", "GET /login"),
])
def test_a_route_is_probed_with_a_read_of_its_collection(route: str, read: str) -> None:
    probe = probe_for(route_scope(ME, route), route)
    assert (f"{probe.method} {probe.path}", probe.observe_as) == (read, route)
    assert probe.method == "GET"


def test_the_account_is_probed_with_get_login() -> None:
    probe = probe_for(ME, "POST /locks/{id}/unlock")
    assert (probe.method, probe.path, probe.observe_as) == ("GET", "/login", "GET /login")


def test_a_deployments_extra_routes_can_serve_as_probes() -> None:
    api = from_config('{"extra_routes": ["GET /beta_things", "POST /beta_things/{id}/go"]}')
    probe = probe_for(route_scope(ME, "POST /beta_things/{id}/go"), "POST /beta_things/{id}/go",
                      api)
    assert probe.path == "/beta_things"


def test_only_the_elected_check_holds_a_probe_and_only_for_its_own_scopes() -> None:
    guard = MemoryGuard()
    for _ in range(5):
        guard.observe(ME, "GET /locks", classify_status(401), 0.0)
    assert guard.check(ME, "GET /locks", 1.0) is not None
    assert guard.check(ME, "GET /locks", 61.0) is None  # elected
    assert guard.probing(ME, "GET /locks") == [ME]
    assert guard.probing("id-99887766", "GET /locks") == []
    assert guard.check(ME, "GET /locks", 61.5) is not None  # the lease is held: paused
    guard.observe(ME, "GET /login", classify_status(200), 62.0)
    assert guard.probing(ME, "GET /locks") == []
    assert guard.check(ME, "GET /locks", 62.0) is None
