"""Kisi's Python client from PyPI (``Kisi==1.4``, pinned in requirements/clients.txt) used as
an integrator's code uses it, pointed at the gateway.

The package hard-codes ``https://api.kisi.io`` in every action class and calls
``GET /organizations`` from ``Connect.__init__``, so "changing only the base URL" takes what an
integrator would have to do too: a ``Connect`` subclass whose ``_authenticate`` moves the base
URL first, then each action's ``base_url`` rebased. The ``x-api-key`` header goes into the
headers dict each action sends (``CameraAction`` builds its headers per call and cannot carry
it). Nothing else of the client is changed.

Reads a JSON list of operations and prints one JSON line per operation::

    python tests/clients/py_driver.py --base-url http://127.0.0.1:3000/kisi \\
        --api-key local-dev-key --ops ops.json          (or --ops - to read stdin)

With ``--session`` it reads one JSON operation per stdin line instead and answers each as it
comes, so a test can change the world between two calls of one long-lived client.

Each line: ``{"index", "op", "ok", "result" | "error", "printed", "logged", "wire",
"elapsed_ms"}``. The client reports failures by printing or logging and returning ``None``,
so ``printed`` (its stdout) and ``logged`` (its log records) are part of what the caller
sees. ``wire`` lists the HTTP exchanges of the operation (status, a few headers, the timeout
the client asked for), observed by a pass-through wrapper around ``HTTPAdapter.send``.
Values of ``secret`` fields are replaced by their fingerprint (``sha256:`` + 12 hex digits).

Bounds: ``--op-timeout-s`` per operation [20] and ``--total-timeout-s`` for the run [120]; past
either the driver reports and exits 3 (the client's lock calls have no timeout of their own).
Environment fallbacks: ``KISI_BASE_URL_UNDER_TEST``, ``GATEWAY_API_KEY``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kisi
import requests
from requests.adapters import HTTPAdapter

KISI_ORIGIN = "https://api.kisi.io"
WIRE_HEADERS = ("Content-Type", "Retry-After", "Location", "X-Collection-Range",
                "X-Gateway-Request-Id", "X-Gateway-Attempts", "Deprecation", "Sunset")
SINGULAR = {"locks": "lock", "groups": "group", "users": "user"}
OUT = sys.stdout  # the library prints to sys.stdout, which is captured per operation


def fingerprint(secret: str) -> str:
    """The simulator's ``key_fingerprint``: what the output shows instead of a secret."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def redact(value: Any) -> Any:
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, dict):
        return {key: fingerprint(inner) if key == "secret" and isinstance(inner, str)
                else redact(inner) for key, inner in value.items()}
    return value


class WireLog:
    """Every HTTP exchange the client makes, seen from the transport and left unchanged."""

    def __init__(self) -> None:
        self.exchanges: list[dict[str, Any]] = []

    def install(self) -> None:
        original = HTTPAdapter.send
        log = self

        def observed(adapter: HTTPAdapter, request: Any, **kwargs: Any) -> requests.Response:
            try:
                response = original(adapter, request, **kwargs)
            except Exception as error:
                log.exchanges.append({"method": request.method, "error": type(error).__name__,
                                      "timeout": _timeout(kwargs.get("timeout"))})
                raise
            log.exchanges.append({
                "method": request.method,
                "status": response.status_code,
                "headers": {h: response.headers[h] for h in WIRE_HEADERS if h in response.headers},
                "timeout": _timeout(kwargs.get("timeout")),
            })
            return response

        HTTPAdapter.send = observed  # type: ignore[method-assign]


def _timeout(value: Any) -> Any:
    """requests passes (connect, read), a number or None: JSON-friendly as it came."""
    return list(value) if isinstance(value, tuple) else value


