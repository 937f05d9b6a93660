"""Classification of one Kisi attempt: the single table that decides retry and "bad request".

Kisi's error-handling guide asks integrators to check every status, not to retry 4xx, to retry
429 and 5xx with backoff, and to keep bad requests low. Everything else in the gateway asks
this module what an answer means instead of looking at status codes itself.

>>> classify_status(429).cls
<OutcomeClass.RATE_LIMITED: 'rate_limited'>
>>> classify_status(503).retryable
True
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OutcomeClass(StrEnum):
    """What one attempt to reach Kisi came to."""

    SUCCESS = "success"
    REDIRECT = "redirect"
    CLIENT_ERROR = "client_error"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    NETWORK_ERROR = "network_error"


@dataclass(frozen=True, slots=True)
class Traits:
    """What a class of outcome implies."""

    retryable: bool
    bad_request: bool  # counted against the account by Kisi


# The one table. A 429 is retryable *and* bad: Kisi counts every one as a failed request, so
# the budget prefers sending at the right rate to retrying fast.
TRAITS: dict[OutcomeClass, Traits] = {
    OutcomeClass.SUCCESS: Traits(retryable=False, bad_request=False),
    OutcomeClass.REDIRECT: Traits(retryable=False, bad_request=False),
    OutcomeClass.CLIENT_ERROR: Traits(retryable=False, bad_request=True),
    OutcomeClass.RATE_LIMITED: Traits(retryable=True, bad_request=True),
    OutcomeClass.SERVER_ERROR: Traits(retryable=True, bad_request=False),
    OutcomeClass.NETWORK_ERROR: Traits(retryable=True, bad_request=False),
}

TOO_MANY_REQUESTS = 429


class Transport(StrEnum):
    """Why no HTTP answer arrived, and whether Kisi may have acted on the request."""

    CONNECT_ERROR = "connect_error"  # never reached Kisi: safe to repeat
    CONNECT_TIMEOUT = "connect_timeout"  # never reached Kisi: safe to repeat
    READ_TIMEOUT = "read_timeout"  # sent: Kisi may have acted (unknown outcome)
    CONNECTION_RESET = "connection_reset"  # sent: Kisi may have acted (unknown outcome)
    INVALID_RESPONSE = "invalid_response"  # sent and answered, but unreadable


# Whether the request certainly did not reach Kisi, per kind of transport failure.
NOT_SENT: frozenset[Transport] = frozenset({Transport.CONNECT_ERROR, Transport.CONNECT_TIMEOUT})


@dataclass(frozen=True, slots=True)
class Outcome:
    """One classified attempt.

    ``status`` is the HTTP status when Kisi answered, else ``None``; ``transport`` names the
    failure when it did not. ``sent`` is ``False`` only when the request certainly never
    reached Kisi; an unknown outcome (``sent`` true, no status) must not be repeated by a
    route whose policy forbids repeats.
    """

    cls: OutcomeClass
    status: int | None = None
    transport: Transport | None = None
    sent: bool = True

    @property
    def retryable(self) -> bool:
        return TRAITS[self.cls].retryable

    @property
    def bad_request(self) -> bool:
        return TRAITS[self.cls].bad_request

    @property
    def unknown_outcome(self) -> bool:
        """Kisi may or may not have acted: sent, but no readable answer came back."""
        return self.cls is OutcomeClass.NETWORK_ERROR and self.sent

    @property
    def terminal(self) -> bool:
        return not self.retryable


def status_class(status: int) -> OutcomeClass:
    """The class of an HTTP status (any 1xx or unknown range is treated as a server fault)."""
    if 200 <= status < 300:
        return OutcomeClass.SUCCESS
    if 300 <= status < 400:
        return OutcomeClass.REDIRECT
    if status == TOO_MANY_REQUESTS:
        return OutcomeClass.RATE_LIMITED
    if 400 <= status < 500:
        return OutcomeClass.CLIENT_ERROR
    # 5xx, and anything outside the ranges HTTP defines: Kisi misbehaved, not the caller.
    return OutcomeClass.SERVER_ERROR


def classify_status(status: int) -> Outcome:
    """Classify an HTTP answer from Kisi."""
    return Outcome(cls=status_class(status), status=status)


def classify_transport(failure: Transport) -> Outcome:
    """Classify an attempt that produced no usable HTTP answer."""
    return Outcome(
        cls=OutcomeClass.NETWORK_ERROR, transport=failure, sent=failure not in NOT_SENT
    )
