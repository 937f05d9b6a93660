"""moto in server mode, the embedded AWS of the local stack.

Two ways to run it: :class:`MotoProcess` starts moto as a child process (what ``make run``
uses: ``python -m local.durable_moto``, which keeps moto's state in a directory so it
survives a crash of moto and a restart of ``make run``; it is stopped and restarted by its own
PID only), and :class:`MotoThread` runs ``moto.server.ThreadedMotoServer`` inside this
process (what the tests use: no process to leak). Both answer on 127.0.0.1 only.

:class:`ProvisionMarker` tells whether the embedded AWS still holds what was provisioned:
moto keeps everything in memory, so a restart or a ``/moto-api/reset`` empties it silently.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import boto3
from moto.server import ThreadedMotoServer

__all__ = [
    "DEFAULT_PORT",
    "LOCAL_ACCOUNT_ID",
    "LOCAL_REGION",
    "MotoProcess",
    "MotoServerError",
    "MotoThread",
    "ProvisionMarker",
    "aws_client",
    "free_port",
    "wait_until_ready",
]

DEFAULT_PORT = 5000
LOCAL_REGION = "us-east-1"
# moto's default account; CloudFormation's ${AWS::AccountId} resolves to it locally.
LOCAL_ACCOUNT_ID = "123456789012"
HOST = "127.0.0.1"


class MotoServerError(RuntimeError):
    """moto did not start, or stopped answering."""


class EmbeddedAws(Protocol):
    """What the runtime needs from either way of running moto."""

    @property
    def endpoint_url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read, release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def aws_client(service: str, endpoint_url: str) -> Any:
    """A boto3 client for the embedded AWS, with dummy credentials that never leave loopback."""
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url,
        region_name=LOCAL_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto accepts any credentials
    )


def _answers(endpoint_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint_url}/moto-api/data.json", timeout=1) as reply:  # noqa: S310
            return int(reply.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(
    endpoint_url: str,
    timeout_s: float = 15.0,
    alive: Callable[[], bool] = lambda: True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll moto's own API until it answers; fail after ``timeout_s`` or once ``alive`` is false."""
    deadline = clock() + timeout_s
    while clock() < deadline:
        if _answers(endpoint_url):
            return
        if not alive():
            raise MotoServerError(f"moto exited before answering on {endpoint_url}")
        sleep(0.1)
    raise MotoServerError(f"moto did not answer on {endpoint_url} within {timeout_s:.0f}s")


ROOT = Path(__file__).resolve().parent.parent


class MotoProcess:
    """moto in a child process: ``python -m local.durable_moto`` with a state directory, or
    plain ``python -m moto.server`` (memory only) without one."""

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        python: str = sys.executable,
        state_dir: Path | None = None,
        parent_pid: int | None = None,
    ) -> None:
        self.port = port
        self.state_dir = state_dir
        # The process whose end stops a durable moto (this one unless told otherwise).
        self.parent_pid = os.getpid() if parent_pid is None else parent_pid
        self._python = python
        self._process: subprocess.Popen[bytes] | None = None
        self._last: subprocess.Popen[bytes] | None = None  # the last one started

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The PID of the moto last started (also once it has exited)."""
        return self._last.pid if self._last else None

    def alive(self) -> bool:
        """True while our child runs (a crash or a ``kill -9`` makes it False)."""
        return self._process is not None and self._process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """How the moto last started ended (negative: killed by that signal); None if it runs."""
        return self._last.poll() if self._last is not None else None

    def _argv(self) -> list[str]:
        if self.state_dir is None:
            return [self._python, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]
        # --parent-pid: a kill -9 of make run then still stops moto, which saves its state,
        # instead of leaving it holding the port and the state directory.
        return [self._python, "-m", "local.durable_moto", "-H", HOST, "-p", str(self.port),
                "--state-dir", str(self.state_dir), "--parent-pid", str(self.parent_pid)]

    def start(self, timeout_s: float = 30.0) -> None:
        """Start moto and return once it answers; fail if the port is taken or moto dies."""
        if self._process is not None:
            return
        if _answers(self.endpoint_url):
            raise MotoServerError(
                f"something already answers on {self.endpoint_url}; set MOTO_PORT to a free port"
            )
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        # The durable launcher prints a line or two (what it restored, what it saved) to our
        # console; plain moto.server would log every request, so it stays quiet.
        output = None if self.state_dir is not None else subprocess.DEVNULL
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            self._argv(),
            cwd=ROOT,
            stdout=output,
            stderr=output,
            # Its own session: a Ctrl-C in the terminal reaches make run, which stops its
            # emulators first and then this process by PID, instead of moto dying first.
            start_new_session=True,
            env=env,
        )
        process = self._last = self._process
        try:
            wait_until_ready(self.endpoint_url, timeout_s, alive=lambda: process.poll() is None)
        except MotoServerError:
            self.stop()
            raise

    def wait(self, timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for the moto last started to exit; its exit code, or None
        if it still runs."""
        if self._last is None:
            return None
        try:
            return self._last.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def restart(self, timeout_s: float = 30.0) -> None:
        """Start moto again after it died (it restores its state directory, if it has one)."""
        self.stop()
        self.start(timeout_s)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Terminate our own child (by its PID, never by name); kill it if it lingers.

        The durable launcher writes its last snapshot on SIGTERM, hence the longer wait.
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)


class MotoThread:
    """moto's ``ThreadedMotoServer`` in this process, on a free loopback port by default."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._server = ThreadedMotoServer(ip_address=HOST, port=self.port, verbose=False)
        self._running = False

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        if self._running:
            return
        # werkzeug logs one line per request to stderr; the runtime prints its own lines.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        self._running = True
        wait_until_ready(self.endpoint_url, timeout_s)

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._server.stop()

    def reset(self) -> None:
        """Empty every moto backend, as a restart of the embedded AWS would."""
        # Our own http:// endpoint on loopback, never a user-supplied scheme.
        url = f"{self.endpoint_url}/moto-api/reset"
        request = urllib.request.Request(url, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            pass


class ProvisionMarker:
    """A sentinel parameter in the embedded AWS, written last by provisioning.

    If it is gone, moto was restarted or reset and the stack must be provisioned again.
    """

    def __init__(self, endpoint_url: str, stack_name: str) -> None:
        self._ssm = aws_client("ssm", endpoint_url)
        self.name = f"/local-runtime/{stack_name}/provisioned"
        self.token: str | None = None

    def mark(self) -> str:
        """Write a fresh token and remember it."""
        token = uuid.uuid4().hex
        self._ssm.put_parameter(Name=self.name, Value=token, Type="String", Overwrite=True)
        self.token = token
        return token

    def is_present(self) -> bool:
        """True when the token we wrote is still there (an error counts as "not there")."""
        try:
            value = self._ssm.get_parameter(Name=self.name)["Parameter"]["Value"]
        except Exception:  # moto unreachable or parameter missing: both mean "gone"
            return False
        return self.token is not None and value == self.token
