"""Request records: what callers poll with ``GET /requests/{id}``, kept in DynamoDB with a TTL.

A record is written when a call is deferred to the retry queue or carries an
``Idempotency-Key``. Every state change is a conditional write, so a duplicate delivery can
neither move a terminal record back nor make a second attempt with the same number:

- ``claim`` takes attempt *n* only while the record is queued with *n - 1* attempts made and
  no live claim; a lapsed claim of the same *n* means an earlier worker may have sent it
  (the caller decides, by route policy, whether that unknown outcome may be repeated);
- ``add_attempt`` appends attempt *n* only if exactly *n - 1* are recorded;
- nothing is written to a record that is already ``succeeded``, ``failed`` or ``expired``.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol, TypedDict

from botocore.exceptions import BotoCoreError, ClientError

# DynamoDB items are at most 400 KB; a final answer bigger than this is kept truncated.
MAX_STORED_BODY = 300_000


class RecordStatus(StrEnum):
    SENDING = "sending"  # an api_call owns it and is sending inline
    QUEUED = "queued"  # waiting in the retry queue
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"


TERMINAL: frozenset[RecordStatus] = frozenset(
    {RecordStatus.SUCCEEDED, RecordStatus.FAILED, RecordStatus.EXPIRED}
)


@dataclass(frozen=True, slots=True)
class AttemptEntry:
    """One attempt: when, its outcome class and status, and the delay chosen after it."""

    at: float
    cls: str
    status: int | None = None
    delay_s: int | None = None


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """Kisi's final answer, as the caller will get it back."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    truncated: bool = False

    @classmethod
    def of(cls, status: int, headers: Mapping[str, str], body: bytes) -> StoredResponse:
        return cls(status, dict(headers), body[:MAX_STORED_BODY], len(body) > MAX_STORED_BODY)

    def body_text(self) -> tuple[str, bool]:
        """The body as text, or base64 (``True``) when it is not UTF-8."""
        try:
            return self.body.decode("utf-8"), False
        except UnicodeDecodeError:
            return base64.b64encode(self.body).decode("ascii"), True


# The contract (DESIGN.md) names the outcome class "class", a Python keyword: hence the
# functional form.
PublicAttempt = TypedDict(
    "PublicAttempt",
    {"at": float, "class": str, "status": int | None, "delay_s": int | None},
)


class PublicResponse(TypedDict):
    status: int
    headers: dict[str, str]
    body: Any
    truncated: bool


class PublicRecord(TypedDict):
    """The record as ``GET /requests/{id}`` answers it (DESIGN.md "Contracts")."""

    request_id: str
    status: str
    method: str
    path: str
    route: str
    attempts: list[PublicAttempt]
    next_attempt_at: float | None
    deadline: float
    reason: str | None
    response: PublicResponse | None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """The life of one call through the gateway."""

    request_id: str
    status: RecordStatus
    method: str
    path: str
    route: str
    policy: str
    created_at: float
    deadline: float
    expires_at: int
    attempts: tuple[AttemptEntry, ...] = ()
    next_attempt_at: float | None = None
    reason: str | None = None
    response: StoredResponse | None = None
    claimed_attempt: int = 0
    claim_until: float = 0.0
    scope: str = ""  # who may read it: the caller identity that created it (hashed)
    fields_hash: str = ""  # hash of method, path, query and body, for Idempotency-Key reuse

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)

    def public(self) -> PublicRecord:
        response: PublicResponse | None = None
        if self.response is not None:
            text, _ = self.response.body_text()
            response = {
                "status": self.response.status,
                "headers": dict(self.response.headers),
                "body": text,
                "truncated": self.response.truncated,
            }
        return {
            "request_id": self.request_id,
            "status": self.status.value,
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "attempts": [
                {"at": a.at, "class": a.cls, "status": a.status, "delay_s": a.delay_s}
                for a in self.attempts
            ],
            "next_attempt_at": self.next_attempt_at,
            "deadline": self.deadline,
            "reason": self.reason,
            "response": response,
        }


class RecordStoreError(Exception):
    """The record store could not be reached or refused a write for another reason."""


