"""Event sources Lambda would run for the functions: SQS mappings, schedules, SNS.

Each emulator has a ``poll_once``/``tick``/``fire`` step that tests drive directly, and a
``run(stop)`` loop for the runtime's daemon threads. The events they build have the exact
shape Lambda delivers (checked against Powertools' parser models in the tests).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from local.lambda_invoke import FunctionInvoker, Invocation
from local.schedule_expressions import ScheduleExpressionError, next_fire
from local.stack import Schedule, SqsMapping, Subscription

__all__ = [
    "BatchOutcome",
    "Scheduler",
    "SnsDelivery",
    "SqsPoller",
    "failed_item_ids",
    "scheduled_event",
    "sns_event",
    "sqs_record",
]

# Lambda retries a failed asynchronous invocation (SNS, EventBridge) twice.
ASYNC_ATTEMPTS = 3
# Batches a poller remembers for a hand-back after a restart of moto (a few seconds of them).
_RECENT_BATCHES = 16


# SQS ------------------------------------------------------------------------------------
def _message_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    shaped: dict[str, Any] = {}
    for name, value in attributes.items():
        binary = value.get("BinaryValue")
        shaped[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": base64.b64encode(binary).decode()
            if isinstance(binary, bytes)
            else binary,
            "stringListValues": list(value.get("StringListValues") or []),
            "binaryListValues": [
                base64.b64encode(item).decode() if isinstance(item, bytes) else item
                for item in value.get("BinaryListValues") or []
            ],
            "dataType": value["DataType"],
        }
        if shaped[name]["stringValue"] is None:
            del shaped[name]["stringValue"]
        if shaped[name]["binaryValue"] is None:
            del shaped[name]["binaryValue"]
    return shaped


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One record of the SQS event Lambda builds from a ReceiveMessage result."""
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": _message_attributes(message.get("MessageAttributes") or {}),
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def failed_item_ids(result: Any, message_ids: set[str]) -> set[str] | None:
    """Message ids to keep per a ReportBatchItemFailures response; None means "keep all".

    Lambda treats the whole batch as failed when the response is not of the documented shape,
    or names an id that is empty or not in the batch. No response, or an empty list: all done.
    """
    if result is None or result == {}:
        return set()
    if not isinstance(result, dict):
        return None
    failures = result.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    kept: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in message_ids:
            return None
        kept.add(identifier)
    return kept


@dataclass(frozen=True)
class BatchOutcome:
    received: int
    deleted: int
    kept: tuple[str, ...] = ()
    error: str | None = None


