"""The operator CLI: inspect and reset the guard.

::

    python -m ops guard status --table NAME
        every scope as JSON: state, reason, opened_at, until, cooldown, counters, and what
        a check would do now (send, paused, probe_due)
    python -m ops guard reset [--scope SCOPE] --table NAME
        close one scope (``account``, ``route:POST /locks/{id}/unlock`` or just
        ``POST /locks/{id}/unlock``) or, without --scope, every scope; prints the scopes that
        were open or half-open. Fix the cause first (rotate the key, correct the ids): a reset
        with the cause still there only lets the next storm through.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from kisi_gateway.core.breaker import parse_scope
from kisi_gateway.stores.guard import DynamoGuard
from kisi_gateway.stores.ports import GuardStoreError


def _scope_argument(text: str) -> str:
    try:
        return parse_scope(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parser() -> argparse.ArgumentParser:
    """The command line: ``guard status|reset``."""
    top = argparse.ArgumentParser(prog="python -m ops", description="Operate kisi-gateway.")
    areas = top.add_subparsers(dest="area", required=True)
    guard = areas.add_parser(
        "guard", help="inspect or reset the guard (pauses on bad-request storms)"
    )
    commands = guard.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="print every scope's state as JSON")
    status.add_argument("--table", required=True, help="the guard's DynamoDB table")
    reset = commands.add_parser("reset", help="close one scope, or all of them")
    reset.add_argument("--scope", type=_scope_argument, default=None,
                       help="'account', 'route:PATCH /users/{id}' or 'PATCH /users/{id}'; "
                            "every scope when omitted")
    reset.add_argument("--table", required=True, help="the guard's DynamoDB table")
    return top


def _dynamodb() -> Any:
    import boto3  # noqa: PLC0415 - only when a command runs

    return boto3.client("dynamodb")


def main(
    argv: Sequence[str] | None = None,
    *,
    client: Any | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Run one command; returns the exit status (1 when AWS cannot be reached)."""
    args = parser().parse_args(argv)
    guard = DynamoGuard(client if client is not None else _dynamodb(), args.table)
    now = clock()
    try:
        if args.command == "status":
            print(json.dumps(guard.states(now), indent=2))
        else:
            print(json.dumps({"closed": guard.reset(args.scope, now)}))
    except GuardStoreError as exc:  # no table, no credentials, no network
        print(f"error: the guard's table could not be used ({exc})", file=sys.stderr)
        return 1
    return 0
