"""The generated table of Kisi's documented API: up to date, sourced, and built with care."""

import re
from pathlib import Path

import pytest

from kisi_gateway.core import kisi_api_data as data
from tools import refresh_kisi_api as refresh

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
ROUTES_HEADER = "method\tpath_template\ttag\toperationId\tdeclared_statuses\n"
BODIES_HEADER = "method\tpath_template\twrapper_key\tfield\ttype\trequired\tenum_or_format\n"


def test_the_committed_table_is_what_the_facts_generate() -> None:
    assert (SHARED / refresh.ROUTES_TSV).exists(), f"the shared facts are missing: {SHARED}"
    expected = refresh.render(SHARED, refresh.ADDITIONS)
    assert refresh.OUTPUT.read_text(encoding="utf-8") == expected, (
        "kisi_api_data.json is stale: run python tools/refresh_kisi_api.py")


def test_check_mode_reports_a_stale_module(tmp_path: Path) -> None:
    output = tmp_path / "kisi_api_data.json"
    assert refresh.main(["--shared", str(SHARED), "--output", str(output), "--check"]) == 1
    assert refresh.main(["--shared", str(SHARED), "--output", str(output)]) == 0
    assert refresh.main(["--shared", str(SHARED), "--output", str(output), "--check"]) == 0


def test_every_fact_says_where_it_comes_from() -> None:
    assert {row[-1] for row in data.ROUTES} <= set(data.SOURCES)
    assert {row[-1] for rows in data.BODIES.values() for row in rows} <= set(data.SOURCES)
    additions = [key for key in data.SOURCES if key.startswith("additions:")]
    assert additions
    assert all("openapi/" in data.SOURCES[key] for key in additions)


def test_the_main_write_routes_carry_their_required_fields() -> None:
    required = {
        route: sorted(row[0] for row in rows if row[2])
        for route, rows in data.BODIES.items()
    }
    assert required["POST /users"] == ["user", "user.email"]
    assert required["POST /groups"] == ["group", "group.name"]
    assert required["POST /role_assignments"] == ["role_assignment", "role_assignment.role_id"]
    assert required["POST /members"] == ["member", "member.email"]
    assert required["POST /places"] == ["place", "place.address", "place.name"]
    assert required["POST /locks"] == ["lock", "lock.name", "lock.place_id"]
    for route in ("PATCH /users/{id}", "PATCH /groups/{id}", "PATCH /role_assignments/{id}",
                  "PATCH /members/{id}", "PATCH /places/{id}", "PATCH /locks/{id}"):
        assert len(required[route]) == 1  # the wrapper alone


def _facts(tmp_path: Path, routes: str, bodies: str = "", additions: str = "") -> refresh.Table:
    (tmp_path / refresh.ROUTES_TSV).write_text(ROUTES_HEADER + routes)
    (tmp_path / refresh.BODIES_TSV).write_text(BODIES_HEADER + bodies)
    (tmp_path / "additions.tsv").write_text(additions)
    return refresh.read_table(tmp_path, tmp_path / "additions.tsv")


LOCKS = "POST\t/locks\tLocks\tcreateLock\t200,422\nGET\t/locks/{id}\tLocks?\tfetchLock\t?\n"


def test_constraints_are_kept_only_where_unambiguous(tmp_path: Path) -> None:
    table = _facts(tmp_path, LOCKS, (
        "POST\t/locks\tlock\t-\tobject\tyes\twrapper key itself\n"
        "POST\t/locks\tlock\tmeta\tobject\tno\tprose: max 50 keys; key max 50 chars\n"
        "POST\t/locks\tlock\tcode\tinteger\tyes\tpattern ^d{6}$ (as written; on an integer)\n"
        "POST\t/locks\tlock\tkind\tstring|null\tno\tenum: a|b|null\n"
        "POST\t/locks\tlock\tsize\tinteger\tno\tmin 1; max 9\n"
        "POST\t/locks\tlock\tword\tstring\tno\tminLength 8; maxLength 128; format email\n"
        "POST\t/locks\tlock\tpin\tstring\tno\tpattern ^[0-9]{4}$\n"
        "POST\t/locks\tlock\tplaces\tarray<object>\tno\t-\n"
        "POST\t/locks\tlock\tplaces[].id\tinteger\tyes\trequired within item\n"
    ))
    fields = table.fields["POST /locks"]
    assert (fields["lock.meta"].minimum, fields["lock.meta"].maximum) == (None, None)
    assert fields["lock.code"].pattern is None
    assert (fields["lock.kind"].kinds, fields["lock.kind"].enum) == (("string", "null"), ("a", "b"))
    assert (fields["lock.size"].minimum, fields["lock.size"].maximum) == (1.0, 9.0)
    assert (fields["lock.word"].min_length, fields["lock.word"].max_length) == (8, 128)
    assert fields["lock.pin"].pattern == "^[0-9]{4}$"
    assert fields["lock.places"].kinds == ("array",)
    assert fields["lock.places[].id"].required
    assert table.routes["GET /locks/{id}"].statuses is None
    assert table.routes["POST /locks"].statuses == (200, 422)


