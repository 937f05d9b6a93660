"""Request records in DynamoDB (keyed by ``request_id``, TTL attribute ``expires_at``).

Every change follows a row of :mod:`kisi_gateway.core.lifecycle`, rendered here as the
write's ``ConditionExpression``: a duplicate or late writer changes nothing, and nothing moves
a record that has ended.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kisi_gateway.core.lifecycle import Change, Event, applied, created_by
from kisi_gateway.core.records import (
    TERMINAL,
    AttemptEntry,
    RecordStatus,
    RequestRecord,
    StoredResponse,
)
from kisi_gateway.stores.dynamo import Expression, Lost, conditional, n, read, s
from kisi_gateway.stores.ports import Applied, RecordStoreError


@functools.cache
def _codec() -> tuple[Any, Any]:
    """boto3's DynamoDB type (de)serializers, imported on first use: importing boto3 at cold
    start would cost every invocation that never touches a record (most of them)."""
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer  # noqa: PLC0415

    return TypeSerializer(), TypeDeserializer()


def _serialize(value: Any) -> Any:
    return _codec()[0].serialize(value)


def _deserialize(value: Any) -> Any:
    return _codec()[1].deserialize(value)


def _serialize_map(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serialize(v) for k, v in data.items()}


def _to_item(record: RequestRecord) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": record.request_id,
        "status": record.status.value,
        "method": record.method,
        "path": record.path,
        "route": record.route,
        "policy": record.policy,
        "created_at": Decimal(str(record.created_at)),
        "deadline": Decimal(str(record.deadline)),
        "expires_at": record.expires_at,
        "attempts": [_attempt_to_item(a) for a in record.attempts],
        "claimed_attempt": record.claimed_attempt,
        "claim_until": Decimal(str(record.claim_until)),
        "scope": record.scope,
        "fields_hash": record.fields_hash,
        "tenant": record.tenant,
        "caller": record.caller,
        "credential_kind": record.credential_kind,
        "caller_mode": record.caller_mode,
    }
    if record.sealed is not None:
        data["sealed"] = record.sealed
    if record.next_attempt_at is not None:
        data["next_attempt_at"] = Decimal(str(record.next_attempt_at))
    if record.reason is not None:
        data["reason"] = record.reason
    if record.response is not None:
        data["response"] = _response_to_item(record.response)
    return _serialize_map(data)


def _attempt_to_item(entry: AttemptEntry) -> dict[str, Any]:
    item: dict[str, Any] = {"at": Decimal(str(entry.at)), "cls": entry.cls}
    if entry.status is not None:
        item["status"] = entry.status
    if entry.delay_s is not None:
        item["delay_s"] = entry.delay_s
    return item


def _response_to_item(response: StoredResponse) -> dict[str, Any]:
    return {
        "status": response.status,
        "headers": dict(response.headers),
        "body": response.body,
        "truncated": response.truncated,
    }


def _num(value: Any, default: float = 0.0) -> float:
    return float(value) if value is not None else default


def _from_item(item: Mapping[str, Any]) -> RequestRecord:
    data = {k: _deserialize(v) for k, v in item.items()}
    response = None
    if "response" in data:
        raw = data["response"]
        response = StoredResponse(
            status=int(raw["status"]),
            headers={str(k): str(v) for k, v in raw.get("headers", {}).items()},
            body=bytes(raw.get("body", b"")),
            truncated=bool(raw.get("truncated", False)),
        )
    return RequestRecord(
        request_id=data["request_id"],
        status=RecordStatus(data["status"]),
        method=data["method"],
        path=data["path"],
        route=data["route"],
        policy=data["policy"],
        created_at=_num(data["created_at"]),
        deadline=_num(data["deadline"]),
        expires_at=int(data["expires_at"]),
        attempts=tuple(
            AttemptEntry(
                at=_num(a["at"]),
                cls=a["cls"],
                status=int(a["status"]) if "status" in a else None,
                delay_s=int(a["delay_s"]) if "delay_s" in a else None,
            )
            for a in data.get("attempts", [])
        ),
        next_attempt_at=_num(data["next_attempt_at"]) if "next_attempt_at" in data else None,
        reason=data.get("reason"),
        response=response,
        claimed_attempt=int(data.get("claimed_attempt", 0)),
        claim_until=_num(data.get("claim_until")),
        scope=data.get("scope", ""),
        fields_hash=data.get("fields_hash", ""),
        tenant=data.get("tenant", "default"),
        caller=data.get("caller", ""),
        credential_kind=data.get("credential_kind", "service"),
        caller_mode=data.get("caller_mode", "auto"),
        sealed=bytes(data["sealed"]) if "sealed" in data else None,
    )


def condition_expression(change: Change, expr: Expression) -> str:
    """The row's condition for ``change``, as DynamoDB reads it."""
    condition = change.row.condition
    status = expr.name("status")
    parts = [f"{status} = {expr.value('from', s(change.state.value))}"]
    if condition.same_attempts:
        parts.append(f"size({expr.name('attempts')}) = {expr.value('done', n(change.done))}")
    if condition.lease_lapsed:
        parts.append(f"{expr.name('claim_until')} < {expr.value('now', n(change.now))}")
    if condition.attempt_free:
        claimed, until = expr.name("claimed_attempt"), expr.name("claim_until")
        parts.append(
            f"({claimed} < {expr.value('n', n(change.claimed_attempt))}"
            f" OR {until} < {expr.value('now', n(change.now))})"
        )
    if condition.never_claimed:
        parts.append(f"{expr.name('claimed_attempt')} = {expr.value('zero', n(0))}")
    return " AND ".join(parts)