class LogCapture(logging.Handler):
    """The client's log records (``kisi.kisi`` logs errors instead of raising them)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.levelname}: {record.getMessage()}")


class Integrator:
    """What an integrator's code holds: a ``kisi.Connect`` pointed at the gateway."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.extra_headers: dict[str, str] = {} if api_key is None else {"x-api-key": api_key}
        self.client: Any = None

    def connect(self, secret: str | None) -> None:
        """``kisi.Connect(secret)`` moved onto the gateway; it probes ``GET /organizations``."""
        base_url, extra = self.base_url, self.extra_headers

        class GatewayConnect(kisi.Connect):  # type: ignore[misc]
            def _authenticate(self) -> None:
                self.base_url = base_url
                self.headers.update(extra)
                super()._authenticate()

        self.client = None
        client = GatewayConnect(secret)
        for action in (client.group, client.calendar, client.camera, client.lock, client.user):
            action.base_url = action.base_url.replace(KISI_ORIGIN, base_url, 1)
        self.client = client
        self._apply_headers()

    def set_header(self, name: str, value: str | None) -> None:
        if value is None:
            self.extra_headers.pop(name, None)
        else:
            self.extra_headers[name] = value
        self._apply_headers()

    def _apply_headers(self) -> None:
        if self.client is None:
            return
        for holder in (self.client, self.client.group, self.client.calendar, self.client.lock,
                       self.client.user):
            for name in [n for n in holder.headers if n not in _CLIENT_HEADERS]:
                del holder.headers[name]
            holder.headers.update(self.extra_headers)

    def action(self, resource: str) -> Any:
        if self.client is None:
            raise DriverError("no client yet: send set_key first (Kisi==1.4 needs a key)")
        found = {"locks": self.client.lock, "groups": self.client.group,
                 "users": self.client.user}.get(resource)
        if found is None:
            raise DriverError(f"Kisi==1.4 has no actions for {resource!r}")
        return found


_CLIENT_HEADERS = frozenset({"Accept", "Authorization", "Content-Type"})


class DriverError(Exception):
    """An operation this client cannot express."""


def _attrs(op: Mapping[str, Any]) -> dict[str, Any]:
    """The inside of a Kisi-shaped body (``{"lock": {...}}``): the client takes keywords."""
    body = op.get("body") or {}
    inner = body.get(SINGULAR.get(op["resource"], ""), {}) if isinstance(body, dict) else {}
    return dict(inner) if isinstance(inner, dict) else {}


def _list(driver: Integrator, op: Mapping[str, Any]) -> Any:
    method = {"locks": "fetch_locks", "groups": "fetch_groups", "users": "fetch_users"}
    action = driver.action(op["resource"])
    return getattr(action, method[op["resource"]])(**(op.get("query") or {}))


def _fetch(driver: Integrator, op: Mapping[str, Any]) -> Any:
    resource = op["resource"]
    return getattr(driver.action(resource), f"fetch_{SINGULAR[resource]}")(op["id"])


def _create(driver: Integrator, op: Mapping[str, Any]) -> Any:
    resource = op["resource"]
    return getattr(driver.action(resource), f"create_{SINGULAR[resource]}")(**_attrs(op))


def _update(driver: Integrator, op: Mapping[str, Any]) -> Any:
    resource = op["resource"]
    return getattr(driver.action(resource), f"update_{SINGULAR[resource]}")(
        op["id"], **_attrs(op))


def _delete(driver: Integrator, op: Mapping[str, Any]) -> Any:
    resource = op["resource"]
    return getattr(driver.action(resource), f"delete_{SINGULAR[resource]}")(op["id"])


def _unlock(driver: Integrator, op: Mapping[str, Any]) -> Any:
    return driver.action("locks").unlock_lock(
        op["id"], op.get("latitude", 0.0), op.get("longitude", 0.0))


def _call(driver: Integrator, op: Mapping[str, Any]) -> Any:
    """Any public method of one of the client's actions, e.g. ``calendar.fetch_summary``."""
    if driver.client is None:
        raise DriverError("no client yet: send set_key first (Kisi==1.4 needs a key)")
    action, method = str(op["action"]), str(op["method"])
    if action.startswith("_") or method.startswith("_"):
        raise DriverError("only public methods")
    return getattr(getattr(driver.client, action), method)(**(op.get("kwargs") or {}))


