"""The retry queue: what a deferred request carries, and the SQS calls that move it.

A message holds what is needed to send the request again — never the Kisi key, which the
worker reads from Secrets Manager itself. Delays: the first is the message's
``DelaySeconds`` (at most 900 s), later ones a ``ChangeMessageVisibility`` on the received
message (at most 43,200 s), so SQS, not a sleeping Lambda, holds the request while it waits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from kisi_gateway.core.backoff import SQS_MAX_DELAY_S, SQS_MAX_VISIBILITY_S

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


class QueueError(Exception):
    """SQS could not be reached or refused the call."""


class RetryQueue(Protocol):
    """The queue operations the pipeline needs (SQS deployed; tests may pass a fake)."""

    def enqueue(self, message: RetryMessage, delay_s: int) -> None: ...
    def postpone(self, receipt_handle: str, delay_s: int) -> None: ...
    def dead_letter(self, message: RetryMessage, reason: str) -> None: ...


class SqsRetryQueue:
    """The retry queue and its dead-letter queue on SQS."""

    def __init__(self, client: Any, queue_url: str, dlq_url: str) -> None:
        self._client = client
        self._queue_url = queue_url
        self._dlq_url = dlq_url

    def enqueue(self, message: RetryMessage, delay_s: int) -> None:
        """Send ``message`` to be delivered in ``delay_s`` seconds (clamped to 0..900)."""
        self._call(
            "send_message",
            QueueUrl=self._queue_url,
            MessageBody=message.to_json(),
            DelaySeconds=max(0, min(int(delay_s), SQS_MAX_DELAY_S)),
            MessageAttributes={
                "request_id": {"DataType": "String", "StringValue": message.request_id},
                "route": {"DataType": "String", "StringValue": message.route},
            },
        )

    def postpone(self, receipt_handle: str, delay_s: int) -> None:
        """Make a received message visible again in ``delay_s`` seconds (0..43,200)."""
        self._call(
            "change_message_visibility",
            QueueUrl=self._queue_url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(int(delay_s), SQS_MAX_VISIBILITY_S)),
        )

    def dead_letter(self, message: RetryMessage, reason: str) -> None:
        """Park a request that will not be retried, with why, for an operator to inspect."""
        self._call(
            "send_message",
            QueueUrl=self._dlq_url,
            MessageBody=message.to_json(),
            MessageAttributes={
                "request_id": {"DataType": "String", "StringValue": message.request_id},
                "reason": {"DataType": "String", "StringValue": reason},
            },
        )

    def _call(self, operation: str, **kwargs: Any) -> None:
        try:
            getattr(self._client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"SQS {operation} failed: {type(exc).__name__}") from exc
