"""Route policies: the defaults DESIGN.md promises, templates, and configuration errors."""

import json

import pytest

from kisi_gateway.core.policy import (
    HOUR,
    InvalidPathError,
    PolicyConfigError,
    PolicyTable,
    route_template,
)


@pytest.mark.parametrize(
    ("method", "path", "template", "policy", "attempts", "deadline", "repeat"),
    [
        ("POST", "/locks/42/unlock", "/locks/{id}/unlock", "unlock", 4, 30.0, True),
        ("GET", "/locks", "/locks", "read", 12, 24 * HOUR, True),
        ("GET", "/users/7", "/users/{id}", "read", 12, 24 * HOUR, True),
        ("PATCH", "/groups/3", "/groups/{id}", "write", 10, 24 * HOUR, True),
        ("PUT", "/places/3", "/places/{id}", "write", 10, 24 * HOUR, True),
        ("DELETE", "/role_assignments/9", "/role_assignments/{id}", "write", 10, 24 * HOUR, True),
        ("POST", "/users", "/users", "create", 10, 24 * HOUR, False),
        ("POST", "/locks/42/lock_down", "/locks/{id}/lock_down", "create", 10, 24 * HOUR, False),
    ],
)
def test_default_policies(method, path, template, policy, attempts, deadline, repeat) -> None:
    route = PolicyTable.default().resolve(method, path)
    assert route.template == template
    assert route.key == f"{method} {template}"
    assert (route.policy.name, route.policy.max_attempts) == (policy, attempts)
    assert (route.policy.deadline_s, route.policy.repeat_unknown) == (deadline, repeat)


@pytest.mark.parametrize(
    "path",
    [
        "", "locks", "//evil.example/locks", "/../etc/passwd", "/locks/..", "/locks/%2e%2e",
        "/http://evil.example", "/locks/1/unlock?x=1", "/Locks", "/locks/1 2",
        "/locks/1/unlock/1/2/3/4/5/6", "/", "/locks//unlock", "/locks/\x00", "/locks/a\r\nb",
        "/" + "a" * 65,
    ],
)
def test_paths_that_are_not_kisi_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidPathError):
        route_template(path)


@pytest.mark.parametrize(
    "path",
    ["/locks%2f1", "/locks%2F1", "/locks%5c1", "/locks%5C1", "/locks%3f1", "/locks%3Fx=1",
     "/locks%23", "/locks/%2e%2e", "/locks/%2E%2E/users", "/%6Cocks", "/locks/1%2Funlock"],
)
def test_every_percent_escape_is_refused_never_decoded(path: str) -> None:
    with pytest.raises(InvalidPathError, match="percent-encoded"):
        route_template(path)


def test_head_has_no_route_policy_it_is_never_forwarded() -> None:
    with pytest.raises(InvalidPathError, match="no route policy"):
        PolicyTable.default().resolve("HEAD", "/locks")


def test_only_unlocks_have_priority_and_everyone_books_as_far_as_they_wait() -> None:
    table = PolicyTable.default()
    assert [name for name, p in table.policies.items() if p.priority] == ["unlock"]
    assert all(p.book_ahead_s == 25.0 for p in table.policies.values())
    custom = PolicyTable.from_config(
        '{"policies": {"read": {"book_ahead_s": 2.5, "priority": true}}}')
    assert custom.by_name("read").book_ahead_s == 2.5
    assert custom.by_name("read").priority


def test_trailing_slash_and_string_ids() -> None:
    assert route_template("/locks/") == "/locks"
    assert route_template("/event_sets/abc-123_x") == "/event_sets/{id}"


def test_configuration_changes_and_adds_policies_and_rules() -> None:
    table = PolicyTable.from_config(json.dumps({
        "policies": {
            "unlock": {"max_attempts": 3, "deadline_s": 20},
            "door": {"max_attempts": 2, "deadline_s": 10, "repeat_unknown": True, "cap_s": 4},
        },
        "rules": [{"method": "POST", "template": "/locks/{id}/lock_down", "policy": "door"}],
    }))
    unlock = table.resolve("POST", "/locks/1/unlock").policy
    assert (unlock.max_attempts, unlock.deadline_s, unlock.backoff.cap_s) == (3, 20.0, 8.0)
    door = table.resolve("POST", "/locks/1/lock_down").policy
    assert (door.name, door.max_attempts, door.backoff.cap_s) == ("door", 2, 4.0)
    assert table.resolve("GET", "/locks").policy.name == "read"
    assert table.longest_attempts == 12


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"policy": {}}', "unknown keys"),
        ('{"policies": {"unlock": {"max_attempts": 0}}}', "policies.unlock.max_attempts"),
        ('{"policies": {"unlock": {"max_attempts": "4"}}}', "policies.unlock.max_attempts"),
        ('{"policies": {"read": {"deadline_s": 9999999}}}', "policies.read.deadline_s"),
        ('{"policies": {"read": {"retries": 3}}}', "policies.read has unknown fields"),
        ('{"policies": {"read": {"base_s": 10, "cap_s": 5}}}', "policies.read"),
        ('{"policies": {"read": {"repeat_unknown": "yes"}}}', "policies.read.repeat_unknown"),
        ('{"policies": {"new": {"max_attempts": 2}}}', "policies.new is new"),
        ('{"rules": [{"method": "POST", "template": "/x", "policy": "nope"}]}', "rules[0].policy"),
        ('{"rules": [{"method": "post", "template": "/x", "policy": "read"}]}', "rules[0].method"),
        ('{"rules": [{"method": "GET", "template": "/x/7", "policy": "read"}]}',
         "rules[0].template"),
        ('{"rules": [{"method": "GET"}]}', "rules[0] needs"),
        ('{"policies": {"read": {"book_ahead_s": 0}}}', "policies.read.book_ahead_s"),
        ('{"policies": {"read": {"book_ahead_s": 60}}}', "policies.read.book_ahead_s"),
    ],
)
def test_bad_configuration_names_the_entry(config: str, names: str) -> None:
    with pytest.raises(PolicyConfigError, match=names.replace("[", r"\[").replace("]", r"\]")):
        PolicyTable.from_config(config)
