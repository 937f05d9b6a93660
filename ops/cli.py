"""The operator CLI: the guard, the send gate, tenants and callers.

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
    python -m ops gate status --table BUDGET_TABLE
        every send-budget bucket whose gate Kisi's Retry-After closed: until when, seconds left
    python -m ops gate reopen [--bucket BUCKET] --table BUDGET_TABLE
        reopen one bucket's gate (``user-42``, or ``user-42#POST /event_sets``) or, without
        --bucket, every closed one; prints the buckets reopened. The gate closes for at most
        MAX_GATE_S (15 minutes by default) whatever Kisi asks; the GateCapped alarm says so.
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
from kisi_gateway.stores.ports import BudgetUnavailableError, DirectoryError, GuardStoreError
from kisi_gateway.stores.send_gate import SendGateAdmin
from ops import stack, tenants


def _scope_argument(text: str) -> str:
    try:
        return parse_scope(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parser() -> argparse.ArgumentParser:
    """The command line: ``guard status|reset`` and ``gate status|reopen``."""
    top = argparse.ArgumentParser(prog="python -m ops", description="Operate kisi-gateway.")
    where = top.add_mutually_exclusive_group()
    where.add_argument("--stack", help="a deployed stack's name (tenant and caller commands)")
    where.add_argument("--local", action="store_true", help="the stack `make run` runs")
    areas = top.add_subparsers(dest="area", required=True)
    guard = areas.add_parser(
        "guard", help="inspect or reset the guard (pauses on bad-request storms)"
    )
    _, reset = _commands(guard, "the guard's DynamoDB table",
                              ("status", "print every scope's state as JSON"),
                              ("reset", "close one scope, or all of them"))
    reset.add_argument("--scope", type=_scope_argument, default=None,
                       help="'id-0a1b2c3d' or 'id-0a1b2c3d|PATCH /users/{id}'; "
                            "every scope when omitted")
    gate = areas.add_parser(
        "gate", help="inspect or reopen the send gate (closed by Kisi's Retry-After)"
    )
    _, reopen = _commands(gate, "the send budget's DynamoDB table",
                          ("status", "print every closed gate as JSON"),
                          ("reopen", "reopen one bucket's gate, or all"))
    reopen.add_argument("--bucket", default=None,
                        help="'user-42' or 'user-42#POST /event_sets'; every one when omitted")
    tenants.register(areas)
    return top


def _commands(area: argparse.ArgumentParser, table: str,
              *commands: tuple[str, str]) -> list[argparse.ArgumentParser]:
    """The area's sub-commands, each with its required ``--table``."""
    subparsers = area.add_subparsers(dest="command", required=True)
    made = []
    for name, text in commands:
        command = subparsers.add_parser(name, help=text)
        command.add_argument("--table", required=True, help=table)
        made.append(command)
    return made


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
    dynamodb = client if client is not None else _dynamodb()
    now = clock()
    if args.area == "gate":
        gate = SendGateAdmin(dynamodb, args.table)
        return _answer(
            lambda: json.dumps(gate.status(now), indent=2) if args.command == "status"
            else json.dumps({"reopened": gate.reopen(args.bucket, now)}),
            BudgetUnavailableError, "the send budget's table")
    guard = DynamoGuard(dynamodb, args.table)
    return _answer(
        lambda: json.dumps(guard.states(now), indent=2) if args.command == "status"
        else json.dumps({"closed": guard.reset(args.scope, now)}),
        GuardStoreError, "the guard's table")


def _answer(work: Callable[[], str], failure: type[Exception], what: str) -> int:
    """Print what ``work`` answers; 1 when ``what`` cannot be used (no table, no credentials,
    no network)."""
    try:
        print(work())
    except failure as exc:
        print(f"error: {what} could not be used ({exc})", file=sys.stderr)
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
