"""The request record: what callers poll with ``GET /requests/{id}``, and what a retry carries.

A record is written when a call is deferred to the retry queue or carries an
``Idempotency-Key``; how it may change is :mod:`kisi_gateway.core.lifecycle`'s table. A
:class:`RetryMessage` is what the retry queue holds for it: enough to send the request again,
never a credential.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, TypedDict

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
    # Who it acts as, for the worker: the tenant, the caller (API key id), the kind of
    # credential and the caller's mode; a caller's own credential only sealed (KMS), and only
    # until the request ends.
    tenant: str = "default"
    caller: str = ""
    credential_kind: str = "service"
    caller_mode: str = "auto"
    sealed: bytes | None = field(default=None, repr=False)

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


MESSAGE_VERSION = 1


class MessageError(ValueError):
    """A queue message this version of the worker cannot read."""


@dataclass(frozen=True, slots=True)
class RetryMessage:
    """A deferred request. ``prior_attempts`` were made before this message was (re)queued."""

    request_id: str
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: str | None
    prior_attempts: int
    deadline: float
    policy: str
    route: str
    enqueued_at: float
    v: int = MESSAGE_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["query"] = [list(pair) for pair in self.query]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> RetryMessage:
        """Parse and check a message body; raises :class:`MessageError` when unusable."""
        try:
            data: Any = json.loads(raw)
        except ValueError as exc:
            raise MessageError("message body is not JSON") from exc
        if not isinstance(data, dict) or data.get("v") != MESSAGE_VERSION:
            raise MessageError("message is not a version 1 retry message")
        try:
            query = tuple((str(k), str(v)) for k, v in data["query"])
            message = cls(
                request_id=str(data["request_id"]),
                method=str(data["method"]),
                path=str(data["path"]),
                query=query,
                body=None if data["body"] is None else str(data["body"]),
                prior_attempts=int(data["prior_attempts"]),
                deadline=float(data["deadline"]),
                policy=str(data["policy"]),
                route=str(data["route"]),
                enqueued_at=float(data["enqueued_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"message field missing or malformed: {exc}") from exc
        return message
