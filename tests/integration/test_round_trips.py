"""Store round trips per synchronous send, counted on the pipeline over moto.

A synchronous success should cost one DynamoDB round trip for the send budget and, while
the identity is calm, no more than one guard read (and one known-bad lookup) per staleness
bound, whatever the rate.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from kisi_sim import DEMO_KEY, SimConfig
from tests.harness import Gateway, gateway

pytestmark = pytest.mark.xdist_group("moto")


def table_of(operation: str, params: dict[str, Any]) -> str:
    if "TableName" in params:
        return str(params["TableName"])
    if operation == "BatchGetItem":
        return ",".join(sorted(params["RequestItems"]))
    if operation == "TransactWriteItems":
        names = {next(iter(entry.values()))["TableName"] for entry in params["TransactItems"]}
        return ",".join(sorted(names))
    return "?"


def count_round_trips(gw: Gateway) -> Counter[tuple[str, str]]:
    """(operation, table) of every DynamoDB call the pipeline makes from now on."""
    calls: Counter[tuple[str, str]] = Counter()

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls[(model.name, table_of(model.name, params))] += 1

    gw.dynamodb.meta.events.register("provide-client-params.dynamodb.*", record)
    return calls


@pytest.mark.parametrize("known_bad", [False, True], ids=["known-bad off", "known-bad on"])
def test_a_synchronous_send_costs_one_budget_round_trip_and_rare_guard_reads(
    monkeypatch: pytest.MonkeyPatch, known_bad: bool,
) -> None:
    env = {} if known_bad else {"KNOWN_BAD_WINDOW_S": "0"}
    with gateway(monkeypatch, env=env) as gw:
        assert gw.call("GET", "/locks/1").status == 200  # warm: lookups of caller and login
        calls = count_round_trips(gw)
        sends = 20
        for _ in range(sends):
            gw.clock.advance(0.3)  # 20 calls over 6 s, each answered inline
            reply = gw.call("GET", "/locks/1")
            assert reply.status == 200
            assert reply.headers["X-Gateway-Attempts"] == "1"
        budget = gw.names["budget"]
        guard = gw.names["guard"]
        requests = gw.names["requests"]
        assert calls[("UpdateItem", budget)] == sends  # one conditional write each
        assert sum(n for (_, table), n in calls.items() if table == budget) == sends
        # the guard is read at most once a second (its staleness bound): 6 s -> at most 7
        guard_reads = sum(n for (_, table), n in calls.items() if guard in table)
        assert 1 <= guard_reads <= 7
        # Known-bad repeats: the identity has no entry, and the guard's view of its account
        # item (read with the verdict, as old as the verdict cache at most) says so; a lookup
        # happens only when that view has aged, at most once per guard read; none when off.
        known_bad_reads = sum(n for (_, table), n in calls.items() if table == requests)
        assert known_bad_reads <= (guard_reads if known_bad else 0)
        per_send = sum(calls.values()) / sends
        assert per_send <= 1 + 2 * 7 / sends  # the budget's write, and rarely two reads
        # nothing else: a synchronous success writes no record and reads no directory
        assert {table for _, table in calls} <= {budget, guard, requests}


BAD_USER = {"user": {"name": "Ada", "email": "not-an-address"}}  # Kisi answers 422


def on(gw: Gateway, forwarder: Any, method: str, path: str, body: Any = None) -> Any:
    """A call served by another Lambda's forwarder (its own caches, the same tables)."""
    own = gw.forwarder
    gw.forwarder = forwarder
    try:
        return gw.call(method, path, body=body)
    finally:
        gw.forwarder = own


def test_a_refusal_one_lambda_saw_reaches_the_others_within_the_guard_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The known-bad lookup is skipped while a Lambda's view of the identity (read with the
    guard's verdict) is fresh and shows no entry; a refusal noted elsewhere is honoured once
    that view is older than the verdict cache (1 s), as a pause written elsewhere is."""
    with gateway(monkeypatch) as gw:
        _, other, _ = gw.build_lambda(gw.dynamodb, gw.sqs)
        assert on(gw, other, "GET", "/locks/1").status == 200  # the other Lambda's fresh view
        assert gw.call("POST", "/users", body=BAD_USER).status == 422
        assert gw.kisi_calls("POST", "/users") == 1
        again = gw.call("POST", "/users", body=BAD_USER)  # the Lambda that saw it: at once
        assert (again.status, again.headers.get("X-Kisi-Gateway-Replayed")) == (422, "known-bad")
        gw.clock.advance(0.5)
        # Within the bound the other Lambda's view still says "nothing to look up": this is
        # the one repeat the staleness bound allows, and it is then noted there too.
        assert on(gw, other, "POST", "/users", body=BAD_USER).status == 422
        assert gw.kisi_calls("POST", "/users") == 2
        gw.clock.advance(1.0)
        for forwarder in (gw.forwarder, other):
            reply = on(gw, forwarder, "POST", "/users", body=BAD_USER)
            assert reply.headers.get("X-Kisi-Gateway-Replayed") == "known-bad"
        assert gw.kisi_calls("POST", "/users") == 2


def test_a_fresh_view_that_shows_an_entry_looks_it_up_and_others_are_spared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After an identity's refusal its own sends look up (one read each), while another
    identity's sends still cost the budget's write alone."""
    with gateway(monkeypatch, sim_config=SimConfig(keys={DEMO_KEY: 1, "own-key": 7})) as gw:
        assert gw.call("POST", "/users", body=BAD_USER).status == 422
        gw.know_login("own-key", user_id=7, login_id=7)
        gw.clock.advance(0.1)
        assert gw.call("GET", "/locks/1", authorization="KISI-LOGIN own-key").status == 200
        calls = count_round_trips(gw)
        gw.clock.advance(0.1)
        assert gw.call("GET", "/locks/1").status == 200  # the refused identity: looks up
        requests = gw.names["requests"]
        assert calls[("GetItem", requests)] == 1
        gw.clock.advance(0.1)
        assert gw.call("GET", "/locks/1", authorization="KISI-LOGIN own-key").status == 200
        assert calls[("GetItem", requests)] == 1  # the other identity: no lookup