def _set_key(driver: Integrator, op: Mapping[str, Any]) -> None:
    driver.connect(op.get("secret"))


def _set_header(driver: Integrator, op: Mapping[str, Any]) -> None:
    driver.set_header(op["name"], op.get("value"))


def _unsupported(what: str) -> Callable[[Integrator, Mapping[str, Any]], Any]:
    def run(driver: Integrator, op: Mapping[str, Any]) -> Any:
        raise DriverError(f"Kisi==1.4 has no {what}")
    return run


OPERATIONS: dict[str, Callable[[Integrator, Mapping[str, Any]], Any]] = {
    "set_key": _set_key,
    "set_header": _set_header,
    "list": _list,
    "fetch": _fetch,
    "create": _create,
    "update": _update,
    "delete": _delete,
    "unlock": _unlock,
    "call": _call,
    "sign_in": _unsupported("sign-in (POST /logins)"),
    "sign_out": _unsupported("sign-out (DELETE /login)"),
    "get": _unsupported("raw GET: use list with a query"),
}


def run_one(driver: Integrator, op: Mapping[str, Any], wire: WireLog, logs: LogCapture,
            timeout_s: float) -> tuple[dict[str, Any], bool]:
    """One operation in a worker thread; returns its report and whether it finished in time."""
    report: dict[str, Any] = {}
    printed = io.StringIO()
    wire.exchanges, logs.records = [], []

    def work() -> None:
        try:
            with contextlib.redirect_stdout(printed):
                result = OPERATIONS[op["op"]](driver, op)
            report.update(ok=True, result=redact(result))
        except Exception as error:
            report.update(ok=False, error={"class": type(error).__name__, "message": str(error)})

    if op.get("op") not in OPERATIONS:
        report.update(ok=False, error={"class": "DriverError",
                                       "message": f"unknown operation {op.get('op')!r}"})
        return report, True
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout_s)
    finished = not worker.is_alive()
    if not finished:
        report.update(ok=False, error={"class": "DriverTimeout",
                                       "message": f"operation exceeded {timeout_s} s"})
    report.update(printed=printed.getvalue(), logged=list(logs.records),
                  wire=list(wire.exchanges))
    return report, finished


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("KISI_BASE_URL_UNDER_TEST"))
    parser.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY"))
    parser.add_argument("--ops", default="-")
    parser.add_argument("--session", action="store_true",
                        help="read one JSON operation per stdin line and answer each at once")
    parser.add_argument("--op-timeout-s", type=float, default=20.0)
    parser.add_argument("--total-timeout-s", type=float, default=120.0)
    args = parser.parse_args(argv)
    if not args.base_url:
        parser.error("--base-url (or KISI_BASE_URL_UNDER_TEST) is required")
    ops: Iterable[Any]
    if args.session:
        ops = (json.loads(line) for line in sys.stdin if line.strip())
    elif args.ops == "-":
        ops = json.load(sys.stdin)
    else:
        with open(args.ops, encoding="utf-8") as source:
            ops = json.load(source)
    if not isinstance(ops, list) and not args.session:
        parser.error("the operations must be a JSON list")
    wire, logs = WireLog(), LogCapture()
    wire.install()
    logging.getLogger("kisi").addHandler(logs)
    driver = Integrator(args.base_url, args.api_key)
    ends = time.monotonic() + args.total_timeout_s
    for index, op in enumerate(ops):
        started = time.monotonic()
        budget = min(args.op_timeout_s, ends - started)
        name = op.get("op") if isinstance(op, dict) else None
        report, finished = run_one(driver, op if isinstance(op, dict) else {}, wire, logs,
                                   max(budget, 0.0))
        line = {"index": index, "op": name, **report,
                "elapsed_ms": round((time.monotonic() - started) * 1000)}
        print(json.dumps(line), file=OUT, flush=True)
        if not finished:
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
