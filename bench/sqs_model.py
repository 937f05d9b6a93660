"""SQS and Lambda's SQS event source in virtual time, with the limits the gateway relies on.

The numbers come from ``template.yaml`` and the SQS quotas: ``DelaySeconds`` at most 900 s, a
visibility timeout at most 43,200 s, the retry queue's 180 s visibility timeout and its redrive
to the dead-letter queue once a message has been received 15 times (``maxReceiveCount``); the
retry worker's event source takes batches of up to 10 with a 1 s batching window, at most 5
invocations at once (``ScalingConfig.MaximumConcurrency``).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from bench.engine import Engine, Process
from kisi_gateway.core.backoff import SQS_MAX_DELAY_S, SQS_MAX_VISIBILITY_S
from kisi_gateway.core.records import RetryMessage
from kisi_gateway.stores.ports import QueueError

QUEUE_VISIBILITY_S = 180.0  # template.yaml RetryQueue VisibilityTimeout
MAX_RECEIVE_COUNT = 15  # template.yaml RetryQueue RedrivePolicy
BATCH_SIZE = 10  # template.yaml RetryWorker SQS event BatchSize
BATCH_WINDOW_S = 1.0  # MaximumBatchingWindowInSeconds
MAX_CONCURRENCY = 5  # ScalingConfig MaximumConcurrency
LAMBDA_TIMEOUT_S = 30.0  # RetryWorker Timeout


@dataclass(slots=True, eq=False)
class Message:
    """A message in the retry queue: the library's :class:`RetryMessage` and SQS's own
    bookkeeping (the receipt handle of its latest receive)."""

    body: RetryMessage
    visible_at: float
    receipt_handle: str = ""
    receive_count: int = 0
    version: int = 0
    deleted: bool = False


class VirtualQueue:
    """A standard queue and its dead-letter queue: delays, visibility, receive counts, redrive.

    The gateway's side is the library's :class:`~kisi_gateway.stores.ports.RetryQueue` port
    (``enqueue``, ``postpone``, ``dead_letter``, clamped as
    :class:`~kisi_gateway.stores.queue.SqsRetryQueue` clamps); Lambda's event source uses
    ``receive`` and ``delete``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        visibility_s: float = QUEUE_VISIBILITY_S,
        max_receive_count: int = MAX_RECEIVE_COUNT,
    ) -> None:
        self._engine = engine
        self._visibility_s = visibility_s
        self._max_receive_count = max_receive_count
        self._heap: list[tuple[float, int, Message, int]] = []
        self._order = itertools.count()
        self._receipts = itertools.count(1)
        self._received: dict[str, Message] = {}  # receipt handle -> message
        self.on_visible: Callable[[float], None] = lambda when: None
        self.sent = 0
        self.redriven: list[Message] = []  # moved to the DLQ by SQS (receive count exceeded)
        self.dead_lettered: list[tuple[RetryMessage, str]] = []  # sent to the DLQ by the worker

    def enqueue(self, message: RetryMessage, delay_s: int) -> None:
        """``SendMessage`` with ``DelaySeconds`` (clamped to 0..900, as the gateway does)."""
        delay = max(0, min(int(delay_s), SQS_MAX_DELAY_S))
        self.sent += 1
        self._push(Message(message, self._engine.now + delay))

    def postpone(self, receipt_handle: str, delay_s: int) -> None:
        """``ChangeMessageVisibility`` on a received message (0..43,200 s from now).

        Like SQS, only the latest receipt of a message that is still in the queue is accepted.
        """
        message = self._received.get(receipt_handle)
        if message is None or message.deleted or message.receipt_handle != receipt_handle:
            raise QueueError(f"ChangeMessageVisibility: stale receipt handle {receipt_handle}")
        timeout = max(0, min(int(delay_s), SQS_MAX_VISIBILITY_S))
        message.visible_at = self._engine.now + timeout
        self._push(message)

    def dead_letter(self, message: RetryMessage, reason: str) -> None:
        """The worker parks a request it ended (a copy goes to the DLQ)."""
        self.dead_lettered.append((message, reason))

    def receive(self, limit: int) -> list[Message]:
        """Up to ``limit`` visible messages, hidden for the visibility timeout.

        A message received more than ``maxReceiveCount`` times goes to the dead-letter queue
        instead of to the caller, as SQS's redrive does.
        """
        now = self._engine.now
        taken: list[Message] = []
        while self._heap and len(taken) < limit:
            visible_at, _, message, version = self._heap[0]
            if message.deleted or version != message.version:
                heapq.heappop(self._heap)
                continue
            if visible_at > now:
                break
            heapq.heappop(self._heap)
            message.receive_count += 1
            if message.receive_count > self._max_receive_count:
                self.delete(message)
                self.redriven.append(message)
                continue
            message.visible_at = now + self._visibility_s
            self._received.pop(message.receipt_handle, None)
            message.receipt_handle = f"r{next(self._receipts)}"
            self._received[message.receipt_handle] = message
            self._push(message)
            taken.append(message)
        return taken

    def delete(self, message: Message) -> None:
        """``DeleteMessage`` (Lambda's event source, for the batch items that succeeded)."""
        message.deleted = True
        self._received.pop(message.receipt_handle, None)

    def next_visible(self) -> float | None:
        """When the next message becomes receivable, or ``None`` if the queue is empty."""
        while self._heap:
            visible_at, _, message, version = self._heap[0]
            if message.deleted or version != message.version:
                heapq.heappop(self._heap)
                continue
            return visible_at
        return None

    def _push(self, message: Message) -> None:
        message.version += 1
        heapq.heappush(
            self._heap, (message.visible_at, next(self._order), message, message.version)
        )
        self.on_visible(message.visible_at)


