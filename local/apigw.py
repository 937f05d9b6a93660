"""The local API Gateway: real HTTP in, the exact REST API proxy event to the handler, back out.

:class:`ApiGateway` decides (route, API key, size limit, handler result) and knows nothing of
sockets; :class:`ApiServer` is the ThreadingHTTPServer on 127.0.0.1 that feeds it.
Locally only, ``GET /openapi.yaml`` answers the API description from the repository root,
without an API key (the deployed API does not serve it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.errors
import io
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from local.api_keys import ApiKeyCheck, KeyLookupError, StaticKeys
from local.apigw_event import (
    FORBIDDEN,
    INTERNAL_SERVER_ERROR,
    KEY_CHECK_FAILED,
    MISSING_AUTHENTICATION_TOKEN,
    REQUEST_TOO_LARGE,
    SERVICE_UNAVAILABLE,
    HttpRequest,
    HttpResponse,
    MalformedProxyResponseError,
    gateway_error,
    match_route,
    proxy_event,
    proxy_response,
)
from local.lambda_invoke import FunctionInvoker
from local.stack import ApiRoute

__all__ = [
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_HEADER_TIMEOUT_S",
    "DEFAULT_PORT",
    "MAX_PAYLOAD_BYTES",
    "OPENAPI_DOCUMENT",
    "ApiGateway",
    "ApiServer",
]

DEFAULT_PORT = 3000
# API Gateway's REST API payload quota: 10 MB (requests above it get REQUEST_TOO_LARGE, 413).
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
# How long a client may take to send a request's line and headers, then its body, in total
# (a client dripping a byte at a time must not hold a thread forever). AWS does not document
# API Gateway's own limits; these are the local server's.
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
# How long writing an answer may block on a client that does not read it.
_WRITE_TIMEOUT_S = 30.0
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# The API description, served at GET /openapi.yaml (no API key), read on every request.
OPENAPI_PATH = "/openapi.yaml"
OPENAPI_DOCUMENT = Path(__file__).resolve().parent.parent / "openapi.yaml"


class ApiGateway:
    """Routes a request, checks its API key, invokes the function and shapes the answer.

    ``api_keys`` says which ``x-api-key`` values are accepted and their key ids: a mapping of
    value to id, or a lookup such as :class:`~local.api_keys.UsagePlanKeys`.
    """

    def __init__(
        self,
        routes: Iterable[ApiRoute],
        invoker: FunctionInvoker,
        *,
        api_keys: Mapping[str, str] | ApiKeyCheck,
        account_id: str,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        log: Callable[[str], None] = print,
        openapi_document: Path | None = OPENAPI_DOCUMENT,
        unavailable: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.routes = list(routes)
        self._unavailable = unavailable
        self._openapi_document = openapi_document
        self._invoker = invoker
        self._api_keys = StaticKeys(api_keys) if isinstance(api_keys, Mapping) else api_keys
        self._account_id = account_id
        self._now = now
        self._log = log
        self._stages = {route.stage for route in self.routes}

    def log_line(self, line: str) -> None:
        """One console line (for answers the server gives before routing)."""
        self._log(line)

    def handle(
        self, request: HttpRequest, domain_name: str, too_large: bool = False
    ) -> HttpResponse:
        """Answer one request; ``too_large`` when the server refused to read a huge body."""
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        reason = self._unavailable()
        if reason:
            response, note = gateway_error(SERVICE_UNAVAILABLE, request_id), reason
        elif too_large or len(request.body) > MAX_PAYLOAD_BYTES:
            response, note = gateway_error(REQUEST_TOO_LARGE, request_id), "payload over 10 MB"
        else:
            response, note = self._answer(request, request_id, domain_name)
        elapsed_ms = (time.monotonic() - started) * 1000
        suffix = f" [{note}]" if note else ""
        self._log(
            f"{request.method} {request.path} -> {response.status} ({elapsed_ms:.0f} ms){suffix}"
        )
        return response

    def _find(self, request: HttpRequest) -> tuple[ApiRoute, dict[str, str], str] | None:
        found = match_route(self.routes, request.method, request.path)
        if found is not None:
            return found[0], found[1], request.path
        # Also accept the deployed URL shape, /<stage>/<path>.
        stage, _, rest = request.path.lstrip("/").partition("/")
        if stage in self._stages:
            path = "/" + rest
            stage_routes = [route for route in self.routes if route.stage == stage]
            found = match_route(stage_routes, request.method, path)
            if found is not None:
                return found[0], found[1], path
        return None

    def _description(self, request_id: str) -> HttpResponse | None:
        """The API description file, or ``None`` when there is none to serve."""
        if self._openapi_document is None:
            return None
        try:
            body = self._openapi_document.read_bytes()
        except OSError:
            return None
        headers = [("Content-Type", "application/yaml"), ("x-amzn-RequestId", request_id)]
        return HttpResponse(200, headers, body)

    def _answer(
        self, request: HttpRequest, request_id: str, domain_name: str
    ) -> tuple[HttpResponse, str]:
        if request.method == "GET" and request.path == OPENAPI_PATH:
            description = self._description(request_id)
            if description is not None:
                return description, "API description"
        found = self._find(request)
        if found is None:
            return gateway_error(MISSING_AUTHENTICATION_TOKEN, request_id), "no such route"
        route, params, path = found
        presented = next((v for k, v in request.headers if k.lower() == "x-api-key"), None)
        key_id = None
        if route.api_key_required:
            try:
                key_id = self._api_keys.key_id(presented) if presented is not None else None
            except KeyLookupError as error:
                return gateway_error(KEY_CHECK_FAILED, request_id), f"x-api-key unchecked: {error}"
            if key_id is None:
                return gateway_error(FORBIDDEN, request_id), "missing, wrong or disabled x-api-key"
        routed = dataclasses.replace(request, path=path)
        event = proxy_event(
            routed,
            route,
            params,
            account_id=self._account_id,
            api_key=presented if route.api_key_required else None,
            api_key_id=key_id if route.api_key_required else None,
            request_id=request_id,
            now=self._now(),
            domain_name=domain_name,
        )
        invocation = self._invoker.invoke(route.function, event)
        if not invocation.ok:
            return gateway_error(
                INTERNAL_SERVER_ERROR, request_id
            ), f"{route.function}: {invocation.error}"
        try:
            return proxy_response(invocation.result, request_id), ""
        except MalformedProxyResponseError as error:
            return gateway_error(
                INTERNAL_SERVER_ERROR, request_id
            ), f"malformed proxy response: {error}"


_TARGET_BYTES = frozenset(range(0x21, 0x7F))  # visible ASCII: what a request target may hold
# What the email parser behind http.server notes when a header line was cut short; other
# defects (about multipart bodies, say) are not about framing.
_FRAMING_DEFECTS = (
    email.errors.MissingHeaderBodySeparatorDefect,
    email.errors.FirstHeaderLineIsContinuationDefect,
)


def _malformed(
    raw_requestline: bytes, target: str, headers: Any, header_lines: list[bytes]
) -> str:
    """Why a request must be refused before routing, or ``""``."""
    parts = raw_requestline.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3:
        return "request line is not METHOD SP target SP version"
    if any(byte not in _TARGET_BYTES for byte in parts[1]) or parts[1].decode("latin-1") != target:
        return "request target has bytes outside visible ASCII"
    if any(b"\r" in line.rstrip(b"\r\n") for line in header_lines):
        return "a bare CR in the header block"
    if any(isinstance(d, _FRAMING_DEFECTS) for d in getattr(headers, "defects", ())):
        return "malformed header block (a bare CR or LF ended it early)"
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            return "CR or LF inside a header (a folded or split header line)"
    return ""


class _LineRecorder:
    """Wraps the request stream while headers are parsed, keeping the raw lines read."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.lines: list[bytes] = []

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self.stream.readline(limit)
        self.lines.append(line)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _read_chunked(stream: Any, limit: int) -> bytes:
    body = bytearray()
    while True:
        size = int(stream.readline().split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            stream.readline()
            return bytes(body)
        body += stream.read(size)
        stream.readline()
        if len(body) > limit:
            return bytes(body)


def _discard(stream: Any, length: int) -> None:
    while length > 0:
        chunk = stream.read(min(length, 1 << 16))
        if not chunk:
            return
        length -= len(chunk)


class _DeadlineReader(io.RawIOBase):
    """The request socket, read against one deadline per phase (headers, then body).

    A per-read socket timeout alone would let a client drip a byte every few seconds forever;
    this sets the socket's timeout to what is left of the phase before every read.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._deadline: float | None = None
        self.phase = ""
        self.limit_s = 0.0
        self.received = 0
        self.timed_out = False

    def begin(self, phase: str, limit_s: float) -> None:
        """Start a phase that must be read within ``limit_s`` seconds from now."""
        self.phase, self.limit_s = phase, limit_s
        self._deadline = time.monotonic() + limit_s
        self.received = 0
        self.timed_out = False

    def end(self) -> None:
        """The request is read: no deadline until the next one begins."""
        self._deadline = None
        self.phase = ""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                self.timed_out = True
                raise TimeoutError(f"{self.phase} not received within {self.limit_s:g}s")
            self._sock.settimeout(remaining)
        try:
            count = self._sock.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            raise
        finally:
            self._sock.settimeout(_WRITE_TIMEOUT_S)  # answers are written with this one
        self.received += count
        return count


_REQUEST_TIMEOUT_BODY = b'{"message":"Request Timeout"}'


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of callers would see resets.
    request_queue_size = 128


class ApiServer:
    """A ThreadingHTTPServer on ``host:port`` (port 0: any free port) serving an ApiGateway."""

    def __init__(
        self,
        gateway: ApiGateway,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    ) -> None:
        self.gateway = gateway
        handler = self._handler_class(gateway, header_timeout_s, body_timeout_s)
        self._host = host
        self._server = _Server((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="local-apigw", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    @staticmethod
    def _handler_class(
        gateway: ApiGateway, header_timeout_s: float, body_timeout_s: float
    ) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            _reader: _DeadlineReader

            def log_message(self, format: str, *args: Any) -> None:
                """The gateway logs one line per request itself."""

            def setup(self) -> None:
                super().setup()
                self.rfile.close()
                self._reader = _DeadlineReader(self.connection)
                self.rfile = io.BufferedReader(self._reader)

            def handle_one_request(self) -> None:
                """One request, its line and headers, then its body, each within its limit.

                http.server drops a connection whose read timed out without a word; a client
                that sent part of a request gets a 408 first. An idle keep-alive connection
                (nothing sent) is just closed.
                """
                self._reader.begin("request line and headers", header_timeout_s)
                super().handle_one_request()
                reader = self._reader
                if not reader.timed_out:
                    return
                self.close_connection = True
                if reader.phase != "body" and reader.received == 0:
                    return
                with contextlib.suppress(OSError):  # the client may be gone already
                    self.wfile.write(
                        b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                        % (len(_REQUEST_TIMEOUT_BODY), _REQUEST_TIMEOUT_BODY)
                    )
                gateway.log_line(
                    f"{reader.phase} not received within {reader.limit_s:g}s -> 408 "
                    "(connection closed)"
                )

            def parse_request(self) -> bool:
                """http.server's parser, plus the strictness of a real front door.

                http.server splits the request line on any Unicode whitespace and lets a
                bare CR or LF end the header block early; RFC 9112 wants a 400 for both,
                as the front of a deployed API answers, before any routing.
                """
                recorder = _LineRecorder(self.rfile)
                self.rfile = recorder  # type: ignore[assignment]
                try:
                    parsed = super().parse_request()
                finally:
                    self.rfile = recorder.stream
                if not parsed:
                    return False
                problem = _malformed(
                    self.raw_requestline, self.path, self.headers, recorder.lines
                )
                if problem:
                    self._bad_framing(problem)
                    return False
                self._reader.begin("body", body_timeout_s)
                return True

            def _bad_framing(self, why: str) -> None:
                self.close_connection = True
                self.send_error(400, "Bad Request", why)
                gateway.log_line(f"{self.command} {self.path[:80]!r} -> 400 ({why})")

            def __getattr__(self, name: str) -> Any:
                # Any other method token: answered as API Gateway answers a method the API
                # does not route, rather than with http.server's 501.
                if name.startswith("do_"):
                    return self._unrouted_method
                raise AttributeError(name)

            def _unrouted_method(self) -> None:
                response = gateway_error(MISSING_AUTHENTICATION_TOKEN, str(uuid.uuid4()))
                self.close_connection = True
                self.send_response(response.status)
                for name, value in response.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)
                gateway.log_line(f"{self.command} {self.path[:80]!r} -> {response.status}")

            def _serve(self) -> None:
                raw_path, _, query = self.path.partition("?")
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    if length < 0:
                        raise ValueError(length)
                except ValueError:
                    self._bad_framing("invalid Content-Length")
                    return
                too_large = length > MAX_PAYLOAD_BYTES
                if too_large:
                    # Drain without keeping it (so the client sees the answer), then hang up.
                    body = b""
                    _discard(self.rfile, length)
                    self.close_connection = True
                elif "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    try:
                        body = _read_chunked(self.rfile, MAX_PAYLOAD_BYTES)
                    except ValueError:
                        self._bad_framing("invalid chunk size")
                        return
                else:
                    body = self.rfile.read(length) if length else b""
                if len(body) < length and not too_large:
                    # The client closed its side early: nothing to answer.
                    self.close_connection = True
                    return
                self._reader.end()
                request = HttpRequest(
                    method=self.command,
                    path=raw_path or "/",
                    query=query,
                    headers=list(self.headers.items()),
                    body=body,
                    source_ip=self.client_address[0],
                    local_port=int(self.connection.getsockname()[1]),
                )
                host = self.headers.get("Host") or "127.0.0.1"
                response = gateway.handle(request, host, too_large=too_large)
                self.send_response(response.status)
                for name, value in response.headers:
                    self.send_header(name, value)
                payload = b"" if self.command == "HEAD" else response.body
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(payload)

        for method in _METHODS:
            setattr(Handler, f"do_{method}", Handler._serve)
        return Handler
