"""Run the client drivers (``js/driver.mjs``, ``py_driver.py``) from tests: ops in, reports out.

Each driver runs a list of operations with a real Kisi client library and prints one JSON
line per operation; :func:`run_client` returns those lines as dicts, in order, and fails
loudly when the driver could not run them all (a missing install, a crash, a timeout).
:class:`ClientSession` keeps one client alive across operations (the drivers' ``--session``
mode), so a test can start an outage between setting a client up and using it.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
JS_DRIVER = HERE / "js" / "driver.mjs"
JS_CLIENT = HERE / "js" / "node_modules" / "kisi-client" / "package.json"
PY_DRIVER = HERE / "py_driver.py"
CLIENTS = ("js", "py")
# Bounds of one driver run: each operation, and the whole subprocess (above the driver's own).
OP_TIMEOUT_S = 20
RUN_TIMEOUT_S = 90


class DriverRunError(AssertionError):
    """The driver did not report every operation; the message holds its stderr."""


def driver_command(client: str, base_url: str, api_key: str | None,
                   *, session: bool = False) -> list[str]:
    """The command line that runs ``client``'s driver against ``base_url``."""
    if client == "js":
        node = shutil.which("node")
        if node is None or not JS_CLIENT.exists():
            raise DriverRunError(
                "Kisi's JS client is not installed: run `make clients` "
                "(npm ci --prefix tests/clients/js)")
        command = [node, str(JS_DRIVER), "--op-timeout-ms", str(OP_TIMEOUT_S * 1000),
                   "--total-timeout-ms", str((RUN_TIMEOUT_S - 5) * 1000)]
    elif client == "py":
        command = [sys.executable, str(PY_DRIVER), "--op-timeout-s", str(OP_TIMEOUT_S),
                   "--total-timeout-s", str(RUN_TIMEOUT_S - 5)]
    else:
        raise ValueError(f"unknown client {client!r}: one of {CLIENTS}")
    command += ["--base-url", base_url, "--ops", "-", *(["--session"] if session else [])]
    if api_key is not None:
        command += ["--api-key", api_key]
    return command


def run_client(client: str, base_url: str, ops: Sequence[Mapping[str, Any]],
               api_key: str | None = None) -> list[dict[str, Any]]:
    """Run ``ops`` with ``client`` ("js" or "py"); one report per operation, in order."""
    completed = subprocess.run(  # noqa: S603 -- our own drivers, arguments built above
        driver_command(client, base_url, api_key), input=json.dumps(list(ops)),
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
    )
    reports = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    if completed.returncode != 0 or len(reports) != len(ops):
        raise DriverRunError(
            f"{client} driver exited {completed.returncode} after {len(reports)} of {len(ops)} "
            f"operations\nstdout: {completed.stdout[-2000:]}\nstderr: {completed.stderr[-2000:]}")
    return reports


class ClientSession:
    """One long-lived client (a driver in ``--session`` mode): :meth:`run` one op at a time.

    Use it as a context manager; leaving it ends the driver (stdin closed, then killed by its
    own PID if it does not exit within 10 s).
    """

    def __init__(self, client: str, base_url: str, api_key: str | None = None) -> None:
        self._command = driver_command(client, base_url, api_key, session=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115 -- closed in close()
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> ClientSession:
        self._process = subprocess.Popen(  # noqa: S603 -- our own driver
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, bufsize=1,
        )
        threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True).start()
        return self

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self._lines.put(line)
        self._lines.put(None)  # the driver ended

    def run(self, op: Mapping[str, Any]) -> dict[str, Any]:
        """Send one operation and wait (bounded) for its report."""
        process = self._process
        if process is None or process.stdin is None:
            raise DriverRunError("the session is not running")
        process.stdin.write(json.dumps(dict(op)) + "\n")
        process.stdin.flush()
        try:
            line = self._lines.get(timeout=OP_TIMEOUT_S + 5)
        except queue.Empty:
            line = None
        if line is None:
            self._stderr.seek(0)
            raise DriverRunError(f"no report for {op!r}\nstderr: {self._stderr.read()[-2000:]}")
        report: dict[str, Any] = json.loads(line)
        return report

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._stderr.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