Handler = Callable[[list[Message]], Process[None]]


class EventSourceMapping:
    """Lambda's SQS poller: gathers a batch (full, or after the window), invokes the handler.

    ``handler`` is one invocation (a process: the gateway runs the library's
    ``RetryWorker.process`` in a virtual thread). Messages the handler neither deleted nor
    changed stay hidden for the queue's visibility timeout, as with ``ReportBatchItemFailures``.
    """

    def __init__(
        self,
        engine: Engine,
        queue: VirtualQueue,
        handler: Handler,
        *,
        batch_size: int = BATCH_SIZE,
        window_s: float = BATCH_WINDOW_S,
        max_concurrency: int = MAX_CONCURRENCY,
    ) -> None:
        self._engine = engine
        self._queue = queue
        self._handler = handler
        self._batch_size = batch_size
        self._window_s = window_s
        self._max_concurrency = max_concurrency
        self._busy = 0
        self._gathering: list[Message] = []
        self._gather_started: float | None = None
        self._next_poll: float | None = None
        self.invocations = 0
        self.longest_invocation_s = 0.0
        queue.on_visible = self.wake

    def wake(self, when: float) -> None:
        """Poll at ``when`` unless a poll is already due sooner."""
        if self._next_poll is None or when < self._next_poll:
            self._next_poll = when
            self._engine.at(when, self._poll)

    def _poll(self) -> None:
        self._next_poll = None
        now = self._engine.now
        while self._busy < self._max_concurrency:
            room = self._batch_size - len(self._gathering)
            got = self._queue.receive(room)
            if got and self._gather_started is None:
                self._gather_started = now
            self._gathering.extend(got)
            if not self._gathering:
                break
            assert self._gather_started is not None
            window_end = self._gather_started + self._window_s
            if len(self._gathering) < self._batch_size and now < window_end:
                upcoming = self._queue.next_visible()
                self.wake(min(window_end, upcoming if upcoming is not None else math.inf))
                return
            self._invoke(self._gathering)
            self._gathering, self._gather_started = [], None
        if self._busy < self._max_concurrency:
            upcoming = self._queue.next_visible()
            if upcoming is not None:
                self.wake(upcoming)

    def _invoke(self, batch: list[Message]) -> None:
        self._busy += 1
        self.invocations += 1
        started = self._engine.now

        def finished(_: object) -> None:
            self._busy -= 1
            self.longest_invocation_s = max(
                self.longest_invocation_s, self._engine.now - started
            )
            self.wake(self._engine.now)

        self._engine.spawn(self._handler(batch), finished)
