"""The local API server does not wait forever for a half-sent request.

Raw sockets on 127.0.0.1 against an ApiServer with limits of a fraction of a second; every
wait on the client side is bounded by a generous socket timeout, and no test asserts how long
anything took: each checks what the server did (an answer, a closed connection).
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import pytest

from local.apigw import ApiGateway, ApiServer

LIMIT_S = 0.3  # the server's header and body limits in these tests
CLIENT_WAIT_S = 20.0  # how long a client read may block before the test fails


class NoFunctions:
    """No route exists, so nothing is ever invoked."""

    def invoke(self, function: str, event: object) -> None:
        raise AssertionError("no function should run")


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    lines: list[str] = []
    gateway = ApiGateway([], NoFunctions(), api_keys={}, account_id="123456789012",  # type: ignore[arg-type]
                         log=lines.append, openapi_document=None)
    api = ApiServer(gateway, port=0, header_timeout_s=LIMIT_S, body_timeout_s=LIMIT_S)
    api.start()
    api.lines = lines  # type: ignore[attr-defined]
    yield api
    api.stop()


def connect(server: ApiServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_WAIT_S)
    sock.settimeout(CLIENT_WAIT_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by the timeout)."""
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


@pytest.mark.parametrize(
    ("sent", "what"),
    [
        (b"GET /kisi/locks HT", "half a request line"),
        (b"GET /kisi/locks HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-", "half the headers"),
        (b"POST /kisi/locks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n{\"a\"",
         "part of the body"),
        (b"POST /kisi/locks HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"a\r\n{\"a\"", "part of a chunked body"),
    ],
)
def test_a_half_sent_request_gets_408_and_the_connection_closes(server, sent, what) -> None:
    with connect(server) as sock:
        sock.sendall(sent)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), what
    assert answer.endswith(b'{"message":"Request Timeout"}')
    assert b"Connection: close" in answer


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server) -> None:
    with connect(server) as sock:
        assert read_until_closed(sock) == b""


def test_dripping_bytes_does_not_reset_the_limit(server) -> None:
    """A byte every 50 ms would never trip a per-read timeout of 300 ms; the limit is for the
    whole header block, so the server answers long before the 400 bytes are sent."""
    header = b"GET /kisi/locks HTTP/1.1\r\nX-Slow: " + b"x" * 400
    sent = 0
    with connect(server) as sock:
        try:
            for byte in header:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.05)
                sock.setblocking(False)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # the server has answered
                except BlockingIOError:
                    pass
                finally:
                    sock.settimeout(CLIENT_WAIT_S)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed while we were still sending: also a stop
        answer = read_until_closed(sock)
    assert sent < len(header)
    assert answer.startswith(b"HTTP/1.1 408")


def answer_status(sock: socket.socket) -> int:
    reply = http.client.HTTPResponse(sock)
    reply.begin()
    reply.read()
    return reply.status


def test_complete_requests_are_answered_on_one_kept_connection(server) -> None:
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert answer_status(sock) == 403  # API Gateway's answer to no route
        sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}")
        assert answer_status(sock) == 403


def test_each_408_is_logged_with_its_phase(server) -> None:
    with connect(server) as sock:
        sock.sendall(b"PUT /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
        read_until_closed(sock)
    assert any(line.startswith("body not received within 0.3s -> 408") for line in server.lines)
