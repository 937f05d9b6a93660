"""Known-bad entries in DynamoDB: Kisi's recent refusals, shared by every Lambda.

The rules are :mod:`kisi_gateway.core.known_bad`'s. The entries live in the requests table
(it already has a TTL on ``expires_at`` and both sending functions already read and update
it), one item per identity and resource path, under a key no request id can take (request ids
are 32 hex characters)::

    request_id  S  "known-bad|<sha256 of identity and resource path, 40 hex>"
    entries     M  request key (32 hex) -> {status N, ctype S, body B, until N}
    expires_at  N  the newest entry's end: DynamoDB's TTL deletes the item some time after

One item per path, so a successful write clears every entry of the path in one update. At
most :data:`~kisi_gateway.core.known_bad.MAX_ENTRIES_PER_PATH` entries: past that, the item
is replaced by the newest refusal alone. Only GetItem and UpdateItem are used (clearing is a
``REMOVE``), which both functions' policies already grant on the table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kisi_gateway.core.known_bad import MAX_ENTRIES_PER_PATH, KnownAnswer
from kisi_gateway.stores.dynamo import Expression, conditional, n, number, read, s
from kisi_gateway.stores.ports import KnownBadStoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

KEY_PREFIX = "known-bad|"


def item_key(identity: str, resource: str) -> dict[str, Any]:
    """The item of ``identity``'s entries on ``resource``: a bounded, opaque key."""
    digest = hashlib.sha256(f"{identity}\0{resource}".encode()).hexdigest()[:40]
    return {"request_id": s(KEY_PREFIX + digest)}


def encode(answer: KnownAnswer) -> dict[str, Any]:
    """One entry as a DynamoDB map."""
    entry: dict[str, Any] = {"status": n(answer.status), "body": {"B": answer.body},
                             "until": n(answer.until)}
    if answer.content_type:
        entry["ctype"] = s(answer.content_type)
    return {"M": entry}


def decode(raw: Mapping[str, Any]) -> KnownAnswer | None:
    """An entry from its DynamoDB map; ``None`` when it cannot be read (treated as absent)."""
    fields = raw.get("M")
    if not isinstance(fields, Mapping):
        return None
    status, until = number(fields, "status"), number(fields, "until")
    body = (fields.get("body") or {}).get("B")
    ctype = (fields.get("ctype") or {}).get("S")
    if status is None or until is None or not isinstance(body, bytes | bytearray):
        return None
    return KnownAnswer(int(status), ctype if isinstance(ctype, str) else None, bytes(body), until)


class DynamoKnownBad:
    """The known-bad entries over the requests table; every failure is a
    :class:`~kisi_gateway.stores.ports.KnownBadStoreError`."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def find(self, identity: str, resource: str, key: str, now: float) -> KnownAnswer | None:
        """One eventually consistent GetItem of the path's entries, projected to ``key``'s."""
        request = {
            "TableName": self._table, "Key": item_key(identity, resource),
            "ProjectionExpression": "#entries.#key",
            "ExpressionAttributeNames": {"#entries": "entries", "#key": key},
        }
        item = read(self._client.get_item, request, KnownBadStoreError).get("Item") or {}
        raw = (item.get("entries") or {}).get("M", {}).get(key)
        answer = decode(raw) if isinstance(raw, Mapping) else None
        return answer if answer is not None and answer.live(now) else None

    def remember(self, identity: str, resource: str, key: str, answer: KnownAnswer) -> None:
        """Add the entry to the path's map; when there is no map yet, or it is full, start a
        new map with this entry alone (DynamoDB cannot SET a key inside a missing map)."""
        expr = Expression()
        entries, entry = expr.name("entries"), expr.name(key)
        expr.sets.append(f"{entries}.{entry} = {expr.value('entry', encode(answer))}")
        expr.set("expires_at", n(int(answer.until) + 1))
        condition = (f"attribute_exists({entries}) AND (size({entries}) < "
                     f"{expr.value('most', n(MAX_ENTRIES_PER_PATH))}"
                     f" OR attribute_exists({entries}.{entry}))")
        request = expr.update(self._table, item_key(identity, resource), condition,
                              return_values="NONE")
        request.pop("ReturnValuesOnConditionCheckFailure", None)
        if not isinstance(conditional(self._client.update_item, request, KnownBadStoreError),
                          dict):
            fresh = Expression()
            fresh.set("entries", {"M": {key: encode(answer)}})
            fresh.set("expires_at", n(int(answer.until) + 1))
            conditional(self._client.update_item,
                        fresh.update(self._table, item_key(identity, resource), None,
                                     return_values="NONE"), KnownBadStoreError)

    def forget(self, identity: str, resource: str) -> None:
        """REMOVE the path's entries, if it has any (a missing item is not created)."""
        expr = Expression()
        expr.removes.append(expr.name("entries"))
        request = expr.update(self._table, item_key(identity, resource),
                              f"attribute_exists({expr.name('entries')})", return_values="NONE")
        request.pop("ReturnValuesOnConditionCheckFailure", None)
        conditional(self._client.update_item, request, KnownBadStoreError)
