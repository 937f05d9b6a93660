"""Kisi's documented API table: which paths exist, which bodies Kisi surely refuses, overrides."""

import doctest
import json
import math
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kisi_gateway.core import kisi_api
from kisi_gateway.core import kisi_api_data as data
from kisi_gateway.core.kisi_api import (
    BLANK,
    BLANK_EMAIL,
    ID_SEGMENT,
    Documented,
    KisiApiConfigError,
    MethodUndocumented,
    PathUndocumented,
    check_body,
    default_table,
    documented_routes,
    from_config,
    match,
)

DETERMINISTIC = settings(derandomize=True, database=None, deadline=None, max_examples=300)
PLACEHOLDER = re.compile(r"\{[^}]+\}")
LITERALS = {s for op in documented_routes() for s in op.template.split("/") if s[:1] != "{"}


def fill(template: str, value: str = "42") -> str:
    return PLACEHOLDER.sub(value, template)


def test_the_docstring_examples_hold() -> None:
    result = doctest.testmod(kisi_api)
    assert result.attempted >= 5
    assert result.failed == 0


# -- routes ----------------------------------------------------------------------------------


def test_the_table_holds_every_documented_operation_once() -> None:
    keys = [op.key for op in documented_routes()]
    assert len(keys) == 227
    assert len(set(keys)) == 227
    assert {op.source for op in documented_routes()} <= set(data.SOURCES)


@pytest.mark.parametrize("operation", documented_routes(), ids=lambda op: op.key)
def test_every_documented_route_resolves_to_itself(operation) -> None:
    found = match(operation.method, fill(operation.template))
    assert isinstance(found, Documented)
    assert found.operation == operation
    assert found.key == operation.key
    assert [name for name, _ in found.params] == [
        p[1:-1] for p in PLACEHOLDER.findall(operation.template)]
    assert all(value == "42" for _, value in found.params)


@pytest.mark.parametrize(
    ("method", "path", "key"),
    [
        ("POST", "/locks/7/unlock", "POST /locks/{id}/unlock"),
        ("GET", "/calendar/summary", "GET /calendar/summary"),
        ("DELETE", "/login/elsewhere", "DELETE /login/elsewhere"),
        ("DELETE", "/login", "DELETE /login"),
        ("POST", "/card_assignments/tok-EN_1/activate_with_token",
         "POST /card_assignments/{activation_token}/activate_with_token"),
        ("POST", "/cards/abc/activate_with_token",
         "POST /cards/{activationToken}/activate_with_token"),
        ("POST", "/controllers/T0K3N/assign", "POST /controllers/{token}/assign"),
        ("POST", "/user/2fa/activate", "POST /user/2fa/activate"),
        ("PATCH", "/users/password", "PATCH /users/password"),
        ("POST", "/users/password", "POST /users/password"),
        ("PATCH", "/users/12", "PATCH /users/{id}"),
        ("POST", "/users/sign_up", "POST /users/sign_up"),
        ("POST", "/logins/resolve", "POST /logins/resolve"),
        ("DELETE", "/logins/9", "DELETE /logins/{id}"),
        ("GET", "/holiday_calendars/regions", "GET /holiday_calendars/regions"),
        ("GET", "/holiday_calendars/us-ca/holidays", "GET /holiday_calendars/{region}/holidays"),
        # A literal that leads nowhere gives way to the placeholder beside it.
        ("GET", "/holiday_calendars/regions/holidays", "GET /holiday_calendars/{region}/holidays"),
        ("GET", "/organizations/find/public", "GET /organizations/{domain}/public"),
        ("POST", "/organizations/find", "POST /organizations/find"),
        ("GET", "/locks/", "GET /locks"),  # one trailing slash is harmless
        ("HEAD", "/locks/3", "HEAD /locks/{id}"),  # Kisi serves HEAD wherever GET is
    ],
)
def test_literal_segments_beat_placeholders(method: str, path: str, key: str) -> None:
    found = match(method, path)
    assert isinstance(found, Documented)
    assert found.key == key