def _update(change: Change, expr: Expression) -> None:
    """SET/REMOVE what ``change`` writes (the same fields :func:`lifecycle.applied` changes)."""
    if change.event is Event.TAKE_OVER:
        expr.set("claim_until", n(change.lease_until))
        return
    if change.event is Event.CLAIM:
        expr.set("claimed_attempt", n(change.claimed_attempt))
        expr.set("claim_until", n(change.lease_until))
        return
    assert change.status is not None  # checked by Change.row
    expr.set("status", s(change.status.value))
    expr.set("claim_until", n(0))
    if change.entries:
        attempts = expr.name("attempts")
        entries = {"L": [{"M": _serialize_map(_attempt_to_item(e))} for e in change.entries]}
        expr.sets.append(f"{attempts} = list_append({attempts}, {expr.value('entries', entries)})")
    expr.set_or_remove(
        "next_attempt_at", n(change.next_attempt_at) if change.next_attempt_at is not None else None
    )
    expr.set_or_remove("reason", s(change.reason) if change.reason is not None else None)
    if change.response is not None:
        expr.set("response", {"M": _serialize_map(_response_to_item(change.response))})
    if change.status in TERMINAL:
        expr.removes.append(expr.name("sealed"))
    elif change.sealed is not None:
        expr.set("sealed", {"B": change.sealed})


class DynamoRecordStore:
    """A :class:`~kisi_gateway.stores.ports.RecordStore` over one DynamoDB table."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def _key(self, request_id: str) -> dict[str, Any]:
        return {"request_id": s(request_id)}

    def create(self, record: RequestRecord) -> bool:
        """Write a new record (``start`` or ``queue``); ``False`` when the id exists already."""
        created_by(record)  # only a sending or queued record may be created
        request = {
            "TableName": self._table,
            "Item": _to_item(record),
            "ConditionExpression": "attribute_not_exists(request_id)",
        }
        return not isinstance(
            conditional(self._client.put_item, request, RecordStoreError), Lost
        )

    def get(self, request_id: str) -> RequestRecord | None:
        request = {"TableName": self._table, "Key": self._key(request_id), "ConsistentRead": True}
        item = read(self._client.get_item, request, RecordStoreError).get("Item")
        return _from_item(item) if item else None

    def apply(self, request_id: str, change: Change) -> Applied | None:
        """Apply ``change`` if the stored record still admits it; ``None`` when it did not."""
        expr = Expression()
        condition = condition_expression(change, expr)
        if change.event is Event.WITHDRAW:
            request: dict[str, Any] = {
                "TableName": self._table,
                "Key": self._key(request_id),
                "ConditionExpression": condition,
                "ExpressionAttributeNames": expr.names,
                "ExpressionAttributeValues": expr.values,
                "ReturnValues": "ALL_OLD",
            }
            answer = conditional(self._client.delete_item, request, RecordStoreError)
        else:
            _update(change, expr)
            request = expr.update(
                self._table, self._key(request_id), condition, return_values="ALL_OLD"
            )
            answer = conditional(self._client.update_item, request, RecordStoreError)
        if isinstance(answer, Lost):
            return None
        before = _from_item(answer["Attributes"])
        return Applied(before, applied(before, change))
