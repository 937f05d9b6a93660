"""Rebuild ``kisi_gateway/core/kisi_api_data.json`` from the facts about Kisi's documented API.

Inputs: ``kisi-routes.tsv`` and ``kisi-request-bodies.tsv`` (read from Kisi's public OpenAPI
document; by default in ``../shared`` beside the repository) and the hand-written
``tools/kisi_api_additions.tsv``. The output is one JSON file inside the package (one row a
line, so a refresh reads as a small diff), which ``kisi_gateway.core.kisi_api_data`` loads once
per process: the Lambdas parse no TSV at cold start, json.loads reads the rows at C speed, and
no module of the layer carries hundreds of lines of data.

    python tools/refresh_kisi_api.py            # rewrite the JSON file
    python tools/refresh_kisi_api.py --check    # exit 1 when the file is out of date

Every input row is checked (a route a body names must exist, a nested field needs its parent,
templates of one shape must name their placeholders alike); a bad row stops the run with its
file and line.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ADDITIONS = REPO / "tools" / "kisi_api_additions.tsv"
OUTPUT = REPO / "layers" / "kisi_gateway" / "kisi_gateway" / "core" / "kisi_api_data.json"
ROUTES_TSV = "kisi-routes.tsv"
BODIES_TSV = "kisi-request-bodies.tsv"

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
KINDS = ("string", "integer", "number", "boolean", "object", "array", "any")
_LITERAL = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]{0,63}\}")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[\])?")
# Constraints the checker can apply without doubt; every other note (formats, prose, defaults,
# deprecations) is kept out on purpose (docs/kisi-api-table.md, "What is not checked").
_ENUM = re.compile(r"enum: ([^ ()]+)(?: \(.*\))?")
_BOUND = re.compile(r"(min|max) (-?\d+(?:\.\d+)?)")
_LENGTH = re.compile(r"(minLength|maxLength) (\d+)")
_PATTERN = re.compile(r"pattern (\^\S+\$)")


class TableError(ValueError):
    """An input row that cannot go into the table; the message names its file and line."""


@dataclass(frozen=True)
class RouteFact:
    method: str
    template: str
    operation_id: str
    tag: str
    statuses: tuple[int, ...] | None
    source: str

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"


@dataclass(frozen=True)
class FieldFact:
    route: str
    path: str  # wrapper, wrapper.field, wrapper.parent.child, wrapper.list[].child
    kinds: tuple[str, ...]
    required: bool
    enum: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    source: str = ""


def _rows(path: Path, *, header: bool) -> Iterator[tuple[str, list[str]]]:
    """``(where, cells)`` for each data row; comments and blank lines are skipped."""
    with path.open(newline="", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\n")
            if (header and number == 1) or not text.strip() or text.startswith("#"):
                continue
            yield f"{path.name}:{number}", next(csv.reader([text], delimiter="\t",
                                                           quoting=csv.QUOTE_NONE))


def _template(text: str, where: str) -> str:
    segments = text.split("/")
    if segments[0] != "" or len(segments) < 2:
        raise TableError(f"{where}: template {text!r} must start with '/'")
    for segment in segments[1:]:
        if not (_LITERAL.fullmatch(segment) or _PLACEHOLDER.fullmatch(segment)):
            raise TableError(f"{where}: template {text!r} has a bad segment {segment!r}")
    return text


def _statuses(text: str, where: str) -> tuple[int, ...] | None:
    if text.strip() == "?":
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise TableError(f"{where}: statuses {text!r} are not comma-separated numbers") from exc


def _route(cells: Sequence[str], where: str, source: str) -> RouteFact:
    if len(cells) < 5:
        raise TableError(f"{where}: a route needs method, template, tag, operationId, statuses")
    method, template, tag, operation_id, statuses = (cell.strip() for cell in cells[:5])
    if method not in METHODS:
        raise TableError(f"{where}: unknown method {method!r}")
    return RouteFact(method, _template(template, where), operation_id, tag,
                     _statuses(statuses, where), source)


def _kinds(text: str, where: str) -> tuple[str, ...]:
    parts = [part.strip() for part in text.split("|")]
    kinds = ["array" if part == "array<object>" else part for part in parts]
    if any(kind not in (*KINDS, "null") for kind in kinds):
        raise TableError(f"{where}: unknown type {text!r}")
    return tuple(kinds)


def _constraints(fact: FieldFact, text: str) -> FieldFact:
    """``fact`` with the constraints of ``text`` that are unambiguous for its type."""
    if text.startswith("prose:"):
        return fact  # constraints told in words, not in the schema
    numeric = bool({"integer", "number"} & set(fact.kinds))
    textual = "string" in fact.kinds
    for token in (part.strip() for part in text.split(";")):
        if (found := _ENUM.fullmatch(token)) and textual:
            fact = replace(fact, enum=tuple(v for v in found[1].split("|") if v != "null"))
        elif (found := _BOUND.fullmatch(token)) and numeric:
            bound = float(found[2])
            fact = replace(fact, minimum=bound) if found[1] == "min" else replace(
                fact, maximum=bound)
        elif (found := _LENGTH.fullmatch(token)) and textual:
            length = int(found[2])
            fact = replace(fact, min_length=length) if found[1] == "minLength" else replace(
                fact, max_length=length)
        elif (found := _PATTERN.fullmatch(token)) and textual:
            fact = replace(fact, pattern=found[1])
    return fact


def _field(cells: Sequence[str], where: str, source: str) -> FieldFact:
    if len(cells) < 7:
        raise TableError(f"{where}: a field needs method, template, wrapper, field, type, "
                         "required, constraints")
    method, template, wrapper, name, kinds, required, constraints = (
        cell.strip() for cell in cells[:7])
    if method not in METHODS:
        raise TableError(f"{where}: unknown method {method!r}")
    if required not in ("yes", "no"):
        raise TableError(f"{where}: required must be yes or no, not {required!r}")
    path = wrapper if name == "-" else f"{wrapper}.{name}"
    if not all(_FIELD.fullmatch(part) for part in path.split(".")):
        raise TableError(f"{where}: bad field path {path!r}")
    fact = FieldFact(f"{method} {_template(template, where)}", path, _kinds(kinds, where),
                     required == "yes", source=source)
    return _constraints(fact, constraints)


@dataclass
class Table:
    """The table being built: routes in order, body fields per route in order, sources."""

    routes: dict[str, RouteFact]
    fields: dict[str, dict[str, FieldFact]]
    sources: dict[str, str]


def read_table(shared: Path, additions: Path) -> Table:
    """Read both TSVs and apply the additions; raises :class:`TableError` on a bad row."""
    table = Table({}, {}, {
        "routes": f"{ROUTES_TSV} (Kisi's public OpenAPI document)",
        "bodies": f"{BODIES_TSV} (Kisi's public OpenAPI document)",
    })
    for where, cells in _rows(shared / ROUTES_TSV, header=True):
        route = _route(cells, where, "routes")
        if route.key in table.routes:
            raise TableError(f"{where}: {route.key} is listed twice")
        table.routes[route.key] = route
    for where, cells in _rows(shared / BODIES_TSV, header=True):
        _add_field(table, _field(cells, where, "bodies"), where, replacing=False)
    for where, cells in _rows(additions, header=False):
        source_id = f"additions:{where.rsplit(':', 1)[1]}"
        table.sources[source_id] = cells[-1].strip()
        kind, rest = cells[0].strip(), cells[1:-1]
        if kind == "route":
            route = _route(rest, where, source_id)
            table.routes[route.key] = route
        elif kind == "field":
            _add_field(table, _field(rest, where, source_id), where, replacing=True)
        else:
            raise TableError(f"{where}: unknown row kind {kind!r} (route or field)")
    _check_shapes(table)
    return table


def _add_field(table: Table, fact: FieldFact, where: str, *, replacing: bool) -> None:
    if fact.route not in table.routes:
        raise TableError(f"{where}: {fact.route} is not a documented route")
    fields = table.fields.setdefault(fact.route, {})
    if fact.path in fields and not replacing:
        raise TableError(f"{where}: {fact.route} {fact.path} is listed twice")
    # An array's item fields (list[].child) hang under the array field itself (list).
    parent = fact.path.rsplit(".", 1)[0].removesuffix("[]") if "." in fact.path else None
    if parent is not None and parent not in fields:
        raise TableError(f"{where}: {fact.route} {fact.path} comes before its parent")
    fields[fact.path] = fact


def _check_shapes(table: Table) -> None:
    """Templates of one shape must spell their placeholders alike (one node per shape)."""
    seen: dict[str, str] = {}
    for route in table.routes.values():
        shape = _PLACEHOLDER.sub("{}", route.template)
        if seen.setdefault(shape, route.template) != route.template:
            raise TableError(f"{route.key}: same shape as {seen[shape]} with other names")


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=True)


def _route_row(route: RouteFact) -> list[object]:
    return [route.method, route.template, route.operation_id, route.tag,
            None if route.statuses is None else list(route.statuses), route.source]


def _field_row(fact: FieldFact) -> list[object]:
    return [fact.path, list(fact.kinds), fact.required, list(fact.enum), fact.minimum,
            fact.maximum, fact.min_length, fact.max_length, fact.pattern, fact.source]


def _digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def render(shared: Path, additions: Path) -> str:
    """The generated JSON text (deterministic: same inputs, same text)."""
    table = read_table(shared, additions)
    inputs = {ROUTES_TSV: shared / ROUTES_TSV, BODIES_TSV: shared / BODIES_TSV,
              additions.name: additions}
    routes = ",\n".join(_json(_route_row(route)) for route in table.routes.values())
    bodies = ",\n".join(
        f"{_json(key)}: [\n" + ",\n".join(f"  {_json(_field_row(f))}" for f in fields.values())
        + "\n]"
        for key, fields in table.fields.items()
    )
    header = {"generated": "by tools/refresh_kisi_api.py from the inputs below: do not edit",
              "inputs": {name: _digest(path) for name, path in inputs.items()}}
    sources = ",\n".join(f"  {_json(key)}: {_json(text)}" for key, text in table.sources.items())
    return (
        "{\n"
        f'"header": {_json(header)},\n'
        f'"sources": {{\n{sources}\n}},\n'
        f'"routes": [\n{routes}\n],\n'
        f'"bodies": {{\n{bodies}\n}}\n'
        "}\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the generated file; 0 when it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="folder with the two TSVs")
    parser.add_argument("--additions", type=Path, default=ADDITIONS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args(argv)
    try:
        text = render(args.shared, args.additions)
    except (TableError, OSError) as exc:
        print(f"refresh_kisi_api: {exc}", file=sys.stderr)
        return 2
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    if args.check:
        if current != text:
            print(f"{args.output} is out of date: run tools/refresh_kisi_api.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.output.write_text(text, encoding="utf-8")
    print(f"{args.output}: {text.count(chr(10))} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
