"""The local stack for end-to-end tests: exactly what ``make run`` starts, in a subprocess.

``python -m local`` runs moto, the Kisi simulator and the gateway API on free ports of
127.0.0.1; the fixture waits for its ready line and stops it by its PID (SIGINT, as Ctrl-C
would). Tests talk to it only over HTTP: the gateway as a caller would, the simulator through
its admin API, moto through boto3.

The stack is configured for short real-time waits: reads give up after 3 attempts with
delays of at most 2 s, the guard cools down in 2 s, and the bad-request volume alarm fires at
5, evaluated every second. Everything else is template.yaml as deployed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from local.kisi_sim import DEMO_KEY
from local.moto_server import aws_client, free_port

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "e2e-caller-key"
DIRECT_KEY = "e2e-direct-key"  # another Kisi user, for calls that bypass the gateway
STACK_NAME = "kisi-gateway"
E2E_POLICIES = {"policies": {"read": {"max_attempts": 3, "base_s": 1, "cap_s": 2}}}
READY_TIMEOUT_S = 90


def eventually(check: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.1) -> Any:
    """Poll until ``check`` returns something truthy (bounded); the stack works in real time."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every_s)


@dataclass
class SimAdmin:
    """The simulator's admin API, with the method names of ``KisiSimulator``."""

    url: str

    def update_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        response = requests.put(f"{self.url}/__admin/faults", json=changes, timeout=10)
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
class LocalStack:
    """Handles on the running stack."""

    url: str
    sim: SimAdmin
    endpoint_url: str
    log_path: Path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"x-api-key": API_KEY, **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def client(self, service: str) -> Any:
        return aws_client(service, self.endpoint_url)

    def queue_url(self, logical_id: str) -> str:
        return str(self.client("sqs").get_queue_url(
            QueueName=f"{STACK_NAME}-{logical_id}")["QueueUrl"])

    def topic_arn(self, logical_id: str) -> str:
        return f"arn:aws:sns:us-east-1:123456789012:{STACK_NAME}-{logical_id}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _ready(log_path: Path, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if "kisi-gateway ready on" in log_path.read_text(errors="replace"):
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    ports = {name: free_port() for name in ("GATEWAY_PORT", "MOTO_PORT", "KISI_SIM_PORT")}
    env = {
        **os.environ,
        **{name: str(port) for name, port in ports.items()},
        "GATEWAY_API_KEY": API_KEY,
        "KISI_SIM_KEYS": json.dumps({DEMO_KEY: 1, DIRECT_KEY: 2}),
        "STACK_PARAMETERS": json.dumps(
            {"RoutePolicies": json.dumps(E2E_POLICIES), "BadRequestVolume": 5}
        ),
        "FUNCTION_ENV": json.dumps({"GUARD_COOLDOWN_S": "2", "GUARD_CACHE_S": "0.5"}),
        "ALARM_INTERVAL_S": "1",
    }
    env.pop("KISI_BASE_URL", None)
    env.pop("KISI_API_KEY", None)
    log_path = tmp_path_factory.mktemp("stack") / "make-run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "local"], cwd=ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        assert _ready(log_path, process), "make run did not get ready:\n" + log_path.read_text()
        yield LocalStack(
            url=f"http://127.0.0.1:{ports['GATEWAY_PORT']}",
            sim=SimAdmin(f"http://127.0.0.1:{ports['KISI_SIM_PORT']}"),
            endpoint_url=f"http://127.0.0.1:{ports['MOTO_PORT']}",
            log_path=log_path,
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # Ctrl-C: the stack stops what it started
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