@pytest.mark.parametrize(
    ("method", "path", "template", "allowed"),
    [
        ("GET", "/users/password", "/users/password", ("PATCH", "POST")),
        ("DELETE", "/logins/resolve", "/logins/resolve", ("POST",)),
        ("GET", "/login/elsewhere", "/login/elsewhere", ("DELETE",)),
        ("PUT", "/locks/3", "/locks/{id}", ("DELETE", "GET", "HEAD", "PATCH")),
        ("PUT", "/places", "/places", ("GET", "HEAD", "POST")),
        ("GET", "/locks/3/unlock", "/locks/{id}/unlock", ("POST",)),
        ("OPTIONS", "/users", "/users", ("GET", "HEAD", "POST")),
        ("post", "/users", "/users", ("GET", "HEAD", "POST")),  # methods are exact
    ],
)
def test_a_documented_path_with_another_method_is_a_405(method, path, template, allowed) -> None:
    found = match(method, path)
    assert found == MethodUndocumented(method, template, allowed)


@pytest.mark.parametrize(
    "path",
    [
        "/zq0001x", "/locks/1/zz", "/locks//1", "/locks//", "/", "", "locks", "//locks",
        "/Locks", "/locks/1/unlock/extra", "/locks/..", "/locks/../users", "/locks/%2f",
        "/locks/1%2F2/unlock", "/locks/a b", "/locks/1\n", "/locks/1\r\n", "/locks/\x00",
        "/locks?limit=1", "/locks#x", "/locks/" + "9" * 129, "/organizations/acme.io/public",
        "/users/password/x", "/calendar", "/" + "a/" * 600, "/locks/" + "x" * 5000,
        "https://api.kisi.io/locks", "/locks/1/unlock/",
    ],
)
def test_invented_or_malformed_paths_match_nothing(path: str) -> None:
    if path == "/locks/1/unlock/":
        assert isinstance(match("POST", path), Documented)  # the trailing-slash control case
        return
    assert match("GET", path) == PathUndocumented("GET")
    assert match("POST", path) == PathUndocumented("POST")


@pytest.mark.parametrize(
    ("found", "key"),
    [
        (match("GET", "/zq0001x"), "GET (undocumented)"),
        (match("BREW", "/zq0001x"), "OTHER (undocumented)"),
        (match("BREW", "/locks"), "OTHER /locks"),
        (match("PUT", "/locks/1"), "PUT /locks/{id}"),
        (match("GET", "/locks/1"), "GET /locks/{id}"),
    ],
)
def test_route_keys_stay_bounded_whatever_the_caller_sends(found, key: str) -> None:
    assert found.key == key


# -- route properties ------------------------------------------------------------------------

ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


@DETERMINISTIC
@given(method=st.text(max_size=10), path=st.text(max_size=300))
def test_match_never_raises_on_any_text(method: str, path: str) -> None:
    assert isinstance(match(method, path), Documented | MethodUndocumented | PathUndocumented)


@DETERMINISTIC
@given(method=st.sampled_from(["GET", "POST"]),
       path=st.lists(st.sampled_from([*sorted(LITERALS), "1", "", "..", "%2f", "{id}"]),
                     max_size=6).map(lambda parts: "/" + "/".join(parts)))
def test_match_never_raises_on_paths_made_of_kisi_words(method: str, path: str) -> None:
    found = match(method, path)
    if isinstance(found, Documented):
        assert found.operation.template.count("/") == path.removesuffix("/").count("/")


@DETERMINISTIC
@given(operation=st.sampled_from(documented_routes()),
       ids=st.lists(st.text(ID_ALPHABET, min_size=1, max_size=128), min_size=3, max_size=3))
def test_a_filled_template_always_matches_itself(operation, ids: list[str]) -> None:
    assume(not set(ids) & LITERALS)  # an id spelled like a sibling literal is the literal
    values = iter(ids)
    path = PLACEHOLDER.sub(lambda _: next(values), operation.template)
    found = match(operation.method, path)
    assert isinstance(found, Documented)
    assert found.operation == operation
    assert [value for _, value in found.params] == ids[: len(found.params)]


BAD_IDS = st.one_of(
    st.just(""), st.just(".."), st.just("."), st.just("%2f"), st.just("%2F"),
    st.text(ID_ALPHABET, max_size=5).flatmap(
        lambda head: st.sampled_from(["/", "..", "%2f", " ", "\n", ".", "?", "#", "é"]).map(
            lambda bad: head + bad)),
    st.text(ID_ALPHABET, min_size=129, max_size=140),
)