class SqsPoller:
    """The SQS event source mapping: receive a batch, invoke, delete what succeeded."""

    def __init__(
        self,
        mapping: SqsMapping,
        invoker: FunctionInvoker,
        sqs: Any,
        region: str,
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
        wait_time_s: int = 1,
    ) -> None:
        self.mapping = mapping
        self._invoker = invoker
        self._sqs = sqs
        self._region = region
        self._log = log
        self._clock = clock
        self._wait_time_s = wait_time_s
        # Receipt handles of the batch being handled, and of the last few with when each was
        # settled or abandoned: what to give back if the embedded AWS died (release_held).
        self._held: list[str] = []
        self._recent: deque[tuple[list[str], float]] = deque(maxlen=_RECENT_BATCHES)
        self._held_lock = threading.Lock()
        self._hand_back_since: float | None = None  # set by aws_restarted, done by run

    def _receive(self, count: int, wait_s: int) -> list[dict[str, Any]]:
        reply = self._sqs.receive_message(
            QueueUrl=self.mapping.queue_url,
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
            MaxNumberOfMessages=max(1, min(10, count)),
            WaitTimeSeconds=wait_s,
        )
        messages = list(reply.get("Messages") or [])
        with self._held_lock:  # held from the moment moto hid them, even if a later call fails
            self._held.extend(m["ReceiptHandle"] for m in messages)
        return messages

    def _batch(self, wait_s: int) -> list[dict[str, Any]]:
        batch = self._receive(self.mapping.batch_size, wait_s)
        if not batch or self.mapping.max_batching_window_s <= 0:
            return batch
        # Within the batching window, gather up to BatchSize records (10 per ReceiveMessage).
        deadline = self._clock() + self.mapping.max_batching_window_s
        while len(batch) < self.mapping.batch_size:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            more = self._receive(
                self.mapping.batch_size - len(batch), min(20, max(1, int(remaining)))
            )
            batch.extend(more)
        return batch

    def poll_once(self, wait_time_s: int | None = None) -> BatchOutcome:
        """Receive one batch (waiting up to ``wait_time_s``), invoke, and settle it."""
        with self._held_lock:
            self._held = []
        try:
            messages = self._batch(self._wait_time_s if wait_time_s is None else wait_time_s)
            if not messages:
                return BatchOutcome(0, 0)
            return self._handle(messages)
        finally:
            # Settled, or abandoned when a call failed (moto died within the batching window,
            # say): either way remembered with when, for release_held.
            with self._held_lock:
                if self._held:
                    self._recent.append((self._held, self._clock()))
                self._held = []

    def release_held(self, since: float) -> int:
        """Make the messages of the batches handled since ``since`` visible again; how many.

        For a restart of the embedded AWS: a batch whose settling (delete, visibility change)
        met a dead moto would otherwise stay hidden for the queue's whole visibility timeout.
        A handle the restored moto does not know (the receive was not saved, or the message
        was deleted) is skipped. Handing a message back early is safe: the worker hides a
        message delivered before its time again.
        Pass ``since=math.inf`` for the batch in hand only (at shutdown).
        """
        with self._held_lock:
            handles = list(self._held)
            for batch, when in self._recent:
                if when >= since:
                    handles += batch
        released = 0
        for start in range(0, len(handles), 10):  # ChangeMessageVisibilityBatch takes 10
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for i, handle in enumerate(handles[start : start + 10])
            ]
            reply = self._sqs.change_message_visibility_batch(
                QueueUrl=self.mapping.queue_url, Entries=entries
            )
            released += len(reply.get("Successful") or [])
        return released

    def aws_restarted(self, since: float) -> None:
        """moto was started again after it was last seen alive at ``since``: the polling
        thread hands back what it held (:meth:`release_held`) before it receives again.

        Done by that thread, not the caller's: moto accepts a message's older receipt handles,
        so a hand-back racing a new receive could show a message being handled to a second
        batch, whose settling would then delete the copy the first one postponed.
        """
        with self._held_lock:
            if self._hand_back_since is None or since < self._hand_back_since:
                self._hand_back_since = since

    def _hand_back(self) -> None:
        with self._held_lock:
            since = self._hand_back_since
        if since is None:
            return
        released = self.release_held(since)  # raises while moto is still down: tried again
        with self._held_lock:
            self._hand_back_since = None
        if released:
            self._log(
                f"SQS {self._queue_name}: {released} message(s) held when moto died handed back"
            )

    def _handle(self, messages: list[dict[str, Any]]) -> BatchOutcome:
        event = {"Records": [sqs_record(m, self.mapping.queue_arn, self._region) for m in messages]}
        invocation = self._invoker.invoke(self.mapping.function, event)
        ids = {m["MessageId"] for m in messages}
        if not invocation.ok:
            # Lambda deletes nothing: every message reappears after the visibility timeout.
            self._log(
                f"SQS {self._queue_name} -> {self.mapping.function}: {len(messages)} kept "
                f"({invocation.error})"
            )
            return BatchOutcome(len(messages), 0, tuple(sorted(ids)), invocation.error)
        if self.mapping.report_batch_item_failures:
            kept = failed_item_ids(invocation.result, ids)
            if kept is None:
                self._log(
                    f"SQS {self._queue_name} -> {self.mapping.function}: invalid "
                    "batchItemFailures response, whole batch kept"
                )
                return BatchOutcome(len(messages), 0, tuple(sorted(ids)), "invalid response")
        else:
            kept = set()
        done = [m for m in messages if m["MessageId"] not in kept]
        self._delete(done)
        self._log(
            f"SQS {self._queue_name} -> {self.mapping.function}: {len(messages)} received, "
            f"{len(done)} deleted, {len(kept)} kept for redelivery "
            f"({invocation.duration_ms:.0f} ms)"
        )
        return BatchOutcome(len(messages), len(done), tuple(sorted(kept)))

    @property
    def _queue_name(self) -> str:
        return self.mapping.queue_arn.rsplit(":", 1)[-1]

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):  # DeleteMessageBatch takes 10 entries
            chunk = messages[start : start + 10]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
            ]
            reply = self._sqs.delete_message_batch(QueueUrl=self.mapping.queue_url, Entries=entries)
            for failure in reply.get("Failed") or []:
                self._log(f"SQS {self._queue_name}: delete failed: {failure.get('Message')}")

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; an unreachable queue is retried, not fatal."""
        while not stop.is_set():
            if not self.mapping.enabled:
                stop.wait(1.0)
                continue
            try:
                self._hand_back()
                self.poll_once()
            except Exception as error:  # moto restarting, queue re-provisioning: keep going
                self._log(f"SQS {self._queue_name}: poll failed: {type(error).__name__}: {error}")
                stop.wait(1.0)


# EventBridge schedules ------------------------------------------------------------------
def scheduled_event(
    schedule: Schedule, account_id: str, region: str, now: datetime
) -> dict[str, Any]:
    """The "Scheduled Event" EventBridge sends for a schedule rule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [schedule.rule_arn],
        "detail": {},
    }


