"""The Kisi client against real sockets on 127.0.0.1: what each transport failure means."""

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kisi_gateway.core.identity import Credential
from kisi_gateway.core.outcome import Transport
from kisi_gateway.pipeline.kisi_http import KisiCall, KisiClient, Timeouts, TransportFailure

KEY = Credential("KISI-LOGIN", "k1")

RELEASE = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/hang"):
            RELEASE.wait(5)  # bounded; released by the fixture at teardown
        if self.path.startswith("/reset"):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            return
        body = self.headers.get("Authorization", "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    RELEASE.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    RELEASE.set()
    httpd.shutdown()
    httpd.server_close()


def test_answer_round_trip(server: str) -> None:
    result = KisiClient(server).send(KisiCall("GET", "/locks", credential=KEY))
    assert not isinstance(result, TransportFailure)
    assert (result.status, result.body) == (200, b"KISI-LOGIN k1")


def test_read_timeout_means_sent(server: str) -> None:
    kisi = KisiClient(server, timeouts=Timeouts(1.0, 0.05))
    result = kisi.send(KisiCall("GET", "/hang"))
    assert isinstance(result, TransportFailure)
    assert result.kind is Transport.READ_TIMEOUT
    assert result.outcome.unknown_outcome


def test_reset_after_sending_means_sent(server: str) -> None:
    result = KisiClient(server).send(KisiCall("GET", "/reset"))
    assert isinstance(result, TransportFailure)
    assert result.kind is Transport.CONNECTION_RESET
    assert result.outcome.sent


def test_refused_connection_means_not_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = KisiClient(f"http://127.0.0.1:{port}").send(KisiCall("GET", "/x"))
    assert isinstance(result, TransportFailure)
    assert result.kind is Transport.CONNECT_ERROR
    assert not result.outcome.sent
