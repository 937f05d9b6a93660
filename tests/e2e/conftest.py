"""The local stack for end-to-end tests: exactly what ``make run`` starts, in a subprocess.

``local.stack_process.StackProcess`` runs ``python -m local`` (moto, the Kisi simulator and
the gateway API on free ports of 127.0.0.1), waits for its ready line and stops it by its
PID. Tests talk to it only over HTTP: the gateway as a caller would, the simulator through
its admin API, moto through boto3.

The stack is configured for short real-time waits: reads give up after 3 attempts with
delays of at most 2 s, the guard cools down in 2 s, and the bad-request volume alarm fires at
5, evaluated every second. Everything else is template.yaml as deployed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kisi_sim import DEMO_KEY
from local.stack_process import StackProcess, stack_env

API_KEY = "e2e-caller-key"
DIRECT_KEY = "e2e-direct-key"  # another Kisi user, for calls that bypass the gateway
E2E_POLICIES = {"policies": {"read": {"max_attempts": 3, "base_s": 1, "cap_s": 2}}}
LocalStack = StackProcess


def eventually(check: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.1) -> Any:
    """Poll until ``check`` returns something truthy (bounded); the stack works in real time."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every_s)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    env = stack_env(
        sim_keys={DEMO_KEY: 1, DIRECT_KEY: 2},
        parameters={"RoutePolicies": json.dumps(E2E_POLICIES), "BadRequestVolume": 5},
        function_env={"GUARD_COOLDOWN_S": "2", "GUARD_CACHE_S": "0.5"},
        alarm_interval_s=1,
    )
    log_path = tmp_path_factory.mktemp("stack") / "make-run.log"
    with StackProcess(log_path, api_key=API_KEY, env=env) as running:
        yield running