class Scheduler:
    """Fires each enabled schedule rule at its times; ``fire`` fires one now."""

    def __init__(
        self,
        schedules: Iterable[Schedule],
        invoker: FunctionInvoker,
        account_id: str,
        region: str,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        log: Callable[[str], None] = print,
    ) -> None:
        self.schedules = list(schedules)
        self._invoker = invoker
        self._account_id = account_id
        self._region = region
        self._now = now
        self._log = log
        self._next: dict[str, datetime | None] = {}
        start = now()
        for schedule in self.schedules:
            try:
                self._next[schedule.logical_id] = next_fire(schedule.expression, start)
            except ScheduleExpressionError as error:
                self._next[schedule.logical_id] = None
                log(f"schedule {schedule.logical_id}: {error}; fire it by hand only")

    def next_time(self, rule: str) -> datetime | None:
        return self._next.get(self._find(rule).logical_id)

    def _find(self, rule: str) -> Schedule:
        for schedule in self.schedules:
            if rule in (schedule.logical_id, schedule.rule_name, schedule.rule_arn):
                return schedule
        raise KeyError(f"no schedule rule {rule}")

    def fire(self, rule: str, now: datetime | None = None) -> list[Invocation]:
        """Invoke every target of ``rule`` once, as EventBridge would at ``now``."""
        schedule = self._find(rule)
        when = now or self._now()
        results = []
        for target in schedule.targets:
            event: Any = (
                json.loads(target.input)
                if target.input is not None
                else scheduled_event(schedule, self._account_id, self._region, when)
            )
            invocation = self._invoke_async(target.function, event)
            results.append(invocation)
            state = "ok" if invocation.ok else invocation.error
            self._log(
                f"schedule {schedule.logical_id} ({schedule.expression}) -> "
                f"{target.function}: {state}"
            )
        return results

    def _invoke_async(self, function: str, event: Any) -> Invocation:
        invocation = self._invoker.invoke(function, event)
        for _ in range(ASYNC_ATTEMPTS - 1):
            if invocation.ok:
                break
            invocation = self._invoker.invoke(function, event)
        return invocation

    def tick(self, now: datetime | None = None) -> list[Invocation]:
        """Fire every rule that is due at ``now``; each fires once even if several were missed."""
        when = now or self._now()
        results: list[Invocation] = []
        for schedule in self.schedules:
            due = self._next.get(schedule.logical_id)
            if not schedule.enabled or due is None or due > when:
                continue
            results.extend(self.fire(schedule.logical_id, when))
            following = next_fire(schedule.expression, due)
            while following <= when:
                following = next_fire(schedule.expression, following)
            self._next[schedule.logical_id] = following
        return results

    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        while not stop.wait(interval_s):
            try:
                self.tick()
            except Exception as error:
                self._log(f"scheduler: {type(error).__name__}: {error}")


