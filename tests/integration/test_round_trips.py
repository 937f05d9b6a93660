"""Store round trips per synchronous send, counted on the pipeline over moto.

A synchronous success should cost one DynamoDB round trip for the send budget and, while
the identity is calm, no more than one guard read per staleness bound, whatever the rate.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

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
        # Known-bad repeats are looked up before the send: one eventually consistent read of
        # the requests table per call while the window is on, none when it is off.
        known_bad_reads = sum(n for (_, table), n in calls.items() if table == requests)
        assert known_bad_reads == (sends if known_bad else 0)
        # nothing else: a synchronous success writes no record and reads no directory
        assert {table for _, table in calls} <= {budget, guard, requests}
