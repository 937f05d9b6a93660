"""Tenants and callers: add or remove one with one command, no redeploy.

::

    python -m ops (--stack NAME | --local) tenant add NAME < service-key.txt
        the tenant's Kisi service key (read from stdin, never from the command line, so it
        stays out of shell history and ``ps``) goes to Secrets Manager as
        ``<stack>/tenants/NAME``; the directory learns the tenant. Adding it again replaces
        the key: that is also how a tenant's key is rotated.
    python -m ops (...) tenant remove NAME [--delete-now]
        refused while callers belong to it; the secret is scheduled for deletion (7 days'
        recovery window, or at once with --delete-now)
    python -m ops (...) tenant list
        every tenant with its callers (no secrets)
    python -m ops (...) caller add --tenant NAME [--label TEXT] [--mode auto|client|service]
        a new API Gateway API key on the stack's usage plan, belonging to the tenant; prints
        its id and value (the value is the caller's x-api-key: hand it over, it is shown once)
    python -m ops (...) caller remove API_KEY_ID
        the API key is deleted and the directory forgets it

The Lambdas read the directory with a short cache (30 s): a change counts within that.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from kisi_gateway.core.identity import DEFAULT_TENANT, Caller, CallerMode, Tenant, tenant_name
from kisi_gateway.stores.directory import DynamoDirectory
from kisi_gateway.stores.secrets import SecretFormatError, key_from_secret
from ops.stack import ClientFactory, StackRefs

MAX_KEY_BYTES = 4096  # far above any Kisi key; stdin is never read unbounded


class OperatorError(Exception):
    """A command that cannot be done as asked (printed, exit status 2)."""


def _tenant_argument(text: str) -> str:
    try:
        return tenant_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def register(areas: Any) -> None:
    """Add the ``tenant`` and ``caller`` command groups to the operator CLI."""
    tenant = areas.add_parser("tenant", help="add, remove or list tenants (Kisi organizations)")
    tenants = tenant.add_subparsers(dest="command", required=True)
    add = tenants.add_parser("add", help="add a tenant, or replace its key; key on stdin")
    add.add_argument("name", type=_tenant_argument)
    remove = tenants.add_parser("remove", help="remove a tenant that has no callers")
    remove.add_argument("name", type=_tenant_argument)
    remove.add_argument("--delete-now", action="store_true",
                        help="delete the secret without Secrets Manager's recovery window")
    tenants.add_parser("list", help="every tenant and its callers, as JSON")

    caller = areas.add_parser("caller", help="add or remove callers (API keys) of a tenant")
    callers = caller.add_subparsers(dest="command", required=True)
    new = callers.add_parser("add", help="a new API key for a tenant; prints id and value")
    new.add_argument("--tenant", type=_tenant_argument, required=True)
    new.add_argument("--label", default=None, help="the API key's name (default: tenant-...)")
    new.add_argument("--mode", choices=[m.value for m in CallerMode],
                     default=CallerMode.AUTO.value,
                     help="answered as a Kisi client (no 202 unless asked) or with deferral")
    gone = callers.add_parser("remove", help="delete an API key and forget it")
    gone.add_argument("api_key_id")


def read_key(stream: TextIO) -> str:
    """The service key from stdin: the key itself or a JSON ``{"api_key": ...}``."""
    text = stream.read(MAX_KEY_BYTES + 1)
    if len(text) > MAX_KEY_BYTES:
        raise OperatorError("the key on stdin is too long")
    try:
        return key_from_secret(text)
    except SecretFormatError as exc:
        raise OperatorError(f"no Kisi key on stdin ({exc})") from exc


class Directory:
    """The operator's view of tenants and callers over one stack."""

    def __init__(self, refs: StackRefs, clients: ClientFactory) -> None:
        self._refs = refs
        self._clients = clients
        self._directory = DynamoDirectory(clients("dynamodb"), refs.output("TenantsTableName"))

    def add_tenant(self, name: str, key: str) -> dict[str, Any]:
        if name == DEFAULT_TENANT:
            raise OperatorError("the default tenant's key is the stack's KisiApiKeySecret")
        secrets = self._clients("secretsmanager")
        secret_name = self._refs.tenant_secret_name(name)
        value = json.dumps({"api_key": key})
        try:
            secrets.create_secret(Name=secret_name, SecretString=value,
                                  Description=f"Kisi service login of tenant {name}")
            action = "added"
        except secrets.exceptions.ResourceExistsException:
            secrets.put_secret_value(SecretId=secret_name, SecretString=value)
            action = "key replaced"
        self._directory.put_tenant(Tenant(name, secret_name))
        return {"tenant": name, "secret": secret_name, "result": action}

    def remove_tenant(self, name: str, *, delete_now: bool) -> dict[str, Any]:
        if name == DEFAULT_TENANT:
            raise OperatorError("the default tenant belongs to the stack and cannot be removed")
        tenants, callers = self._directory.entries()
        if name not in {t.name for t in tenants}:
            raise OperatorError(f"no tenant {name!r}")
        own = [c.api_key_id for c in callers if c.tenant == name]
        if own:
            raise OperatorError(f"tenant {name!r} still has callers {own}: remove them first")
        self._directory.remove_tenant(name)
        window = {"ForceDeleteWithoutRecovery": True} if delete_now else {
            "RecoveryWindowInDays": 7}
        self._clients("secretsmanager").delete_secret(
            SecretId=self._refs.tenant_secret_name(name), **window)
        return {"tenant": name, "result": "removed"}

    def listing(self) -> dict[str, Any]:
        tenants, callers = self._directory.entries()
        named = {t.name: t for t in tenants}
        rows = [{"tenant": name, "callers": [
            {"api_key_id": c.api_key_id, "mode": c.mode.value}
            for c in callers if c.tenant == name]}
            for name in sorted({*named, *(c.tenant for c in callers)})]
        return {"tenants": rows}

    def add_caller(self, tenant: str, *, label: str | None, mode: str) -> dict[str, Any]:
        if tenant != DEFAULT_TENANT and self._directory.tenant(tenant) is None:
            raise OperatorError(f"no tenant {tenant!r}: add it first")
        apigateway = self._clients("apigateway")
        key = apigateway.create_api_key(name=label or f"{self._refs.name}-{tenant}",
                                        enabled=True, description=f"tenant {tenant}")
        apigateway.create_usage_plan_key(usagePlanId=self._refs.output("UsagePlanId"),
                                         keyId=key["id"], keyType="API_KEY")
        self._directory.put_caller(Caller(key["id"], tenant, CallerMode(mode)))
        return {"api_key_id": key["id"], "x-api-key": key["value"], "tenant": tenant,
                "mode": mode}

    def remove_caller(self, api_key_id: str) -> dict[str, Any]:
        known = self._directory.remove_caller(api_key_id)
        apigateway = self._clients("apigateway")
        try:
            apigateway.delete_api_key(apiKey=api_key_id)
        except apigateway.exceptions.NotFoundException:
            if not known:
                raise OperatorError(f"no caller {api_key_id!r}") from None
        return {"api_key_id": api_key_id, "result": "removed"}


def run(args: argparse.Namespace, refs: StackRefs, clients: ClientFactory,
        stdin: TextIO = sys.stdin, out: Callable[[str], None] = print) -> None:
    """Run one ``tenant`` or ``caller`` command and print its JSON result."""
    directory = Directory(refs, clients)
    if args.area == "tenant":
        if args.command == "add":
            result = directory.add_tenant(args.name, read_key(stdin))
        elif args.command == "remove":
            result = directory.remove_tenant(args.name, delete_now=args.delete_now)
        else:
            result = directory.listing()
    elif args.command == "add":
        result = directory.add_caller(args.tenant, label=args.label, mode=args.mode)
    else:
        result = directory.remove_caller(args.api_key_id)
    out(json.dumps(result, indent=2))
