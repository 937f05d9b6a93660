"""The send gate, for operators: which buckets Kisi's ``Retry-After`` closed, and reopening them.

The gate is the ``gate_until`` attribute of the send budget's items
(:class:`~kisi_gateway.stores.budget.DynamoSendBudget`: ``pk`` = a Kisi user's bucket, or
``bucket#route`` for a route with its own rate; ``version`` guards every write). Reopening sets
``gate_until`` to now and bumps ``version`` under a condition on the version read, so a Lambda
writing from an older read loses its race and re-reads instead of closing the gate again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kisi_gateway.stores.dynamo import Lost, conditional, n, number, read, string
from kisi_gateway.stores.ports import BudgetUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class SendGateAdmin:
    """Reads and reopens the send gate in the budget's table (operators only: scans)."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def status(self, now: float) -> list[dict[str, Any]]:
        """Every bucket whose gate is closed at ``now``: its key, until when, seconds left."""
        closed = []
        for item in self._scan():
            until = number(item, "gate_until") or 0.0
            if until > now:
                closed.append({"bucket": string(item, "pk"), "gate_until": until,
                               "seconds_left": round(until - now, 1)})
        return sorted(closed, key=lambda entry: str(entry["bucket"]))

    def reopen(self, bucket: str | None, now: float) -> list[str]:
        """Reopen ``bucket``'s gate (every closed one when ``None``); the buckets reopened."""
        reopened = []
        for item in self._scan():
            pk = string(item, "pk")
            until = number(item, "gate_until") or 0.0
            if until <= now or (bucket is not None and pk != bucket):
                continue
            if self._reopen(pk, number(item, "version"), now):
                reopened.append(pk)
        return reopened

    def _reopen(self, pk: str, version: float | None, now: float) -> bool:
        names = {"#gate": "gate_until", "#version": "version", "#updated": "updated_at"}
        values: dict[str, Any] = {":now": n(now), ":next": n((version or 0) + 1)}
        if version is None:
            condition = "attribute_not_exists(#version)"
        else:
            values[":version"] = n(version)
            condition = "#version = :version"
        request = {
            "TableName": self._table, "Key": {"pk": {"S": pk}},
            "UpdateExpression": "SET #gate = :now, #version = :next, #updated = :now",
            "ConditionExpression": condition, "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        return not isinstance(conditional(self._client.update_item, request,
                                          BudgetUnavailableError), Lost)

    def _scan(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        while True:
            page = read(self._client.scan, request, BudgetUnavailableError)
            items.extend(page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last:
                return items
            request["ExclusiveStartKey"] = last
