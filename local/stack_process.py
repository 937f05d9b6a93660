"""``make run`` in a subprocess, for tests, the demo and the soak: start, wait, stop by PID.

``python -m local`` runs moto, the Kisi simulator and the gateway on free ports of
127.0.0.1. :class:`StackProcess` waits for its ready line and stops it with SIGINT (as
Ctrl-C would), killing it only if it does not stop in time. Clients talk to it over HTTP:
the gateway as a caller, the simulator through its admin API, moto through boto3.

Its state lives in ``state_dir`` (by default a ``state`` directory next to the log, so every
StackProcess starts empty); :meth:`StackProcess.restart` stops and starts it again on the
same state, and :meth:`StackProcess.moto_pid` names moto's process, for durability tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from local.moto_server import aws_client, free_port

ROOT = Path(__file__).resolve().parent.parent
STACK_NAME = "kisi-gateway"  # what local/__main__.py provisions
READY_LINE = "kisi-gateway ready on"
# What make run prints when it starts moto, and when the watchdog starts it again.
_MOTO_PID = re.compile(r"^moto: .*\(pid (\d+)\)", re.MULTILINE)


@dataclass
class SimAdmin:
    """The simulator's admin API, with the method names of ``KisiSimulator``."""

    url: str

    def update_faults(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        response = requests.put(f"{self.url}/__admin/faults", json=dict(changes), timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def stats(self) -> dict[str, Any]:
        return dict(requests.get(f"{self.url}/__admin/stats", timeout=10).json())

    def calls(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        """Requests Kisi acted on (as ``KisiSimulator.calls``)."""
        return [
            entry for entry in self.stats()["requests"]
            if entry["processed"]
            and (method is None or entry["method"] == method)
            and (path is None or path in (entry["path"], entry["route"]))
        ]


@dataclass
class StackProcess:
    """A running ``python -m local`` and how to reach its parts."""

    log_path: Path
    api_key: str = "local-dev-key"
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 90.0
    state_dir: Path | None = None
    url: str = ""
    sim: SimAdmin = field(init=False)
    endpoint_url: str = ""
    _process: subprocess.Popen[bytes] | None = None
    _log_start: int = 0  # where the current run's lines begin in the log

    def start(self, *, keep_log: bool = False) -> StackProcess:
        """Start ``python -m local`` and wait for its ready line; ``keep_log`` appends."""
        ports = {name: free_port() for name in ("GATEWAY_PORT", "MOTO_PORT", "KISI_SIM_PORT")}
        inherited = {k: v for k, v in os.environ.items() if k not in ("FRESH", "LOCAL_STATE_DIR")}
        env = {**inherited, **self.env, **{k: str(v) for k, v in ports.items()}}
        env["GATEWAY_API_KEY"] = self.api_key
        env.pop("KISI_BASE_URL", None)
        env.pop("KISI_API_KEY", None)
        if self.state_dir is None:
            self.state_dir = self.log_path.parent / "state"
        env["LOCAL_STATE_DIR"] = str(self.state_dir)
        self.url = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
        self.sim = SimAdmin(f"http://127.0.0.1:{ports['KISI_SIM_PORT']}")
        self.endpoint_url = f"http://127.0.0.1:{ports['MOTO_PORT']}"
        self._log_start = (
            self.log_path.stat().st_size if keep_log and self.log_path.exists() else 0
        )
        with self.log_path.open("ab" if keep_log else "wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "local"], cwd=ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not self._wait_ready():
            self.stop()
            raise RuntimeError("make run did not get ready:\n" + self.log())
        return self

    def restart(self) -> StackProcess:
        """Ctrl-C, then start again on the same state directory (new ports, log appended)."""
        self.stop()
        return self.start(keep_log=True)

    def current_log(self) -> str:
        """The log of the current run only (after a restart)."""
        return self.log_path.read_bytes()[self._log_start :].decode(errors="replace")

    def pid(self) -> int | None:
        """The PID of ``python -m local`` (the gateway and the simulator), while it runs."""
        return self._process.pid if self._process is not None else None

    def moto_pid(self) -> int | None:
        """The PID of the moto process now running, from make run's own lines."""
        found = _MOTO_PID.findall(self.current_log())
        return int(found[-1]) if found else None

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if READY_LINE in self.current_log():
                return True
            if self._process is None or self._process.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Ctrl-C, then wait; kill only our own process, and only if it hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> StackProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"x-api-key": self.api_key, **kwargs.pop("headers", {})}
        timeout = kwargs.pop("timeout", 40)
        return requests.request(
            method, self.url + path, headers=headers, timeout=timeout, **kwargs
        )

    def client(self, service: str) -> Any:
        return aws_client(service, self.endpoint_url)

    def queue_url(self, logical_id: str) -> str:
        return str(
            self.client("sqs").get_queue_url(QueueName=f"{STACK_NAME}-{logical_id}")["QueueUrl"]
        )

    def topic_arn(self, logical_id: str) -> str:
        return f"arn:aws:sns:us-east-1:123456789012:{STACK_NAME}-{logical_id}"

    def table(self, logical_id: str) -> str:
        return f"{STACK_NAME}-{logical_id}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


T = TypeVar("T")


def on_fresh_stack(
    name: str, env: Mapping[str, str], work: Callable[[StackProcess], T],
    log: Callable[[str], None],
) -> T:
    """Start a fresh ``make run`` stack, do ``work`` on it, and stop it whatever happens.

    Stopping ignores a second Ctrl-C, so an impatient user cannot leave the stack running.
    """
    log_path = Path(tempfile.mkdtemp(prefix=f"kisi-{name}-")) / "make-run.log"
    began = time.monotonic()
    log(f"starting a fresh local stack (log: {log_path})")
    stack = StackProcess(log_path, env=env)
    try:
        stack.start()
        log(f"stack ready on {stack.url} in {time.monotonic() - began:.0f} s")
        return work(stack)
    except Exception as error:
        log(f"failed: {type(error).__name__}: {error} (stack log: {log_path})")
        raise
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            stack.stop()  # also when start() was interrupted half-way
        finally:
            signal.signal(signal.SIGINT, previous)


def stack_env(
    *,
    sim_keys: Mapping[str, int] | None = None,
    parameters: Mapping[str, Any] | None = None,
    function_env: Mapping[str, str] | None = None,
    alarm_interval_s: float | None = None,
) -> dict[str, str]:
    """Environment for ``python -m local`` with test-friendly knobs."""
    env: dict[str, str] = {}
    if sim_keys:
        env["KISI_SIM_KEYS"] = json.dumps(dict(sim_keys))
    if parameters:
        env["STACK_PARAMETERS"] = json.dumps(dict(parameters))
    if function_env:
        env["FUNCTION_ENV"] = json.dumps(dict(function_env))
    if alarm_interval_s is not None:
        env["ALARM_INTERVAL_S"] = str(alarm_interval_s)
    return env
