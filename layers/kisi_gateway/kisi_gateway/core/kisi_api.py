"""Kisi's documented API: which requests exist, and which bodies Kisi will surely refuse.

Kisi may suspend integrations that send too many bad requests, such as invented paths or bodies
missing a required field. This module spots both locally, from the table generated out of
Kisi's public OpenAPI document (:mod:`.kisi_api_data`; docs/kisi-api-table.md).

>>> found = match("POST", "/locks/42/unlock")
>>> (found.key, found.params)
('POST /locks/{id}/unlock', (('id', '42'),))
>>> match("GET", "/zq0001x")
PathUndocumented(method='GET', let_through=False)
>>> match("GET", "/users/password").allowed
('PATCH', 'POST')
>>> check_body("POST /users", {"user": {"name": "Ada"}})
{'errors': {'email': ["can't be blank or invalid"]}}

Pure: standard library only, no I/O, and nothing a caller sends makes it raise.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias, TypedDict

from kisi_gateway.core import kisi_api_data as data

# Placeholders accept what the gateway has always accepted as an id (policy._ID_SEGMENT);
# fullmatch, so a trailing newline never passes. Literals are compared as exact strings.
ID_SEGMENT = re.compile(r"[A-Za-z0-9_\-]{1,128}")
MAX_PATH_CHARS = 2048
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_ITEMS_CHECKED = 100  # array items looked at per field: the body size is bounded earlier
BLANK = "can't be blank"  # Kisi's (Rails') wording for a missing required attribute
# ... and for a missing e-mail, as Kisi's own 422 example (the spec's Errors schema) words it.
BLANK_EMAIL = "can't be blank or invalid"
_LITERAL = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]{0,63}\}")
# Scalars JSON APIs commonly read from text ("12" as an integer, "1.5", "true") pass.
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d{1,20}\s*")
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d{1,20}(?:\.\d{0,20})?|\.\d{1,20})(?:[eE][+-]?\d{1,3})?\s*")
_TYPE_MESSAGES = {"array": "must be an array", "boolean": "must be true or false",
                  "integer": "must be an integer", "number": "is not a number",
                  "object": "must be an object", "string": "must be a string"}


class KisiErrors(TypedDict):
    """Kisi's 422 body: ``{"errors": {"email": ["can't be blank"]}}``."""
    errors: dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One route of the table: a documented Kisi operation, or one a deployment added."""
    method: str
    template: str  # Kisi's own placeholder names: /card_assignments/{activation_token}/...
    operation_id: str
    source: str  # a key of kisi_api_data.SOURCES, or "config"

    @property
    def key(self) -> str:
        """``"POST /locks/{id}/unlock"``: stable, bounded, fit for metrics and guard scopes."""
        return f"{self.method} {self.template}"


@dataclass(frozen=True, slots=True)
class Documented:
    """The method and path name a route. ``warn``: a deployment's "pass unknown" route, to
    forward unchecked while counting a warning."""
    method: str
    operation: Operation
    params: tuple[tuple[str, str], ...]
    warn: bool = False

    @property
    def key(self) -> str:  # HEAD, served by Kisi wherever GET is, keeps its own method
        return f"{self.method} {self.operation.template}"


@dataclass(frozen=True, slots=True)
class MethodUndocumented:
    """The path names a route, but not for this method (answer 405 with ``allowed``).
    ``let_through``: the deployment forwards undocumented requests, with a warning."""
    method: str
    template: str
    allowed: tuple[str, ...]
    let_through: bool = False

    @property
    def key(self) -> str:
        return f"{_bounded(self.method)} {self.template}"


@dataclass(frozen=True, slots=True)
class PathUndocumented:
    """No route has this path (answer 404), or it is not a plain Kisi path at all.
    ``let_through``: the deployment forwards undocumented requests, with a warning."""
    method: str
    let_through: bool = False

    @property
    def key(self) -> str:
        return f"{_bounded(self.method)} (undocumented)"


Match: TypeAlias = Documented | MethodUndocumented | PathUndocumented


def _bounded(method: str) -> str:  # a caller's method as a metric dimension: never free text
    return method if method in (*METHODS, "HEAD", "OPTIONS") else "OTHER"


class KisiApiConfigError(ValueError):
    """Overrides that cannot be used; the message names the bad entry."""


@dataclass(slots=True)
class _Node:
    """One trie level: literal children, one placeholder child, the template ending here."""
    literals: dict[str, _Node] = field(default_factory=dict)
    placeholder: _Node | None = None
    template: str | None = None
    methods: dict[str, Operation] = field(default_factory=dict)


def _walk(node: _Node, segments: list[str], index: int) -> _Node | None:
    """The node whose template matches ``segments``; a literal beats a placeholder."""
    if index == len(segments):
        return node if node.template is not None else None
    literal = node.literals.get(segments[index])
    if literal is not None and (found := _walk(literal, segments, index + 1)) is not None:
        return found
    if node.placeholder is not None and ID_SEGMENT.fullmatch(segments[index]):
        return _walk(node.placeholder, segments, index + 1)
    return None


def _split(path: object, depth: int) -> list[str] | None:
    """The path's segments (one trailing slash allowed), or None when no route can match."""
    if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PATH_CHARS:
        return None
    parts = path[1:].removesuffix("/").split("/", depth + 1)
    return None if len(parts) > depth or "" in parts else parts


