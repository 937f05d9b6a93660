"""How the guard's state is stored in DynamoDB: the item layout, parsing and writing it.

:mod:`kisi_gateway.stores.guard` runs the breaker over these items; this module only encodes
them, so the adapter stays about concurrency (conditions, elections, caching).

Item layout: one DynamoDB table, string hash key ``scope``, one item per scope::

    scope            S  "id-<hex>" | "id-<hex>|PATCH /users/{id}"
    state            S  "closed" | "open" | "half_open"
    reason           S  why it is (or was last) in that state, for people and the 503 body
    opened_at        N  epoch seconds the current opening began          (absent when closed)
    until            N  end of the cooldown; a probe may be elected after (absent when closed)
    cooldown_s       N  length of the current cooldown, doubled by a failed probe
    consecutive_401  N  account only: 401s since the last answer that proved the key works
    probe_until      N  lease of the elected half-open probe               (absent if none)
    updated_at       N  epoch seconds of the last write
    known_bad_until  N  account only: end of the identity's newest known-bad entry (a hint)

Why not Powertools' circuit breaker (``aws_lambda_powertools/utilities/circuit_breaker/``,
3.37.0, alpha)? It has the right shape and this module borrows it: state in DynamoDB read
eventually consistent, one half-open probe elected by a conditional write with a lease that
another worker may take over once it lapses, the election re-checking what the reader saw so a
stale read cannot elect (its ``expected_opened_at``; here ``until <= :now``), the lease cleared
on every exit from half-open (``persistence/dynamodb.py``, ``_build_update_query``), and a
failed read failing open without caching the made-up "closed" (``persistence/base.py``,
``get_state``). But it does not fit the API the pipeline needs: (1) it counts failures per
execution environment in module-level dicts (``base.py``, ``_LOCAL_FAILURES``; ``states.py``
says ``failure_count`` "is not a running total of failures across the fleet"), so ten Lambdas
could each send four 401s without tripping, while Kisi counts them all; (2) it is a decorator
that judges the wrapped call by the exceptions it raises (``config.py``,
``counts_as_failure``), whereas the gateway checks before the budget, sends, classifies an
:class:`~kisi_gateway.core.outcome.Outcome` and must treat 429/5xx as neither failure nor success;
(3) it has no externally decided open with a reason and a cooldown (``save_open`` takes a
failure count and a time) and no cooldown doubling (``recovery_timeout`` is fixed); (4) its
clock is ``datetime.now()`` inside the handler and the store, in whole seconds, so it cannot
be driven by an injected ``now``; (5) it closes only after ``success_threshold`` (default 3)
probe successes, and its cache serves open records too. Wrapping it would mean fighting each
of these, so the gateway has its own, small breaker.

"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kisi_gateway.core.breaker import GuardState, ScopeItem
from kisi_gateway.stores.dynamo import Expression, n, number, s, string

logger = logging.getLogger("kisi_gateway.stores.guard")


def scope_item(item: Mapping[str, Any]) -> ScopeItem:
    """Parse a low-level DynamoDB item. An unknown state reads as closed (fail open)."""
    scope = string(item, "scope")
    raw_state = string(item, "state", GuardState.CLOSED.value)
    try:
        state = GuardState(raw_state)
    except ValueError:
        logger.warning("guard: scope %r has unknown state %r; treating as closed",
                       scope, raw_state)
        state = GuardState.CLOSED
    return ScopeItem(
        scope=scope,
        state=state,
        reason=string(item, "reason"),
        opened_at=number(item, "opened_at"),
        until=number(item, "until"),
        cooldown_s=number(item, "cooldown_s"),
        consecutive_401=int(number(item, "consecutive_401") or 0),
        probe_until=number(item, "probe_until"),
        updated_at=number(item, "updated_at"),
        known_bad_until=number(item, "known_bad_until"),
    )


def write_state(expr: Expression, item: ScopeItem, *, counter: bool = False) -> None:
    """SET the state fields of ``item`` and REMOVE the ones it does not have."""
    optional = {
        "reason": s(item.reason) if item.reason else None,
        "opened_at": n(item.opened_at) if item.opened_at is not None else None,
        "until": n(item.until) if item.until is not None else None,
        "cooldown_s": n(item.cooldown_s) if item.cooldown_s is not None else None,
        "probe_until": n(item.probe_until) if item.probe_until is not None else None,
        "updated_at": n(item.updated_at) if item.updated_at is not None else None,
    }
    expr.set("state", s(item.state.value))
    for attr, value in optional.items():
        expr.set_or_remove(attr, value)
    if counter:
        expr.set("consecutive_401", n(item.consecutive_401))


def key_of(scope: str) -> dict[str, Any]:
    return {"scope": s(scope)}