@DETERMINISTIC
@given(operation=st.sampled_from([op for op in documented_routes() if "{" in op.template]),
       bad=BAD_IDS)
def test_ids_with_slashes_dots_escapes_or_nothing_never_match(operation, bad: str) -> None:
    found = match(operation.method, PLACEHOLDER.sub(bad, operation.template, count=1))
    if bad and "/" not in bad:  # one segment no placeholder and no literal accepts
        assert not isinstance(found, Documented)
    if isinstance(found, Documented):
        # A slash shifts the segments ("/cameras/0/" is "/cameras/0"), an empty last id leaves
        # a trailing slash ("/cameras/" is "/cameras"); the bad id never becomes a value.
        assert bad not in {value for _, value in found.params}
        assert all(ID_SEGMENT.fullmatch(value) for _, value in found.params)


# -- bodies ----------------------------------------------------------------------------------

ADA = {"name": "Ada", "email": "ada@example.com"}


@pytest.mark.parametrize(
    ("route", "body", "errors"),
    [
        # users
        ("POST /users", {"user": ADA}, None),
        ("POST /users", {"user": {**ADA, "metadata": {"team": "blue"}, "notes": None}}, None),
        ("POST /users", {"user": {**ADA, "favourite_colour": "teal"}}, None),  # unknown passes
        ("POST /users", {"user": {"name": "No Email"}}, {"email": [BLANK_EMAIL]}),
        ("POST /users", {"user": {"email": None}}, {"email": [BLANK_EMAIL]}),
        ("POST /users", {"user": {"email": 42}}, {"email": ["must be a string"]}),
        ("POST /users", {"user": {**ADA, "access_enabled": "yes"}},
         {"access_enabled": ["must be true or false"]}),
        ("POST /users", {"user": {**ADA, "access_enabled": "false"}}, None),
        ("POST /users", {"user": {**ADA, "metadata": ["a"]}}, {"metadata": ["must be an object"]}),
        ("POST /users", {}, {"user": [BLANK]}),
        ("POST /users", None, {"user": [BLANK]}),
        ("POST /users", [ADA], {"user": [BLANK]}),
        ("POST /users", {"user": "ada@example.com"}, {"user": ["must be an object"]}),
        ("POST /users", {"user": None}, {"user": [BLANK]}),
        ("PATCH /users/{id}", {"user": {"name": "Ada L."}}, None),
        ("PATCH /users/{id}", {"user": {}}, None),
        ("PATCH /users/{id}", {"name": "Ada L."}, {"user": [BLANK]}),
        ("PATCH /users/{id}", {"user": {"name": None}}, None),  # optional: null is Kisi's call
        ("PATCH /users/{id}", {"user": {"access_enabled": 1}},
         {"access_enabled": ["must be true or false"]}),
        # groups
        ("POST /groups", {"group": {"name": "Night shift"}}, None),
        ("POST /groups", {"group": {"name": "Night", "place_id": None, "login_enabled": True}},
         None),
        ("POST /groups", {"group": {"description": "no name"}}, {"name": [BLANK]}),
        ("POST /groups", {"group": {"name": "N", "place_id": "x"}},
         {"place_id": ["must be an integer"]}),
        ("POST /groups", {"group": {"name": "N", "place_id": "12"}}, None),  # digits read fine
        ("PATCH /groups/{id}", {"group": {"name": "Day shift"}}, None),
        ("PATCH /groups/{id}", {"group": {"name": ["Day"]}}, {"name": ["must be a string"]}),
        # role assignments
        ("POST /role_assignments", {"role_assignment": {
            "role_id": "group_basic", "applies_to_type": "Group", "applies_to_id": 3,
            "assignee_type": "User", "assignee_id": 7}}, None),
        ("POST /role_assignments", {"role_assignment": {
            "role_id": "group_basic", "user_id": 7, "group_id": 3}}, None),  # deprecated form
        ("POST /role_assignments", {"role_assignment": {}}, {"role_id": [BLANK]}),
        ("POST /role_assignments", {"role_assignment": {
            "role_id": "x", "applies_to_type": "Galaxy", "assignee_id": "seven"}},
         {"applies_to_type": ["is not included in the list"],
          "assignee_id": ["must be an integer"]}),
        ("PATCH /role_assignments/{id}", {"role_assignment": {"role_id": "place_admin"}}, None),
        ("PATCH /role_assignments/{id}", {"role_assignment": {"notify": True}}, None),
        ("PATCH /role_assignments/{id}", {"role_assignment": {"notify": "2025-01-01T00:00:00Z"}},
         None),
        ("PATCH /role_assignments/{id}", {"role_assignment": {"role_id": 5}},
         {"role_id": ["must be a string"]}),
        # members (deprecated operations, still documented)
        ("POST /members", {"member": ADA}, None),
        ("POST /members", {"member": {"name": "Ada"}}, {"email": [BLANK_EMAIL]}),
        ("PATCH /members/{id}", {"member": {"notes": "moved"}}, None),
        ("PATCH /members/{id}", {"member": {"password_flow_enabled": "maybe"}},
         {"password_flow_enabled": ["must be true or false"]}),
        # places
        ("POST /places", {"place": {"name": "HQ", "address": "1 Main St"}}, None),
        ("POST /places", {"place": {"name": "HQ", "address": "1 Main St", "latitude": "52.5"}},
         None),
        ("POST /places", {"place": {"name": "HQ"}}, {"address": [BLANK]}),
        ("POST /places", {"place": {"name": "HQ", "address": "x" * 501}},
         {"address": ["is too long (maximum is 500 characters)"]}),
        ("POST /places", {"place": {"name": "HQ", "address": "x", "latitude": "north"}},
         {"latitude": ["is not a number"]}),
        ("PATCH /places/{id}", {"place": {"time_zone": "Europe/London"}}, None),
        ("PATCH /places/{id}", {"place": {"longitude": True}}, {"longitude": ["is not a number"]}),
        # locks
        ("POST /locks", {"lock": {"name": "Front door", "place_id": 3}}, None),
        ("POST /locks", {"lock": {"name": "Front door", "place_id": 3.0}}, None),
        ("POST /locks", {"lock": {"name": "Front door"}}, {"place_id": [BLANK]}),
        ("POST /locks", {"lock": {}}, {"name": [BLANK], "place_id": [BLANK]}),
        ("POST /locks", {"lock": {"name": "Door", "place_id": 3.5}},
         {"place_id": ["must be an integer"]}),
        ("POST /locks", {"lock": {"name": "Door", "place_id": 10**400}}, None),
        ("POST /locks", {"lock": {"name": "Door", "place_id": 3, "latitude": math.nan}},
         {"latitude": ["is not a number"]}),
        ("PATCH /locks/{id}", {"lock": {"name": "Back door"}}, None),
        ("PATCH /locks/{id}", {"lock": {"favorite": None, "order_id": None}}, None),
        ("PATCH /locks/{id}", {"lock": "Back door"}, {"lock": ["must be an object"]}),
        # unlock: the body is optional, and so are its wrappers
        ("POST /locks/{id}/unlock", None, None),
        ("POST /locks/{id}/unlock", {}, None),
        ("POST /locks/{id}/unlock", {"context": {"location": {"latitude": 1.5, "longitude": 2}},
                                     "lock": {"proximity_proof": None}}, None),
        ("POST /locks/{id}/unlock", {"lock": {}}, None),  # nullable: absent reads as null
        ("POST /locks/{id}/unlock", {"context": {"location": {"latitude": 1.5}}},
         {"location.longitude": [BLANK]}),
        ("POST /locks/{id}/unlock", {"context": {"services": [{"type": "BLE"}, {"type": "WIFI"},
                                                              "NFC"]}},
         {"services[1].type": ["is not included in the list"],
          "services[2]": ["must be an object"]}),
        ("POST /locks/{id}/unlock", {"context": {"services": {"type": "BLE"}}},
         {"services": ["must be an array"]}),
        # other documented constraints: ranges, lengths, patterns, enums, a string wrapper
        ("POST /cameras", {"camera": {"remote_id": "c1", "lock_id": None, "clip_duration": 61}},
         {"clip_duration": ["must be less than or equal to 60"]}),
        ("POST /cameras", {"camera": {"remote_id": "c1", "snapshot_offset": "-31"}},
         {"snapshot_offset": ["must be greater than or equal to -30"]}),
        ("POST /card_assignments", {"card_assignment": {
            "assignee_type": "User", "assignee_id": 1, "card_id": 2, "two_factor_pin": "12a4"}},
         {"two_factor_pin": ["is invalid"]}),
        ("POST /users/sign_up", {"user": {"password": "short", "terms_and_conditions": True}},
         {"password": ["is too short (minimum is 8 characters)"], "token": [BLANK]}),
        ("POST /users/sign_up", {"token": {"jwt": "x"}, "user": {
            "password": "long enough", "terms_and_conditions": "true"}},
         {"token": ["must be a string"]}),
        ("POST /signed_upload_urls", {"signed_upload_url": {"file_name": "a.png",
                                                            "file_type": "gif"}},
         {"file_type": ["is not included in the list"]}),
        # sign-in: wrappers relaxed (the spec's prose makes the user fields conditional)
        ("POST /logins", {"user": {"email": "a@b.c", "password": "pw", "domain": "acme"}}, None),
        ("POST /logins", {"login": {"type": "api", "name": "sync"}}, None),
        ("POST /logins", {"login": {"type": "robot"}}, {"type": ["is not included in the list"]}),
        # routes without a documented body are never checked
        ("GET /users", {"user": 3}, None),
        ("DELETE /locks/{id}", "anything", None),
        ("POST /locks/{id}/lock_down", {"lock": 1}, None),
        ("POST /nowhere", {}, None),
    ],
)
def test_bodies_kisi_would_surely_refuse(route: str, body, errors) -> None:
    assert check_body(route, body) == (None if errors is None else {"errors": errors})