class KisiApi:
    """The route table with a deployment's overrides: :func:`default_table` or
    :func:`from_config` build one, :meth:`match` and :meth:`check_body` use it."""
    __slots__ = ("_body_checks", "_depth", "_let_through", "_operations", "_root", "_unchecked",
                 "_warn")

    def __init__(self, operations: Iterable[Operation], *, warn: Iterable[str] = (),
                 skip_body_checks: Iterable[str] = (), body_checks: bool = True,
                 let_undocumented_through: bool = False) -> None:
        self._root, self._depth, self._operations = _Node(), 0, dict[str, Operation]()
        for operation in operations:
            self._insert(operation)
        self._warn = frozenset(warn)
        self._unchecked = self._warn | frozenset(skip_body_checks)
        self._body_checks, self._let_through = body_checks, let_undocumented_through

    def _insert(self, operation: Operation) -> None:
        segments = operation.template.split("/")[1:]
        node = self._root
        for segment in segments:
            if _PLACEHOLDER.fullmatch(segment):
                node.placeholder = node = node.placeholder or _Node()
            else:
                node = node.literals.setdefault(segment, _Node())
        if node.template not in (None, operation.template):
            raise ValueError(f"{operation.key}: same shape as {node.template}, other names")
        node.template = operation.template
        # A route listed twice (a deployment adding one Kisi documented since) keeps the first.
        node.methods.setdefault(operation.method, operation)
        self._operations.setdefault(operation.key, node.methods[operation.method])
        self._depth = max(self._depth, len(segments))

    def match(self, method: str, path: str) -> Match:
        """The route ``method path`` (the Kisi path alone, no query) names, or how it is
        undocumented. Never raises; costs one dict lookup per segment."""
        segments = _split(path, self._depth)
        leaf = None if segments is None else _walk(self._root, segments, 0)
        if segments is None or leaf is None or leaf.template is None:
            return PathUndocumented(method, self._let_through)
        # Kisi (Rails) answers HEAD wherever it answers GET; no route documents HEAD itself.
        operation = leaf.methods.get("GET" if method == "HEAD" else method)
        if operation is None:
            allowed = (*leaf.methods, "HEAD") if "GET" in leaf.methods else tuple(leaf.methods)
            return MethodUndocumented(method, leaf.template, tuple(sorted(allowed)),
                                      self._let_through)
        names = leaf.template.split("/")[1:]
        params = tuple((n[1:-1], v) for n, v in zip(names, segments, strict=True) if n[0] == "{")
        return Documented(method, operation, params, warn=operation.key in self._warn)

    def check_body(self, route: str | Documented, document: object) -> KisiErrors | None:
        """Kisi's 422 body for a request body Kisi would surely refuse, else None.

        ``route``: a route key (``"POST /users"``) or a :class:`Documented` match;
        ``document``: the parsed JSON body (None when there is none, which reads as ``{}``).
        Only routes with documented bodies are checked; unknown fields always pass.

        >>> default_table().check_body("POST /locks", {"lock": {"name": "Door"}})
        {'errors': {'place_id': ["can't be blank"]}}
        """
        key = route if isinstance(route, str) else route.operation.key
        # data.BODIES first: the rule cache never grows past the documented bodies.
        if key not in data.BODIES or not self._body_checks or key in self._unchecked:
            return None
        errors: dict[str, list[str]] = {}
        _check_fields(document if isinstance(document, dict) else {}, _body_rules(key), None,
                      errors)
        return {"errors": errors} if errors else None


