"""The retry queue on SQS: the calls that move a deferred request (:class:`RetryMessage`).

A message holds what is needed to send the request again — never the Kisi key, which the
worker reads from Secrets Manager itself. Delays: the first is the message's
``DelaySeconds`` (at most 900 s), later ones a ``ChangeMessageVisibility`` on the received
message (at most 43,200 s), so SQS, not a sleeping Lambda, holds the request while it waits.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kisi_gateway.core.backoff import SQS_MAX_DELAY_S, SQS_MAX_VISIBILITY_S
from kisi_gateway.core.records import RetryMessage
from kisi_gateway.stores.ports import QueueError


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
