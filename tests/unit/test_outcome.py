"""The classification table: each status range and transport failure lands in one class."""

import pytest

from kisi_gateway.core.outcome import (
    TRAITS,
    OutcomeClass,
    Transport,
    classify_status,
    classify_transport,
)

C = OutcomeClass


@pytest.mark.parametrize(
    ("status", "cls", "retryable", "bad"),
    [
        (200, C.SUCCESS, False, False),
        (204, C.SUCCESS, False, False),
        (299, C.SUCCESS, False, False),
        (301, C.REDIRECT, False, False),
        (304, C.REDIRECT, False, False),
        (400, C.CLIENT_ERROR, False, True),
        (401, C.CLIENT_ERROR, False, True),
        (403, C.CLIENT_ERROR, False, True),
        (404, C.CLIENT_ERROR, False, True),
        (409, C.CLIENT_ERROR, False, True),
        (422, C.CLIENT_ERROR, False, True),
        (429, C.RATE_LIMITED, True, True),
        (500, C.SERVER_ERROR, True, False),
        (501, C.SERVER_ERROR, True, False),
        (503, C.SERVER_ERROR, True, False),
        (599, C.SERVER_ERROR, True, False),
        (100, C.SERVER_ERROR, True, False),  # not a final answer from Kisi: its fault
    ],
)
def test_status_table(status: int, cls: OutcomeClass, retryable: bool, bad: bool) -> None:
    outcome = classify_status(status)
    assert (outcome.cls, outcome.retryable, outcome.bad_request) == (cls, retryable, bad)
    assert outcome.status == status
    assert not outcome.unknown_outcome


@pytest.mark.parametrize(
    ("failure", "sent"),
    [
        (Transport.CONNECT_ERROR, False),
        (Transport.CONNECT_TIMEOUT, False),
        (Transport.READ_TIMEOUT, True),
        (Transport.CONNECTION_RESET, True),
        (Transport.INVALID_RESPONSE, True),
    ],
)
def test_transport_failures_are_retryable_network_errors(failure: Transport, sent: bool) -> None:
    outcome = classify_transport(failure)
    assert outcome.cls is C.NETWORK_ERROR
    assert outcome.retryable
    assert not outcome.bad_request
    assert outcome.sent is sent
    assert outcome.unknown_outcome is sent
    assert outcome.status is None


def test_every_class_has_traits() -> None:
    assert set(TRAITS) == set(OutcomeClass)
    assert {c for c, t in TRAITS.items() if t.bad_request} == {C.CLIENT_ERROR, C.RATE_LIMITED}
    assert {c for c, t in TRAITS.items() if t.retryable} == {
        C.RATE_LIMITED,
        C.SERVER_ERROR,
        C.NETWORK_ERROR,
    }
