"""Route policies: how hard, and for how long, the gateway tries to deliver each kind of call.

One declarative table (:data:`DEFAULT_RULES`) maps a method and a path template to a named
policy (:data:`DEFAULT_POLICIES`). Configuration may change a policy's numbers or add rules;
a bad entry fails at start with a message that names it.

>>> table = PolicyTable.default()
>>> route = table.resolve("POST", "/locks/42/unlock")
>>> (route.template, route.policy.name, route.policy.deadline_s)
('/locks/{id}/unlock', 'unlock', 30.0)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from kisi_gateway.core.backoff import SQS_MAX_VISIBILITY_S, BackoffPolicy

HOUR = 3600.0
# SQS keeps a message at most 14 days (MessageRetentionPeriod 1,209,600 s): no deadline may
# outlive the queue that carries the request.
MAX_DEADLINE_S = 14 * 24 * HOUR
MAX_ATTEMPTS_LIMIT = 50
MAX_BOOK_AHEAD_S = 25.0  # the longest a caller may wait inline (Prefer: wait)


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """How a kind of call is retried.

    ``repeat_unknown``: may the gateway send again after a network failure that happened
    once the request was on the wire? Kisi has no idempotency key, so a repeated create
    creates twice; a repeated read or unlock is harmless within its deadline.
    """

    name: str
    max_attempts: int
    deadline_s: float
    repeat_unknown: bool
    backoff: BackoffPolicy = BackoffPolicy()
    # How far ahead a call may book a send slot in the shared budget (at most its own wait):
    # by default as far as it can wait, so a caller whose slot falls within its wait is
    # answered inline. Unlocks do not need a short horizon for others to leave them room:
    # ``priority`` gives them the slots the budget keeps free in a burst (ratelimit.Booking).
    book_ahead_s: float = MAX_BOOK_AHEAD_S
    priority: bool = False


# Defaults from DESIGN.md "Retry delays". Unlock: 4 attempts within 30 s, short delays.
DEFAULT_POLICIES: dict[str, RoutePolicy] = {
    "unlock": RoutePolicy(
        "unlock", 4, 30.0, repeat_unknown=True, backoff=BackoffPolicy(base_s=1.0, cap_s=8.0),
        priority=True,
    ),
    "read": RoutePolicy(
        "read", 12, 24 * HOUR, repeat_unknown=True, backoff=BackoffPolicy(2.0, 3600.0)
    ),
    "write": RoutePolicy(
        "write", 10, 24 * HOUR, repeat_unknown=True, backoff=BackoffPolicy(2.0, 3600.0)
    ),
    "create": RoutePolicy(
        "create", 10, 24 * HOUR, repeat_unknown=False, backoff=BackoffPolicy(2.0, 3600.0)
    ),
}


@dataclass(frozen=True, slots=True)
class RouteRule:
    """``method`` (or ``*``) and a path template (``*`` for any) naming a policy."""

    method: str
    template: str
    policy: str

    def matches(self, method: str, template: str) -> bool:
        return self.method in ("*", method) and self.template in ("*", template)


# First match wins: specific routes before the catch-alls.
DEFAULT_RULES: tuple[RouteRule, ...] = (
    RouteRule("POST", "/locks/{id}/unlock", "unlock"),
    RouteRule("GET", "*", "read"),
    RouteRule("PUT", "*", "write"),
    RouteRule("PATCH", "*", "write"),
    RouteRule("DELETE", "*", "write"),
    RouteRule("POST", "*", "create"),
)

_RESOURCE_SEGMENT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ID_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
MAX_SEGMENTS = 8


class InvalidPathError(ValueError):
    """A path that is not shaped like a Kisi API path."""


def route_template(path: str) -> str:
    """The path with its ids replaced by ``{id}``: Kisi paths alternate resource and id.

    Raises :class:`InvalidPathError` for anything that is not a plain Kisi path, so traversal,
    encoded tricks and absolute URLs never reach Kisi (they would count as bad requests).

    >>> route_template("/locks/42/unlock")
    '/locks/{id}/unlock'
    >>> route_template("/users")
    '/users'
    """
    if not path.startswith("/") or path.startswith("//"):
        raise InvalidPathError("path must start with a single '/'")
    if "%" in path:
        # One rule for every escape, %2F, %5C, %3F, %23 and %2E%2E alike: refused, never
        # decoded. No Kisi path needs one, and decoding would send a different path from the
        # one checked here (an encoded slash would become a new segment at Kisi).
        raise InvalidPathError("percent-encoded characters are refused; no Kisi path needs one")
    segments = path[1:].split("/")
    if segments and segments[-1] == "" and len(segments) > 1:
        segments = segments[:-1]  # one trailing slash is harmless
    if not segments or segments == [""]:
        raise InvalidPathError("path names no Kisi resource")
    if len(segments) > MAX_SEGMENTS:
        raise InvalidPathError(f"path has more than {MAX_SEGMENTS} segments")
    template: list[str] = []
    for index, segment in enumerate(segments):
        if index % 2 == 0:
            if not _RESOURCE_SEGMENT.match(segment):
                raise InvalidPathError(f"segment {index + 1} is not a Kisi resource name")
            template.append(segment)
        else:
            if not _ID_SEGMENT.match(segment):
                raise InvalidPathError(f"segment {index + 1} is not a valid id")
            template.append("{id}")
    return "/" + "/".join(template)


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved call: its method, template and the policy that governs it."""

    method: str
    template: str
    policy: RoutePolicy

    @property
    def key(self) -> str:
        """``"POST /locks/{id}/unlock"``: the bounded name used in metrics and guards."""
        return f"{self.method} {self.template}"