class RecordStore(Protocol):
    """Where records live (DynamoDB deployed; tests may pass an in-memory store)."""

    def create(self, record: RequestRecord) -> bool: ...
    def get(self, request_id: str) -> RequestRecord | None: ...
    def claim(self, request_id: str, attempt: int, now: float, lease_s: float) -> Claim: ...
    def add_attempt(self, request_id: str, change: AttemptChange) -> RequestRecord | None: ...
    def take_over(self, request_id: str, now: float, lease_s: float) -> RequestRecord | None: ...
    def delete_unsent(self, request_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Claim:
    """The result of trying to take attempt *n*.

    ``record`` is the record after the claim (``None`` when it was not taken);
    ``lapsed`` is true when an earlier claim of the same attempt expired unrecorded: the
    request may have reached Kisi already.
    """

    record: RequestRecord | None
    lapsed: bool = False


@dataclass(frozen=True, slots=True)
class AttemptChange:
    """``entries`` were made after the first ``done_before`` attempts, and the new state.

    The write applies only if exactly ``done_before`` attempts are recorded and the status is
    one of ``expected``: a duplicate or late writer changes nothing.
    """

    done_before: int
    status: RecordStatus
    entries: tuple[AttemptEntry, ...] = ()
    next_attempt_at: float | None = None
    reason: str | None = None
    response: StoredResponse | None = None
    expected: frozenset[RecordStatus] = field(
        default=frozenset({RecordStatus.SENDING, RecordStatus.QUEUED})
    )


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
    }
    if record.next_attempt_at is not None:
        data["next_attempt_at"] = Decimal(str(record.next_attempt_at))
    if record.reason is not None:
        data["reason"] = record.reason
    if record.response is not None:
        data["response"] = _response_to_item(record.response)
    return {k: _serialize(v) for k, v in data.items()}


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
    )


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class DynamoRecordStore:
    """Records in a DynamoDB table keyed by ``request_id`` (TTL attribute ``expires_at``)."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def create(self, record: RequestRecord) -> bool:
        """Write a new record; ``False`` when one with that id exists already."""
        try:
            self._client.put_item(
                TableName=self._table,
                Item=_to_item(record),
                ConditionExpression="attribute_not_exists(request_id)",
            )
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and _conditional_failed(exc):
                return False
            raise RecordStoreError(str(exc)) from exc
        return True

    def get(self, request_id: str) -> RequestRecord | None:
        try:
            answer = self._client.get_item(
                TableName=self._table,
                Key={"request_id": {"S": request_id}},
                ConsistentRead=True,
            )
        except (ClientError, BotoCoreError) as exc:
            raise RecordStoreError(str(exc)) from exc
        item = answer.get("Item")
        return _from_item(item) if item else None

    def claim(self, request_id: str, attempt: int, now: float, lease_s: float) -> Claim:
        """Take attempt ``attempt`` of a queued record for ``lease_s`` seconds."""
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key={"request_id": {"S": request_id}},
                UpdateExpression="SET claimed_attempt = :n, claim_until = :lease",
                ConditionExpression=(
                    "#s = :queued AND size(attempts) = :done "
                    "AND (claimed_attempt < :n OR claim_until < :now)"
                ),
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":n": {"N": str(attempt)},
                    ":lease": {"N": str(now + lease_s)},
                    ":queued": {"S": RecordStatus.QUEUED.value},
                    ":done": {"N": str(attempt - 1)},
                    ":now": {"N": str(now)},
                },
                ReturnValues="ALL_OLD",
            )
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and _conditional_failed(exc):
                return Claim(record=None)
            raise RecordStoreError(str(exc)) from exc
        old = _from_item(answer["Attributes"])
        new = replace(old, claimed_attempt=attempt, claim_until=now + lease_s)
        return Claim(record=new, lapsed=old.claimed_attempt == attempt)

    def add_attempt(self, request_id: str, change: AttemptChange) -> RequestRecord | None:
        """Apply ``change`` if the record still expects it; ``None`` when it did not."""
        names = {"#s": "status"}
        values: dict[str, Any] = {
            ":status": {"S": change.status.value},
            ":done": {"N": str(change.done_before)},
        }
        sets = ["#s = :status", "claim_until = :zero"]
        values[":zero"] = {"N": "0"}
        removes: list[str] = []
        if change.entries:
            sets.append("attempts = list_append(attempts, :entries)")
            values[":entries"] = {
                "L": [{"M": _serialize_map(_attempt_to_item(e))} for e in change.entries]
            }
        for name, value in (
            ("next_attempt_at", change.next_attempt_at),
            ("reason", change.reason),
        ):
            names[f"#{name}"] = name
            if value is None:
                removes.append(f"#{name}")
            else:
                sets.append(f"#{name} = :{name}")
                values[f":{name}"] = _serialize(
                    Decimal(str(value)) if isinstance(value, float) else value
                )
        if change.response is not None:
            names["#response"] = "response"
            sets.append("#response = :response")
            values[":response"] = {"M": _serialize_map(_response_to_item(change.response))}
        expected = sorted(s.value for s in change.expected)
        for index, status in enumerate(expected):
            values[f":e{index}"] = {"S": status}
        allowed = ", ".join(f":e{index}" for index in range(len(expected)))
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key={"request_id": {"S": request_id}},
                UpdateExpression=expression,
                ConditionExpression=f"#s IN ({allowed}) AND size(attempts) = :done",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and _conditional_failed(exc):
                return None
            raise RecordStoreError(str(exc)) from exc
        return _from_item(answer["Attributes"])

    def take_over(self, request_id: str, now: float, lease_s: float) -> RequestRecord | None:
        """Take a ``sending`` record whose api_call lease lapsed; ``None`` if it is not so."""
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key={"request_id": {"S": request_id}},
                UpdateExpression="SET claim_until = :lease",
                ConditionExpression="#s = :sending AND claim_until < :now",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":lease": {"N": str(now + lease_s)},
                    ":sending": {"S": RecordStatus.SENDING.value},
                    ":now": {"N": str(now)},
                },
                ReturnValues="ALL_NEW",
            )
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and _conditional_failed(exc):
                return None
            raise RecordStoreError(str(exc)) from exc
        return _from_item(answer["Attributes"])

    def delete_unsent(self, request_id: str) -> None:
        """Drop a record no retry will ever pick up: its api_call failed before queueing it.

        Only a record still ``sending``, or ``queued`` but never claimed by a worker (so no
        message of it was ever received) goes; anything further along stays.
        """
        try:
            self._client.delete_item(
                TableName=self._table,
                Key={"request_id": {"S": request_id}},
                ConditionExpression=(
                    "#s = :sending OR (#s = :queued AND claimed_attempt = :zero)"
                ),
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":zero": {"N": "0"},
                    ":sending": {"S": RecordStatus.SENDING.value},
                    ":queued": {"S": RecordStatus.QUEUED.value},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and _conditional_failed(exc):
                return
            raise RecordStoreError(str(exc)) from exc


def _serialize_map(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serialize(v) for k, v in data.items()}