# SNS -> Lambda --------------------------------------------------------------------------
def sns_event(notification: Mapping[str, Any], subscription_arn: str) -> dict[str, Any]:
    """The event Lambda receives for an SNS notification (``SigningCertUrl`` casing and all)."""
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": {
                    "Type": "Notification",
                    "MessageId": notification["MessageId"],
                    "TopicArn": notification["TopicArn"],
                    "Subject": notification.get("Subject"),
                    "Message": notification["Message"],
                    "Timestamp": notification["Timestamp"],
                    "SignatureVersion": str(notification.get("SignatureVersion", "1")),
                    "Signature": notification.get("Signature", "local"),
                    "SigningCertUrl": notification.get(
                        "SigningCertURL", "https://sns.us-east-1.amazonaws.com/local.pem"
                    ),
                    "UnsubscribeUrl": notification.get(
                        "UnsubscribeURL",
                        f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"
                        f"&SubscriptionArn={subscription_arn}",
                    ),
                    "MessageAttributes": dict(notification.get("MessageAttributes") or {}),
                },
            }
        ]
    }


@dataclass
class SnsDelivery:
    """Delivers topic messages to subscribed functions.

    Messages published through moto reach each lambda subscription's tap queue (see
    :mod:`local.emulated`); :meth:`poll_once` turns them into SNS events. :meth:`deliver`
    sends one message directly, without moto.
    """

    subscriptions: list[Subscription]
    taps: Mapping[str, str]
    invoker: FunctionInvoker
    sqs: Any
    log: Callable[[str], None] = print
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def _lambda_subscriptions(self) -> list[Subscription]:
        return [s for s in self.subscriptions if s.function is not None]

    def deliver(
        self,
        topic_arn: str,
        message: str,
        subject: str | None = None,
        attributes: Mapping[str, Mapping[str, str]] | None = None,
    ) -> list[Invocation]:
        """Deliver one message to every function subscribed to ``topic_arn``."""
        notification = {
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Subject": subject,
            "Message": message,
            "Timestamp": self.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "MessageAttributes": dict(attributes or {}),
        }
        results = []
        for subscription in self._lambda_subscriptions():
            if subscription.topic_arn == topic_arn and subscription.function is not None:
                results.append(self._invoke(subscription, notification))
        return results

    def _invoke(self, subscription: Subscription, notification: Mapping[str, Any]) -> Invocation:
        assert subscription.function is not None
        invocation = self.invoker.invoke(
            subscription.function, sns_event(notification, subscription.arn)
        )
        state = "ok" if invocation.ok else invocation.error
        self.log(
            f"SNS {notification['TopicArn'].rsplit(':', 1)[-1]} -> {subscription.function}: {state}"
        )
        return invocation

    def poll_once(self, wait_time_s: int = 0) -> list[Invocation]:
        """Deliver what reached the tap queues; a failure is retried up to Lambda's 3 attempts."""
        results = []
        for subscription in self._lambda_subscriptions():
            tap = self.taps.get(subscription.logical_id)
            if tap is None:
                continue
            reply = self.sqs.receive_message(
                QueueUrl=tap,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait_time_s,
                AttributeNames=["ApproximateReceiveCount"],
            )
            for message in reply.get("Messages") or []:
                notification = json.loads(message["Body"])
                invocation = self._invoke(subscription, notification)
                results.append(invocation)
                attempts = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
                if invocation.ok or attempts >= ASYNC_ATTEMPTS:
                    if not invocation.ok:
                        self.log(
                            f"SNS -> {subscription.function}: dropped after {attempts} attempts"
                        )
                    self.sqs.delete_message(QueueUrl=tap, ReceiptHandle=message["ReceiptHandle"])
                else:
                    # Retry soon rather than after the tap queue's 30 s visibility timeout.
                    self.sqs.change_message_visibility(
                        QueueUrl=tap, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=1
                    )
        return results

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if not self.poll_once(wait_time_s=1):
                    stop.wait(0.05)
            except Exception as error:
                self.log(f"SNS delivery: {type(error).__name__}: {error}")
                stop.wait(1.0)