@dataclass(frozen=True, slots=True)
class FieldRule:
    """What Kisi documents for one wrapper, body field or nested field."""
    name: str
    kinds: frozenset[str]  # JSON types; "null" when nullable, "any" when left unchecked
    required: bool
    enum: tuple[str, ...]
    minimum: float | None
    maximum: float | None
    min_length: int | None
    max_length: int | None
    pattern: re.Pattern[str] | None
    fields: tuple[FieldRule, ...]  # an object's properties, or the properties of its items


@functools.cache
def _body_rules(key: str) -> tuple[FieldRule, ...]:
    """The rule tree of a route's body, built on first use (a cold start builds none)."""
    children: dict[str, list[data.FieldRow]] = {}
    for row in data.BODIES.get(key, ()):
        children.setdefault(row[0].rpartition(".")[0].removesuffix("[]"), []).append(row)

    def build(parent: str) -> tuple[FieldRule, ...]:
        return tuple(
            FieldRule(path.rpartition(".")[2], frozenset(kinds), required, enum, low, high,
                      shortest, longest, re.compile(pattern) if pattern else None, build(path))
            for path, kinds, required, enum, low, high, shortest, longest, pattern, _ in
            children.get(parent, ()))

    return build("")


def _check_fields(value: Mapping[str, object], rules: tuple[FieldRule, ...], prefix: str | None,
                  errors: dict[str, list[str]]) -> None:
    """Check one object's fields. Wrappers are named alone, their fields as Kisi names them
    (``email``, not ``user.email``), deeper ones by their path (``location.latitude``)."""
    for rule in rules:
        name = rule.name if prefix is None else prefix + rule.name
        item = value.get(rule.name)
        if item is None:
            # Absent and null read the same to Kisi: only a non-nullable required one fails.
            if rule.required and "null" not in rule.kinds:
                errors.setdefault(name, []).append(BLANK_EMAIL if rule.name == "email" else BLANK)
            continue
        if (problem := _problem(item, rule)) is not None:
            errors.setdefault(name, []).append(problem)
        elif isinstance(item, dict) and rule.fields:
            _check_fields(item, rule.fields, "" if prefix is None else name + ".", errors)
        elif isinstance(item, list) and rule.fields:
            for index, element in enumerate(item[:MAX_ITEMS_CHECKED]):
                if isinstance(element, dict):
                    _check_fields(element, rule.fields, f"{name}[{index}].", errors)
                else:
                    errors.setdefault(f"{name}[{index}]", []).append("must be an object")


def _problem(value: object, rule: FieldRule) -> str | None:
    """Kisi-worded message for a value that cannot be right for ``rule``, else None."""
    kinds, number = rule.kinds, float("nan")  # nan: no number to compare with the bounds
    if "any" in kinds:
        return None
    if isinstance(value, bool):
        fits = "boolean" in kinds
    elif isinstance(value, int):  # kept an int: a huge one never overflows a float
        fits, number = bool({"integer", "number"} & kinds), value
    elif isinstance(value, float):
        fits, number = math.isfinite(value) and (
            "number" in kinds or ("integer" in kinds and value.is_integer())), value
    elif isinstance(value, str) and "string" in kinds:
        return _text_problem(value, rule)
    elif isinstance(value, str):
        fits = "boolean" in kinds and value in ("true", "false")
        if ("integer" in kinds and _INTEGER_TEXT.fullmatch(value)) or (
                "number" in kinds and _NUMBER_TEXT.fullmatch(value)):
            fits, number = True, float(value)
    else:
        fits = ("object" if isinstance(value, dict) else "array") in kinds
    if not fits:
        return _TYPE_MESSAGES.get(min(kinds - {"null"}, default=""), "is invalid")
    if rule.minimum is not None and number < rule.minimum:  # nan compares false
        return f"must be greater than or equal to {rule.minimum:g}"
    if rule.maximum is not None and number > rule.maximum:
        return f"must be less than or equal to {rule.maximum:g}"
    return None


def _text_problem(value: str, rule: FieldRule) -> str | None:
    if rule.enum and value not in rule.enum:
        return "is not included in the list"
    if rule.min_length is not None and len(value) < rule.min_length:
        return f"is too short (minimum is {rule.min_length} characters)"
    if rule.max_length is not None and len(value) > rule.max_length:
        return f"is too long (maximum is {rule.max_length} characters)"
    if rule.pattern is not None and rule.pattern.fullmatch(value) is None:
        return "is invalid"
    return None


