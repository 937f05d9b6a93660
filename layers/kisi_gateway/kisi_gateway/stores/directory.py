"""The directory: tenants, their callers, and what Kisi said about each credential's login.

One DynamoDB table (hash key ``pk``), three kinds of item::

    tenant#<name>          secret_id                the tenant's service login (Secrets Manager)
    caller#<api key id>    tenant, mode             who an API Gateway API key belongs to
    login#<identity>       user_id, login_id, expires_at (TTL)
                                                    ``GET /login`` of one credential, cached

Adding or removing a tenant or a caller is a write here (``python -m ops tenant|caller ...``),
never a redeploy. A caller with no item belongs to the default tenant, whose service login is
the stack's own secret; a deployment with one organization needs no item at all.
"""

from __future__ import annotations

from typing import Any

from kisi_gateway.core.identity import Caller, CallerMode, KisiLogin, Tenant
from kisi_gateway.stores.dynamo import n, number, read, s, string
from kisi_gateway.stores.ports import DirectoryError


def _caller(item: dict[str, Any], api_key_id: str) -> Caller:
    try:
        mode = CallerMode(string(item, "mode", CallerMode.AUTO.value))
    except ValueError:
        mode = CallerMode.AUTO
    return Caller(api_key_id, string(item, "tenant"), mode)


class DynamoDirectory:
    """The directory in DynamoDB."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def _get(self, pk: str) -> dict[str, Any] | None:
        request = {"TableName": self._table, "Key": {"pk": s(pk)}, "ConsistentRead": True}
        item: dict[str, Any] | None = read(self._client.get_item, request, DirectoryError).get(
            "Item")
        return item

    def _put(self, item: dict[str, Any]) -> None:
        read(self._client.put_item, {"TableName": self._table, "Item": item}, DirectoryError)

    def _delete(self, pk: str) -> bool:
        request = {"TableName": self._table, "Key": {"pk": s(pk)}, "ReturnValues": "ALL_OLD"}
        return bool(read(self._client.delete_item, request, DirectoryError).get("Attributes"))

    def caller(self, api_key_id: str) -> Caller | None:
        item = self._get(f"caller#{api_key_id}")
        return _caller(item, api_key_id) if item else None

    def tenant(self, name: str) -> Tenant | None:
        item = self._get(f"tenant#{name}")
        return Tenant(name, string(item, "secret_id")) if item else None

    def login(self, identity: str, now: float) -> KisiLogin | None:
        item = self._get(f"login#{identity}")
        if not item or (number(item, "expires_at") or 0) <= now:
            return None  # DynamoDB's TTL deletes late; an expired item is no answer
        user = number(item, "user_id")
        login = number(item, "login_id")
        return KisiLogin(int(user), int(login) if login is not None else None) if user else None

    def remember_login(self, identity: str, login: KisiLogin, until: float) -> None:
        item = {"pk": s(f"login#{identity}"), "user_id": n(login.user_id),
                "expires_at": n(int(until))}
        if login.login_id is not None:
            item["login_id"] = n(login.login_id)
        self._put(item)

    # -- operators ---------------------------------------------------------------------------

    def put_tenant(self, tenant: Tenant) -> None:
        self._put({"pk": s(f"tenant#{tenant.name}"), "secret_id": s(tenant.secret_id)})

    def remove_tenant(self, name: str) -> bool:
        return self._delete(f"tenant#{name}")

    def put_caller(self, caller: Caller) -> None:
        self._put({"pk": s(f"caller#{caller.api_key_id}"), "tenant": s(caller.tenant),
                   "mode": s(caller.mode.value)})

    def remove_caller(self, api_key_id: str) -> bool:
        return self._delete(f"caller#{api_key_id}")

    def entries(self) -> tuple[list[Tenant], list[Caller]]:
        """Every tenant and caller (operators' listing)."""
        tenants: list[Tenant] = []
        callers: list[Caller] = []
        request: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        while True:
            page = read(self._client.scan, request, DirectoryError)
            for item in page.get("Items", []):
                kind, _, name = string(item, "pk").partition("#")
                if kind == "tenant":
                    tenants.append(Tenant(name, string(item, "secret_id")))
                elif kind == "caller":
                    callers.append(_caller(item, name))
            if not page.get("LastEvaluatedKey"):
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(tenants, key=lambda t: t.name), sorted(callers, key=lambda c: c.api_key_id)
