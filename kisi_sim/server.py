"""The socket layer: a threading HTTP server on loopback that turns bytes into a
:class:`~kisi_sim.responses.SimRequest`, asks the simulator core, and writes its answer."""

from __future__ import annotations

from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from kisi_sim.responses import ERRORS, SimRequest, SimResponse, error_response, kisi_error

__all__ = ["MAX_BODY_BYTES", "STOP_POLL_S", "Service", "SimServer"]

MAX_BODY_BYTES: Final = 1_048_576  # a sane cap; Kisi's is unpublished
STOP_POLL_S: Final = 0.02  # stop() returns within this; tests start and stop many servers


class Service(Protocol):
    """What the server serves: the simulator core (:class:`~kisi_sim.KisiSimulator`)."""

    @property
    def verbose(self) -> bool: ...

    def handle(self, request: SimRequest) -> SimResponse: ...


class SimServer(ThreadingHTTPServer):
    """A threading server that never blocks on close and never prints tracebacks."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # socketserver's default backlog of 5 resets bursts of callers

    def __init__(self, address: tuple[str, int], simulator: Service) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.simulator.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Thin socket layer: bytes in, :meth:`KisiSimulator.handle`, bytes out.

    Every method name is accepted (``__getattr__`` serves any ``do_*``) so that HEAD and
    invented methods reach the core, which answers them 405 like the rest of Kisi's errors.
    """

    protocol_version = "HTTP/1.1"  # keep-alive, as Kisi's load balancer offers
    # Headers and body leave in two writes; with Nagle on, keep-alive calls stall ~40 ms on
    # delayed ACKs, which would make benchmarks measure the simulator instead of the gateway.
    disable_nagle_algorithm = True
    timeout = 60  # idle keep-alive connections are dropped, threads do not pile up
    server: SimServer

    def version_string(self) -> str:
        return "kisi-sim"

    def __getattr__(self, name: str) -> Callable[[], None]:
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _serve(self) -> None:
        request = self._read_request()
        try:
            response = self.server.simulator.handle(request)
        except Exception:  # handle() never raises; this is the last line of defence
            response = kisi_error("internal")
        self._write(response)

    def _read_request(self) -> SimRequest:
        parts = urlsplit(self.path)
        body, problem = self._read_body()
        return SimRequest(
            method=self.command.upper(),
            path=parts.path or "/",
            query=parts.query,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            client=str(self.client_address[0]),
            body_problem=problem,
        )

    def _read_body(self) -> tuple[bytes, str | None]:
        """The body and no problem, or no body and the ERRORS entry that explains why."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return b"", "length_required"
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b"", None
        if not raw_length.strip().isdigit():
            self.close_connection = True
            return b"", "malformed_request"
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return b"", "too_large"
        return self.rfile.read(length), None

    def _write(self, response: SimResponse) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD" and response.body:
                self.wfile.write(response.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a hang did its job)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed request lines and headers get a Kisi-shaped body too, not HTML."""
        self.close_connection = True
        spec = ERRORS["malformed_request"]
        self._write(error_response(code, message or spec.message, spec.code))

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.simulator.verbose:
            super().log_message(format, *args)
