"""The ports the pipeline uses, and the errors they raise.

Each port has a DynamoDB or SQS adapter beside this module and one in-memory implementation in
:mod:`kisi_gateway.stores.memory`; the pipeline only ever sees these protocols.

=================  =========================================  ======================================
port               deployed                                   in memory (tests, benchmark)
=================  =========================================  ======================================
``RecordStore``    :class:`~.records.DynamoRecordStore`        :class:`~.memory.MemoryRecordStore`
``RetryQueue``     :class:`~.queue.SqsRetryQueue`              :class:`~.memory.MemoryQueue`
``SendBudget``     :class:`~.budget.DynamoSendBudget`          :class:`~.memory.MemorySendBudget`
``Guard``          :class:`~.guard.DynamoGuard`                :class:`~.memory.MemoryGuard`
``Directory``      :class:`~.directory.DynamoDirectory`        :class:`~.memory.MemoryDirectory`
``CredentialVault`` :class:`~.vault.KmsVault`                  :class:`~.memory.MemoryVault`
``KnownBadStore``  :class:`~.known_bad.DynamoKnownBad`         :class:`~.memory.MemoryKnownBad`
=================  =========================================  ======================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kisi_gateway.core.breaker import Pause
from kisi_gateway.core.identity import Caller, Credential, KisiLogin, Tenant
from kisi_gateway.core.known_bad import KnownAnswer
from kisi_gateway.core.lifecycle import Change
from kisi_gateway.core.outcome import Outcome
from kisi_gateway.core.ratelimit import ANYONE, Booking, Grant
from kisi_gateway.core.records import RequestRecord, RetryMessage

# How long a caller should wait when the budget's store cannot be reached (fail closed).
UNAVAILABLE_RETRY_S = 1.0


class Clock(Protocol):
    """Wall-clock time and waiting; tests pass a clock whose ``sleep`` advances ``now``."""

    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class RecordStoreError(Exception):
    """The record store could not be reached or refused a write for another reason."""


class QueueError(Exception):
    """The queue could not be reached or refused the call."""


class GuardStoreError(Exception):
    """The guard's table could not be read or written (callers of ``check`` never see it)."""


class DirectoryError(Exception):
    """The directory of tenants and callers could not be read or written."""


class SecretUnavailableError(Exception):
    """A service login's secret could not be read, and no earlier read of it succeeded."""


class KnownBadStoreError(Exception):
    """The known-bad entries could not be read or written (the pipeline then just sends)."""


class VaultError(Exception):
    """A caller's credential could not be sealed or opened (KMS unreachable, or refused)."""


class BudgetUnavailableError(Exception):
    """The budget's store could not be read or written: do not send, try again shortly.

    The budget fails closed. Sending without it, every Lambda would send at its own full rate
    exactly when the fleet can no longer coordinate, and each resulting 429 counts against the
    account. The caller answers 503 with ``Retry-After`` or requeues the request; nothing was
    sent and no attempt is spent.
    """

    def __init__(self, message: str, retry_after_s: float = UNAVAILABLE_RETRY_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Applied:
    """A change that took effect: the record before it, and after it (``None``: deleted)."""

    before: RequestRecord
    after: RequestRecord | None


class RecordStore(Protocol):
    """Request records; every change follows a row of :mod:`kisi_gateway.core.lifecycle`."""

    def create(self, record: RequestRecord) -> bool:
        """Write a new sending or queued record; ``False`` when the id exists already."""
        ...

    def get(self, request_id: str) -> RequestRecord | None: ...

    def apply(self, request_id: str, change: Change) -> Applied | None:
        """Apply ``change`` if the stored record still admits it; ``None`` when it did not."""
        ...


class RetryQueue(Protocol):
    """The retry queue and its dead-letter queue."""

    def enqueue(self, message: RetryMessage, delay_s: int) -> None:
        """Deliver ``message`` in ``delay_s`` seconds (at most 900)."""
        ...

    def postpone(self, receipt_handle: str, delay_s: int) -> None:
        """Make a received message visible again in ``delay_s`` seconds (at most 43,200)."""
        ...

    def dead_letter(self, message: RetryMessage, reason: str) -> None:
        """Park a request that will not be retried, with why."""
        ...


class SendBudget(Protocol):
    """Ask before sending, report what Kisi answered."""

    def acquire(
        self, bucket: str, route_key: str, now: float, max_wait_s: float = 0.0,
        booking: Booking = ANYONE,
    ) -> Grant:
        """Reserve a slot in ``bucket`` (a Kisi user's) for one request to ``route_key``, at
        most ``max_wait_s`` ahead; ``booking`` says its priority and whose share it counts in.
        """
        ...

    def observe(
        self, bucket: str, route_key: str, outcome: Outcome, retry_after_s: float | None,
        now: float,
    ) -> None:
        """Adapt to what Kisi answered: confirmed overloads slow the bucket down."""
        ...


class Guard(Protocol):
    """The circuit breaker over bad requests (:mod:`kisi_gateway.core.breaker`)."""

    def check(self, identity: str, route_key: str, now: float) -> Pause | None:
        """``None``: ``identity`` may send on ``route_key`` (perhaps as the elected half-open
        probe); else the pause to honour."""
        ...

    def observe(self, identity: str, route_key: str, outcome: Outcome, now: float) -> None:
        """Record Kisi's answer to a request ``identity`` sent."""
        ...

    def probing(self, identity: str, route_key: str) -> list[str]:
        """The scopes of ``identity`` on ``route_key`` whose half-open probe the last
        ``check`` here was elected to send (the gateway then sends its own safe read)."""
        ...


class KnownBadHints(Protocol):
    """Whether an identity may have live known-bad entries, so that the known-bad screen
    needs no store round trip of its own for an identity that has none.

    The guard keeps the hint on the identity's account item, which it reads anyway: a view at
    most as old as the guard's own verdict cache says "none", or the entries are looked up.
    """

    def may_know_bad(self, identity: str, now: float) -> bool:
        """``False`` only when a fresh enough view shows no live entry of ``identity``."""
        ...

    def note_known_bad(self, identity: str, until: float, now: float) -> None:
        """``identity`` has an entry until ``until``; never raises (a lost note is logged)."""
        ...


class Directory(Protocol):
    """Tenants, their callers, and the Kisi login behind each identity (:mod:`.directory`)."""

    def caller(self, api_key_id: str) -> Caller | None: ...
    def tenant(self, name: str) -> Tenant | None: ...
    def login(self, identity: str, now: float) -> KisiLogin | None: ...
    def remember_login(self, identity: str, login: KisiLogin, until: float) -> None: ...


class CredentialVault(Protocol):
    """Seals a caller's credential for a deferred retry, and opens it for the worker.

    ``context`` binds the sealed bytes to one request: they open only for that request id.
    """

    def seal(self, credential: Credential, context: str) -> bytes: ...
    def open(self, sealed: bytes, context: str) -> Credential: ...


class KnownBadStore(Protocol):
    """Kisi's recent refusals per identity and resource path (:mod:`kisi_gateway.core.known_bad`).

    Every method may raise :class:`KnownBadStoreError`; the pipeline fails open on it.
    """

    def find(self, identity: str, resource: str, key: str, now: float) -> KnownAnswer | None:
        """The live answer remembered for request ``key`` of ``identity`` on ``resource``."""
        ...

    def remember(self, identity: str, resource: str, key: str, answer: KnownAnswer) -> None:
        """Keep ``answer`` for request ``key`` until ``answer.until``."""
        ...

    def forget(self, identity: str, resource: str) -> None:
        """Drop every entry of ``identity`` on ``resource`` (a write there succeeded)."""
        ...