def test_additions_replace_and_add_with_their_source(tmp_path: Path) -> None:
    table = _facts(
        tmp_path, LOCKS,
        "POST\t/locks\tlock\t-\tobject\tyes\t-\nPOST\t/locks\tlock\tname\tstring\tyes\t-\n",
        "# a comment\n\n"
        "field\tPOST\t/locks\tlock\tname\tstring\tno\t-\tspec file X, relaxed\n"
        "route\tDELETE\t/locks/{id}\tLocks\tdeleteLock\t204\tspec file Y\n",
    )
    assert not table.fields["POST /locks"]["lock.name"].required
    assert table.fields["POST /locks"]["lock.name"].source == "additions:3"
    assert table.sources["additions:3"] == "spec file X, relaxed"
    assert table.routes["DELETE /locks/{id}"].source == "additions:4"


@pytest.mark.parametrize(
    ("routes", "bodies", "additions", "names"),
    [
        (LOCKS + LOCKS, "", "", "kisi-routes.tsv:4: POST /locks is listed twice"),
        ("BREW\t/locks\tL\tbrew\t200\n", "", "", "kisi-routes.tsv:2: unknown method 'BREW'"),
        ("GET\tlocks\tL\tx\t200\n", "", "", "kisi-routes.tsv:2: template 'locks'"),
        ("GET\t/locks/{id\tL\tx\t200\n", "", "", "bad segment '{id'"),
        ("GET\t/locks\tL\tx\t2xx\n", "", "", "statuses '2xx'"),
        ("GET\t/locks/{id}\tL\tx\t200\nPATCH\t/locks/{lock_id}\tL\ty\t204\n", "", "",
         "PATCH /locks/{lock_id}: same shape as /locks/{id}"),
        (LOCKS, "PATCH\t/locks/{id}\tlock\t-\tobject\tyes\t-\n", "",
         "kisi-request-bodies.tsv:2: PATCH /locks/{id} is not a documented route"),
        (LOCKS, "POST\t/locks\tlock\tname\tstring\tyes\t-\n", "",
         "kisi-request-bodies.tsv:2: POST /locks lock.name comes before its parent"),
        (LOCKS, "POST\t/locks\tlock\t-\tobject\tmaybe\t-\n", "", "required must be yes or no"),
        (LOCKS, "POST\t/locks\tlock\t-\tthing\tyes\t-\n", "", "unknown type 'thing'"),
        (LOCKS, "POST\t/locks\tlock\t-\tobject\tyes\t-\nPOST\t/locks\tlock\t-\tobject\tyes\t-\n",
         "", "kisi-request-bodies.tsv:3: POST /locks lock is listed twice"),
        (LOCKS, "POST\t/locks\tlock\tna me\tstring\tno\t-\n", "", "bad field path 'lock.na me'"),
        (LOCKS, "", "rule\tPOST\t/locks\tsource\n", "additions.tsv:1: unknown row kind 'rule'"),
        (LOCKS, "", "route\tPOST\t/x\tsource\n", "additions.tsv:1: a route needs"),
        (LOCKS, "", "field\tPOST\t/locks\tsource\n", "additions.tsv:1: a field needs"),
    ],
)
def test_bad_rows_stop_the_build_and_name_their_line(
    tmp_path: Path, routes: str, bodies: str, additions: str, names: str
) -> None:
    with pytest.raises(refresh.TableError, match=re.escape(names)):
        _facts(tmp_path, routes, bodies, additions)
