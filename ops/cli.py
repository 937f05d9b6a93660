"""The operator CLI: the guard, tenants and callers.

::

    python -m ops guard status --table NAME
        every scope as JSON: state, reason, opened_at, until, cooldown, counters, and what
        a check would do now (send, paused, probe_due)
    python -m ops guard reset [--scope SCOPE] --table NAME
        close one scope (``account``, ``route:POST /locks/{id}/unlock`` or just
        ``POST /locks/{id}/unlock``) or, without --scope, every scope; prints the scopes that
        were open or half-open. Fix the cause first (rotate the key, correct the ids): a reset
        with the cause still there only lets the next storm through.
    python -m ops (--stack NAME | --local) tenant add|remove|list ...
    python -m ops (--stack NAME | --local) caller add|remove ...
        see ops/tenants.py; --local is the stack ``make run`` is running
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
from kisi_gateway.stores.ports import DirectoryError, GuardStoreError
from ops import stack, tenants


def _scope_argument(text: str) -> str:
    try:
        return parse_scope(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parser() -> argparse.ArgumentParser:
    """The command line: ``guard status|reset``."""
    top = argparse.ArgumentParser(prog="python -m ops", description="Operate kisi-gateway.")
    where = top.add_mutually_exclusive_group()
    where.add_argument("--stack", help="a deployed stack's name (tenant and caller commands)")
    where.add_argument("--local", action="store_true", help="the stack `make run` runs")
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
    tenants.register(areas)
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
    """Run one command; returns the exit status (1 when AWS cannot be reached, 2 when the
    command cannot be done as asked)."""
    args = parser().parse_args(argv)
    if args.area in {"tenant", "caller"}:
        return _directory_command(args)
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


def _directory_command(args: argparse.Namespace) -> int:
    try:
        if args.local:
            refs = stack.from_local()
        elif args.stack:
            import boto3  # noqa: PLC0415 - only when a command runs

            refs = stack.from_cloudformation(args.stack, boto3.client("cloudformation"))
        else:
            raise tenants.OperatorError("say which stack: --stack NAME or --local")
        tenants.run(args, refs, stack.clients_for(refs))
    except (tenants.OperatorError, stack.StackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DirectoryError as exc:
        print(f"error: the tenants table could not be used ({exc})", file=sys.stderr)
        return 1
    return 0