def test_check_body_takes_a_match_too() -> None:
    found = match("POST", "/users")
    assert isinstance(found, Documented)
    assert check_body(found, {"user": {}}) == {"errors": {"email": [BLANK_EMAIL]}}


def test_errors_are_kisi_shaped_json() -> None:
    errors = check_body("POST /locks", {"lock": {"place_id": "x"}})
    assert json.loads(json.dumps(errors)) == {
        "errors": {"name": [BLANK], "place_id": ["must be an integer"]}}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=12,
)


@st.composite
def body_for(draw: st.DrawFn, route: str) -> object:
    """Documents shaped like the route's body (its own wrapper and field names), filled with
    any JSON at all, so the checker is driven deep into every rule."""
    paths = [row[0] for row in data.BODIES[route]]

    def shaped(prefix: str) -> object:
        names = {p[len(prefix):].split(".")[0].removesuffix("[]") for p in paths
                 if p.startswith(prefix) and p != prefix}
        if not names or draw(st.integers(0, 4)) == 0:
            return draw(JSON)
        doc: dict[str, object] = {}
        for name in sorted(names):
            if draw(st.booleans()):
                field = prefix + name
                array = any(p.startswith(field + "[].") for p in paths)
                doc[name] = [shaped(field + "[]."), draw(JSON)] if array else shaped(field + ".")
        return doc

    return shaped("")


