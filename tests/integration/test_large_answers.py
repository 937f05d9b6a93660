"""Large Kisi answers through the whole api_call path (moto as AWS, a loopback fake Kisi).

Kisi's list endpoints can answer large pages. Below the client's cap (4 MB) an answer reaches
the caller whole; above it the caller gets a Kisi-shaped 502, never a shortened 200. A record
keeps an answer whole only when it fits a DynamoDB item, and a repeat of an
``Idempotency-Key`` never replays a cut body as if it were whole.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from kisi_gateway.core.errors import GatewayErrorCode
from kisi_gateway.core.records import MAX_STORED_ANSWER_BYTES
from kisi_gateway.pipeline.kisi_http import MAX_ANSWER_BYTES
from tests.harness import Gateway, gateway

MB = 1_000_000
_PIECE = 64 * 1024


def json_array(size: int) -> bytes:
    """A JSON array of exactly ``size`` bytes (``size`` >= 2), as a list endpoint answers."""
    return b"[" + b"0," * ((size - 2) // 2) + (b"0" if size % 2 else b"") + b"]"


class LargeKisi(BaseHTTPRequestHandler):
    """``GET /locks?bytes=N[&chunked=1]``: a JSON array of N bytes, with a length or chunked
    (no length: the client finds the size only while reading). ``/login`` answers the
    service login, as Kisi does."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        size = int(query.get("bytes", ["2"])[0])
        body = json_array(size)
        chunked = query.get("chunked") == ["1"]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Collection-Range", "0-9/10")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for start in range(0, len(body), _PIECE):
                piece = body[start:start + _PIECE]
                if chunked:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                else:
                    self.wfile.write(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the gateway stopped reading: that is the point

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def large_kisi() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), LargeKisi)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def g(monkeypatch: pytest.MonkeyPatch, large_kisi: str) -> Iterator[Gateway]:
    with gateway(monkeypatch) as gw:
        gw.kisi_url = large_kisi  # read by the Kisi client factory at the first send
        yield gw


def test_sizes_are_what_the_tests_claim() -> None:
    assert len(json_array(MB)) == MB
    assert len(json_array(MB + 1)) == MB + 1
    assert MAX_STORED_ANSWER_BYTES < MB < MAX_ANSWER_BYTES < 30 * MB


@pytest.mark.parametrize("chunked", ["0", "1"], ids=["with-length", "chunked"])
def test_a_1_mb_answer_reaches_the_caller_whole(g: Gateway, chunked: str) -> None:
    reply = g.call("GET", "/locks", query=[("bytes", str(MB)), ("chunked", chunked)])
    assert reply.status == 200
    assert reply.body == json_array(MB)
    assert reply.headers["X-Collection-Range"] == "0-9/10"


@pytest.mark.parametrize("chunked", ["0", "1"], ids=["with-length", "chunked"])
def test_a_30_mb_answer_is_refused_not_cut(g: Gateway, chunked: str) -> None:
    reply = g.call("GET", "/locks", query=[("bytes", str(30 * MB)), ("chunked", chunked)])
    assert reply.status == 502
    assert reply.json()["code"] == GatewayErrorCode.ANSWER_TOO_LARGE.value
    assert "Kisi answered 200" in reply.json()["error"]
    assert reply.headers["Content-Type"] == "application/json"


def test_a_keyed_1_mb_answer_is_whole_once_and_never_replayed_cut(g: Gateway) -> None:
    # Given a first call whose answer is larger than a record keeps
    headers = {"Idempotency-Key": "big-page-1"}
    query = [("bytes", str(MB)), ("chunked", "0")]
    first = g.call("GET", "/locks", query=query, headers=headers)
    assert first.status == 200
    assert first.body == json_array(MB)
    # then the record says its copy is cut, within DynamoDB's item limit
    record = g.record(first.headers["X-Gateway-Request-Id"])
    assert record.response is not None
    assert record.response.truncated
    assert record.response.status == 200
    assert record.response.size <= MAX_STORED_ANSWER_BYTES
    assert record.public()["response"]["truncated"] is True  # type: ignore[index]
    # and a repeat gets a clear error, not the cut body with Kisi's 200
    again = g.call("GET", "/locks", query=query, headers=headers)
    assert again.status == 502
    assert again.json()["code"] == GatewayErrorCode.ANSWER_TOO_LARGE.value
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_keyed_answer_that_fits_an_item_is_replayed_whole(g: Gateway) -> None:
    size = MAX_STORED_ANSWER_BYTES - 1_000  # room for the headers Kisi sent
    headers = {"Idempotency-Key": "page-that-fits"}
    query = [("bytes", str(size))]
    first = g.call("GET", "/locks", query=query, headers=headers)
    again = g.call("GET", "/locks", query=query, headers=headers)
    assert first.status == again.status == 200
    assert again.body == first.body == json_array(size)
    assert again.headers["Idempotent-Replayed"] == "true"
    record = g.record(first.headers["X-Gateway-Request-Id"])
    assert record.response is not None
    assert not record.response.truncated


def test_a_keyed_30_mb_answer_is_refused_and_so_is_its_replay(g: Gateway) -> None:
    headers = {"Idempotency-Key": "huge-page"}
    query = [("bytes", str(30 * MB)), ("chunked", "1")]
    first = g.call("GET", "/locks", query=query, headers=headers)
    again = g.call("GET", "/locks", query=query, headers=headers)
    assert first.status == again.status == 502
    record = g.record(first.headers["X-Gateway-Request-Id"])
    assert record.status.value == "succeeded"  # Kisi answered 200: the request was handled
    assert record.response is not None
    assert record.response.truncated
    assert record.response.body == b""
