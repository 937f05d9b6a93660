"""What a record keeps of Kisi's answer, and what a caller gets back from it."""

from __future__ import annotations

import json

import pytest

from kisi_gateway.core.errors import GatewayErrorCode
from kisi_gateway.core.lifecycle import Change, Event
from kisi_gateway.core.records import (
    MAX_STORED_ANSWER_BYTES,
    RecordStatus,
    RequestRecord,
    StoredResponse,
)
from kisi_gateway.pipeline.kisi_http import KisiResponse
from kisi_gateway.pipeline.replies import final_reply

HEADERS = {"content-type": "application/json"}  # 28 bytes of names and values


def record(response: StoredResponse) -> RequestRecord:
    return RequestRecord(
        request_id="r1", status=RecordStatus.SUCCEEDED, method="GET", path="/locks",
        route="GET /locks", policy="read", created_at=0.0, deadline=1.0, expires_at=2,
        response=response,
    )


@pytest.mark.parametrize(
    ("body_bytes", "truncated", "kept_body"),
    [
        (100 - 28, False, 72),  # exactly the limit: whole
        (100 - 27, True, 72),  # one byte over: cut to the room left by the headers
        (10_000, True, 72),
    ],
)
def test_a_record_keeps_what_fits_and_says_when_it_cut(
    body_bytes: int, truncated: bool, kept_body: int
) -> None:
    whole = StoredResponse.of(200, HEADERS, b"x" * body_bytes)
    kept = whole.kept(100)
    assert kept.truncated is truncated
    assert len(kept.body) == kept_body
    assert kept.size <= 100
    assert kept.headers == HEADERS


def test_headers_that_alone_outgrow_the_item_are_dropped() -> None:
    kept = StoredResponse.of(200, {"x-huge": "h" * 500}, b"body").kept(100)
    assert kept.truncated
    assert kept.headers == {}
    assert kept.body == b"body"


def test_a_change_carries_the_copy_the_store_keeps() -> None:
    big = StoredResponse.of(200, HEADERS, b"x" * (MAX_STORED_ANSWER_BYTES + 1))
    change = Change(Event.FINISH, state=RecordStatus.SENDING, status=RecordStatus.SUCCEEDED,
                    response=big)
    assert change.response is not None
    assert change.response.truncated
    assert change.response.size <= MAX_STORED_ANSWER_BYTES


def test_an_answer_over_the_cap_is_kept_unread() -> None:
    over = KisiResponse(200, HEADERS, b"", too_large=True).stored()
    assert over == StoredResponse(200, HEADERS, b"", truncated=True)
    whole = KisiResponse(200, HEADERS, b"[1]").stored()
    assert whole == StoredResponse(200, HEADERS, b"[1]", truncated=False)


def same(url: str) -> str:
    return url


def test_a_whole_answer_passes_through() -> None:
    reply = final_reply(record(StoredResponse.of(200, HEADERS, b"[1]")), same)
    assert (reply.status, reply.body) == (200, b"[1]")


@pytest.mark.parametrize("body", [b"", b"[1,2,"], ids=["unread", "cut"])
def test_an_answer_not_held_whole_is_a_502_never_a_short_200(body: bytes) -> None:
    reply = final_reply(record(StoredResponse(200, HEADERS, body, truncated=True)), same)
    assert reply.status == 502
    document = json.loads(reply.body)
    assert set(document) == {"error", "code"}
    assert document["code"] == GatewayErrorCode.ANSWER_TOO_LARGE.value
    assert "Kisi answered 200" in document["error"]
    assert reply.headers["X-Gateway-Request-Id"] == "r1"