@DETERMINISTIC
@given(data_=st.data(), route=st.sampled_from(sorted(data.BODIES)))
def test_check_body_never_raises_and_always_answers_kisi_shaped(data_, route: str) -> None:
    result = check_body(route, data_.draw(body_for(route)))
    if result is not None:
        assert set(result) == {"errors"}
        assert result["errors"]
        assert all(isinstance(v, list) and all(isinstance(m, str) for m in v)
                   for v in result["errors"].values())


# -- overrides -------------------------------------------------------------------------------


def test_no_overrides_is_the_documented_table() -> None:
    assert from_config(None) is default_table()
    assert from_config("  ") is default_table()


def test_overrides_extend_mark_and_relax() -> None:
    table = from_config(json.dumps({
        "extra_routes": ["GET /beta_things/{id}", "GET /locks"],
        "pass_unknown": ["POST /locks/{id}/hold", "POST /groups"],
        "skip_body_checks": ["POST /places", "GET /beta_things/{id}"],
    }))
    beta = table.match("GET", "/beta_things/3")
    assert isinstance(beta, Documented)
    assert not beta.warn
    assert (beta.key, beta.operation.source, beta.params) == (
        "GET /beta_things/{id}", "config", (("id", "3"),))
    locks = table.match("GET", "/locks")  # already documented: Kisi's facts are kept
    assert isinstance(locks, Documented)
    assert locks.operation.source == "routes"
    hold = table.match("POST", "/locks/9/hold")
    assert isinstance(hold, Documented)
    assert hold.warn
    groups = table.match("POST", "/groups")
    assert isinstance(groups, Documented)
    assert groups.warn
    assert table.check_body(groups, {}) is None  # pass-unknown routes are not checked
    assert table.check_body("POST /places", {}) is None
    assert table.check_body("POST /users", {}) == {"errors": {"user": [BLANK]}}
    assert table.match("GET", "/zq0001x") == PathUndocumented("GET", let_through=False)
    assert match("GET", "/beta_things/3") == PathUndocumented("GET")  # the default is untouched


