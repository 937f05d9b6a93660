"""Peak memory of the api_call path for large Kisi answers (1 MB, 3.9 MB, 30 MB).

``PYTHONPATH=layers/kisi_gateway .venv/bin/python -m bench.answer_memory``

Each size runs in a fresh child process (so ``ru_maxrss``, the process's peak resident set, is
that case's alone): a loopback fake Kisi streams a JSON array of N bytes (with
``Content-Length``, or chunked so the size shows only while reading), and the request goes
through ``http_api.handle`` -> the forwarder (in-memory stores) -> the real Kisi client -> the
proxy response api_call returns. Printed per case: the status the caller got, whether the body
was whole, ``tracemalloc``'s peak of Python allocations during the call, and the growth of
``ru_maxrss`` over the process's peak before the call (both in MB, 10**6 bytes).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000
_PIECE = b"0," * 32_768  # 64 KiB of array elements, sent again and again (never N bytes held)
CASES = (("1 MB", MB, False), ("3.9 MB", 3_900_000, False), ("30 MB", 30 * MB, False),
         ("30 MB chunked", 30 * MB, True))


class _FakeKisi(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/login":
            self._send(json.dumps({"id": 1, "user_id": 1}).encode())
            return
        query = parse_qs(parts.query)
        size, chunked = int(query["bytes"][0]), query.get("chunked") == ["1"]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding" if chunked else "Content-Length",
                         "chunked" if chunked else str(size))
        self.end_headers()
        try:
            for piece in _array_pieces(size):
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
                                 if chunked else piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the gateway stopped reading at its cap

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _array_pieces(size: int) -> Iterator[bytes]:
    """A JSON array of exactly ``size`` bytes (even ``size`` >= 2), in 64 KiB pieces."""
    yield b"["
    left = size - 2
    while left > 0:
        piece = _PIECE[:left]
        if left <= len(_PIECE):
            piece = piece.rstrip(b",") + b"0" * (len(piece) - len(piece.rstrip(b",")))
        yield piece
        left -= len(piece)
    yield b"]"


@contextmanager
def fake_kisi() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKisi)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _event(size: int, chunked: bool) -> dict[str, Any]:
    query = {"bytes": [str(size)], "chunked": ["1" if chunked else "0"]}
    return {"httpMethod": "GET", "path": "/kisi/locks", "headers": {}, "body": None,
            "multiValueQueryStringParameters": query,
            "requestContext": {"path": "/Prod/kisi/locks", "identity": {"apiKeyId": "bench"}}}


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB  # Linux: KiB


def measure(size: int, chunked: bool) -> dict[str, Any]:
    """One request of ``size`` bytes through the api_call path, in this process."""
    from kisi_gateway.config import Settings  # noqa: PLC0415 - after PYTHONPATH is set
    from kisi_gateway.pipeline.http_api import handle  # noqa: PLC0415
    from kisi_gateway.pipeline.kisi_http import KisiClient  # noqa: PLC0415
    from kisi_gateway.pipeline.sending import SystemClock  # noqa: PLC0415
    from kisi_gateway.wiring import build_in_memory  # noqa: PLC0415

    settings = Settings()
    with fake_kisi() as url:
        gateway = build_in_memory(settings, KisiClient(url), SystemClock(),
                                  random.Random(1).random)
        handle(_event(2, False), lambda: gateway.forwarder, settings)  # warm: imports, login
        before = _maxrss_mb()
        tracemalloc.start()
        answer = handle(_event(size, chunked), lambda: gateway.forwarder, settings)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        after = _maxrss_mb()
    body = answer["body"]
    whole = answer["statusCode"] == 200 and len(body) == size and body.endswith("]")
    code = json.loads(body).get("code") if answer["statusCode"] != 200 else None
    return {"status": answer["statusCode"], "code": code, "whole": whole,
            "tracemalloc_peak_mb": round(peak / MB, 1),
            "maxrss_growth_mb": round(after - before, 1), "maxrss_mb": round(after, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("BYTES", "CHUNKED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1] == "1")))
        return 0
    print(f"{'case':<14} {'status':>6} {'code':>7} {'whole':>5} "
          f"{'tracemalloc peak':>17} {'maxrss growth':>14} {'maxrss':>8}")
    for label, size, chunked in CASES:
        done = subprocess.run(  # noqa: S603 - this interpreter, this module
            [sys.executable, "-m", "bench.answer_memory", "--one", str(size),
             "1" if chunked else "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
        )
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{label:<14} {row['status']:>6} {row['code'] or '-':>7} {row['whole']!s:>5} "
              f"{row['tracemalloc_peak_mb']:>14} MB {row['maxrss_growth_mb']:>11} MB "
              f"{row['maxrss_mb']:>5} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