@functools.cache
def documented_routes() -> tuple[Operation, ...]:
    """Kisi's documented operations, in the order of the generated table."""
    return tuple(Operation(method, template, operation_id, source)
                 for method, template, operation_id, _, _, source in data.ROUTES)


@functools.cache
def default_table() -> KisiApi:
    """Kisi's documented routes without overrides, built once per process."""
    return KisiApi(documented_routes())


def match(method: str, path: str) -> Match:
    """:meth:`KisiApi.match` on Kisi's documented routes, without overrides."""
    return default_table().match(method, path)


def check_body(route: str | Documented, document: object) -> KisiErrors | None:
    """:meth:`KisiApi.check_body` on Kisi's documented bodies, without overrides."""
    return default_table().check_body(route, document)


_FLAGS = {"body_checks": True, "let_undocumented_through": False}
_LISTS = ("extra_routes", "pass_unknown", "skip_body_checks")


def from_config(raw: str | None, *, setting: str = "overrides") -> KisiApi:
    """The documented table with a deployment's overrides, from one JSON document.

    ``{"extra_routes": ["GET /beta_things/{id}"], "pass_unknown": ["POST /locks/{id}/hold"],
    "skip_body_checks": ["POST /places"], "body_checks": true, "let_undocumented_through":
    false}``, every key optional. Extra routes count as documented; "pass unknown" ones match
    with ``warn=True`` and skip body checks. Raises :class:`KisiApiConfigError` naming the bad
    entry, prefixed with ``setting`` (pass the name of the variable the document came from).
    """
    if raw is None or not raw.strip():
        return default_table()
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise KisiApiConfigError(f"{setting} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise KisiApiConfigError(f"{setting} must be a JSON object")
    if unknown := sorted(set(doc) - {*_FLAGS, *_LISTS}):
        raise KisiApiConfigError(f"{setting} has unknown keys {unknown}; known keys: "
                                 f"{sorted({*_FLAGS, *_LISTS})}")
    flags = {name: doc.get(name, default) for name, default in _FLAGS.items()}
    if bad := [name for name, value in flags.items() if not isinstance(value, bool)]:
        raise KisiApiConfigError(f"{setting}.{bad[0]} must be true or false")
    lists = {name: _route_entries(doc.get(name, []), f"{setting}.{name}") for name in _LISTS}
    added = {op.key: where for where, op in (*lists["extra_routes"], *lists["pass_unknown"])}
    known = {op.key for op in documented_routes()} | set(added)
    if bad := [f"{w} {op.key!r}" for w, op in lists["skip_body_checks"] if op.key not in known]:
        raise KisiApiConfigError(f"{bad[0]} names no route of the table")
    try:
        return KisiApi((*documented_routes(), *(op for _, op in lists["extra_routes"]),
                        *(op for _, op in lists["pass_unknown"])),
                       warn=[op.key for _, op in lists["pass_unknown"]],
                       skip_body_checks=[op.key for _, op in lists["skip_body_checks"]],
                       body_checks=flags["body_checks"],
                       let_undocumented_through=flags["let_undocumented_through"])
    except ValueError as exc:  # a template that clashes with one of the table
        where = added.get(str(exc).partition(":")[0], setting)
        raise KisiApiConfigError(f"{where}: {exc}") from exc


def _route_entries(entries: object, where: str) -> list[tuple[str, Operation]]:
    """``(where, operation)`` for each ``"METHOD /template"`` string of a list."""
    if not isinstance(entries, list):
        raise KisiApiConfigError(f'{where} must be a list of "METHOD /template" strings')
    found: list[tuple[str, Operation]] = []
    for index, entry in enumerate(entries):
        method, _, template = entry.partition(" ") if isinstance(entry, str) else ("", "", "")
        segments = template.split("/")
        if method not in METHODS or segments[0] or len(segments) < 2 or not all(
                _LITERAL.fullmatch(s) or _PLACEHOLDER.fullmatch(s) for s in segments[1:]):
            raise KisiApiConfigError(
                f'{where}[{index}] {entry!r}: write "METHOD /template" with METHOD one of '
                f"{'/'.join(METHODS)} and /-separated lower-case names or {{placeholders}}")
        found.append((f"{where}[{index}]", Operation(method, template, "", "config")))
    return found