def test_undocumented_requests_may_be_let_through_and_body_checks_switched_off() -> None:
    table = from_config('{"let_undocumented_through": true, "body_checks": false}')
    assert table.match("GET", "/zq0001x") == PathUndocumented("GET", let_through=True)
    assert table.match("PUT", "/locks/1") == MethodUndocumented(
        "PUT", "/locks/{id}", ("DELETE", "GET", "HEAD", "PATCH"), let_through=True)
    assert table.check_body("POST /users", {}) is None
    assert isinstance(table.match("GET", "/locks"), Documented)


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ("{not json", "KISI_OVERRIDES is not valid JSON"),
        ("[]", "KISI_OVERRIDES must be a JSON object"),
        ('{"extra_route": []}', "KISI_OVERRIDES has unknown keys ['extra_route']"),
        ('{"body_checks": "no"}', "KISI_OVERRIDES.body_checks must be true or false"),
        ('{"let_undocumented_through": 1}', "KISI_OVERRIDES.let_undocumented_through must be"),
        ('{"extra_routes": "GET /x"}', "KISI_OVERRIDES.extra_routes must be a list"),
        ('{"extra_routes": ["GET /x", "GET x"]}', "KISI_OVERRIDES.extra_routes[1] 'GET x'"),
        ('{"extra_routes": ["get /x"]}', "KISI_OVERRIDES.extra_routes[0] 'get /x'"),
        ('{"extra_routes": ["HEAD /x"]}', "KISI_OVERRIDES.extra_routes[0] 'HEAD /x'"),
        ('{"extra_routes": ["GET /x/7y?"]}', "KISI_OVERRIDES.extra_routes[0]"),
        ('{"extra_routes": ["GET /x//y"]}', "KISI_OVERRIDES.extra_routes[0]"),
        ('{"extra_routes": ["GET /X"]}', "KISI_OVERRIDES.extra_routes[0]"),
        ('{"extra_routes": ["GET /"]}', "KISI_OVERRIDES.extra_routes[0]"),
        ('{"pass_unknown": [3]}', "KISI_OVERRIDES.pass_unknown[0] 3"),
        # A new template may name a placeholder its own way where no other ends the same.
        ('{"pass_unknown": ["POST /locks/{lock_id}/hold", "GET /locks/{id}/hold2"]}', None),
        ('{"extra_routes": ["GET /locks/{lock_id}"]}',
         "KISI_OVERRIDES.extra_routes[0]: GET /locks/{lock_id}: same shape as /locks/{id}"),
        ('{"extra_routes": ["GET /a/{x}"], "pass_unknown": ["POST /a/{y}"]}',
         "KISI_OVERRIDES.pass_unknown[0]: POST /a/{y}: same shape as /a/{x}"),
        ('{"skip_body_checks": ["POST /user"]}',
         "KISI_OVERRIDES.skip_body_checks[0] 'POST /user' names no route"),
    ],
)
def test_bad_overrides_name_the_entry(raw: str, names: str | None) -> None:
    if names is None:
        found = from_config(raw, setting="KISI_OVERRIDES").match("POST", "/locks/3/hold")
        assert isinstance(found, Documented)
        assert found.params == (("lock_id", "3"),)
        return
    with pytest.raises(KisiApiConfigError, match=re.escape(names)):
        from_config(raw, setting="KISI_OVERRIDES")