class PolicyConfigError(ValueError):
    """Route policy configuration that cannot be used; the message names the bad entry."""


@dataclass(frozen=True, slots=True)
class PolicyTable:
    """The policies and the rules that pick one for a call."""

    policies: Mapping[str, RoutePolicy]
    rules: tuple[RouteRule, ...]

    @classmethod
    def default(cls) -> PolicyTable:
        return cls(policies=dict(DEFAULT_POLICIES), rules=DEFAULT_RULES)

    def resolve(self, method: str, path: str) -> Route:
        """The route for ``method path``; raises :class:`InvalidPathError` on a bad path."""
        template = route_template(path)
        for rule in self.rules:
            if rule.matches(method, template):
                return Route(method, template, self.policies[rule.policy])
        raise InvalidPathError(f"no route policy for {method} {template}")

    def by_name(self, name: str) -> RoutePolicy:
        return self.policies[name]

    @property
    def longest_attempts(self) -> int:
        return max(p.max_attempts for p in self.policies.values())

    @classmethod
    def from_config(cls, raw: str | None) -> PolicyTable:
        """Defaults, changed by a JSON document (the ``ROUTE_POLICIES`` variable).

        ``{"policies": {"unlock": {"max_attempts": 5, "deadline_s": 20}},
        "rules": [{"method": "POST", "template": "/locks/{id}/lock_down", "policy": "unlock"}]}``
        Policies may be changed or added; rules are tried before the defaults.
        """
        table = cls.default()
        if raw is None or not raw.strip():
            return table
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise PolicyConfigError(f"ROUTE_POLICIES is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise PolicyConfigError("ROUTE_POLICIES must be a JSON object")
        unknown = set(doc) - {"policies", "rules"}
        if unknown:
            raise PolicyConfigError(f"ROUTE_POLICIES has unknown keys: {sorted(unknown)}")
        policies = dict(table.policies)
        for name, entry in _as_mapping(doc.get("policies", {}), "ROUTE_POLICIES.policies"):
            policies[name] = _policy_from(name, entry, policies.get(name))
        rules = tuple(_rules_from(doc.get("rules", []), policies)) + table.rules
        return cls(policies=policies, rules=rules)


def _as_mapping(value: object, where: str) -> Iterable[tuple[str, Any]]:
    if not isinstance(value, dict):
        raise PolicyConfigError(f"{where} must be an object")
    return value.items()


_POLICY_FIELDS = {f.name for f in fields(RoutePolicy)} - {"name", "backoff"}
_BACKOFF_FIELDS = {"base_s", "cap_s", "min_delay_s"}


def _policy_from(name: str, entry: object, base: RoutePolicy | None) -> RoutePolicy:
    where = f"ROUTE_POLICIES.policies.{name}"
    if not isinstance(entry, dict):
        raise PolicyConfigError(f"{where} must be an object")
    unknown = set(entry) - _POLICY_FIELDS - _BACKOFF_FIELDS
    if unknown:
        raise PolicyConfigError(f"{where} has unknown fields: {sorted(unknown)}")
    if base is None:
        missing = {"max_attempts", "deadline_s", "repeat_unknown"} - set(entry)
        if missing:
            raise PolicyConfigError(f"{where} is new and needs {sorted(missing)}")
        base = RoutePolicy(name, 1, 1.0, repeat_unknown=False)
    policy = replace(
        base,
        name=name,
        max_attempts=_int(entry, "max_attempts", base.max_attempts, where),
        deadline_s=_number(entry, "deadline_s", base.deadline_s, where),
        repeat_unknown=_bool(entry, "repeat_unknown", base.repeat_unknown, where),
        book_ahead_s=_number(entry, "book_ahead_s", base.book_ahead_s, where),
        priority=_bool(entry, "priority", base.priority, where),
        backoff=BackoffPolicy(
            base_s=_number(entry, "base_s", base.backoff.base_s, where),
            cap_s=_number(entry, "cap_s", base.backoff.cap_s, where),
            min_delay_s=_number(entry, "min_delay_s", base.backoff.min_delay_s, where),
        ),
    )
    _check(policy, where)
    return policy


def _check(policy: RoutePolicy, where: str) -> None:
    if not 1 <= policy.max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise PolicyConfigError(f"{where}.max_attempts must be 1..{MAX_ATTEMPTS_LIMIT}")
    if not 0 < policy.book_ahead_s <= MAX_BOOK_AHEAD_S:
        raise PolicyConfigError(f"{where}.book_ahead_s must be above 0 and at most 25")
    if not 1 <= policy.deadline_s <= MAX_DEADLINE_S:
        raise PolicyConfigError(f"{where}.deadline_s must be 1..{MAX_DEADLINE_S:.0f}")
    backoff = policy.backoff
    if not 0 < backoff.base_s <= backoff.cap_s <= SQS_MAX_VISIBILITY_S:
        raise PolicyConfigError(f"{where}: need 0 < base_s <= cap_s <= {SQS_MAX_VISIBILITY_S}")
    if not 0 <= backoff.min_delay_s <= backoff.cap_s:
        raise PolicyConfigError(f"{where}.min_delay_s must be 0..cap_s")


def _int(entry: dict[str, Any], key: str, default: int, where: str) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyConfigError(f"{where}.{key} must be an integer")
    return value


def _number(entry: dict[str, Any], key: str, default: float, where: str) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyConfigError(f"{where}.{key} must be a number")
    return float(value)


def _bool(entry: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise PolicyConfigError(f"{where}.{key} must be true or false")
    return value


def _rules_from(raw: object, policies: Mapping[str, RoutePolicy]) -> Iterable[RouteRule]:
    if not isinstance(raw, list):
        raise PolicyConfigError("ROUTE_POLICIES.rules must be a list")
    for index, entry in enumerate(raw):
        where = f"ROUTE_POLICIES.rules[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"method", "template", "policy"}:
            raise PolicyConfigError(f"{where} needs exactly method, template and policy")
        method, template, policy = entry["method"], entry["template"], entry["policy"]
        if not isinstance(method, str) or not (method == "*" or method.isupper()):
            raise PolicyConfigError(f"{where}.method must be an upper-case method or '*'")
        if policy not in policies:
            raise PolicyConfigError(f"{where}.policy names unknown policy {policy!r}")
        if template != "*":
            try:
                if route_template(template.replace("{id}", "0")) != template:
                    raise InvalidPathError("ids must be written {id}")
            except InvalidPathError as exc:
                raise PolicyConfigError(f"{where}.template: {exc}") from exc
        yield RouteRule(method, template, policy)
