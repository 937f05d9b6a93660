"""Deferred requests survive a kill -9 of moto and a restart of make run.

Each test starts its own ``make run`` (its own state directory) and defers requests while the
Kisi simulator fails, so every one of them is queued when the fault strikes; Kisi recovers
only afterwards. Waits are bounded polls; the figures are recorded as test properties.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from kisi_sim import DEMO_KEY
from local.stack_process import StackProcess, stack_env
from tests.e2e.conftest import eventually

# Each test starts make run (twice for the restart), then waits for Kisi to come back.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("e2e-durability"),
    pytest.mark.timeout(600),
]

DEFERRED = 8
OWN_KEY = "durability-caller-login"  # a Kisi user's own login: sealed with KMS when deferred
# Reads retried every 1-2 s for up to 12 attempts (24 h deadline): long enough to outlast the
# fault, short enough delays that the tests end soon after Kisi recovers.
POLICIES = {"policies": {"read": {"max_attempts": 12, "base_s": 1, "cap_s": 2}}}
ENDED = ("succeeded", "failed", "expired")


def new_stack(tmp_path: Path) -> StackProcess:
    env = stack_env(
        sim_keys={DEMO_KEY: 1, OWN_KEY: 2},
        parameters={"RoutePolicies": json.dumps(POLICIES)},
    )
    return StackProcess(tmp_path / "make-run.log", env=env)


def defer_while_kisi_fails(stack: StackProcess) -> dict[str, dict[str, str]]:
    """Kisi down until told otherwise; DEFERRED reads answered 202 and queued.

    Every other one carries the caller's own Kisi login, which the gateway keeps sealed with
    the stack's KMS key for the retries: the restored key must still open it. Returns each
    request's location with the headers that may read it (a record belongs to its identity).
    """
    stack.sim.update_faults({"outage_seconds": 3600})
    locations: dict[str, dict[str, str]] = {}
    for offset in range(DEFERRED):
        own = {"Authorization": f"KISI-LOGIN {OWN_KEY}"} if offset % 2 else {}
        answer = stack.request("GET", f"/kisi/locks?limit=1&offset={offset}",
                               headers={"Prefer": "respond-async", **own})
        assert answer.status_code == 202, answer.text
        locations[answer.headers["Location"].removeprefix("/Prod")] = own
    for location, own in locations.items():
        assert stack.request("GET", location, headers=own).json()["status"] == "queued"
    return locations


def outcomes(
    stack: StackProcess, locations: dict[str, dict[str, str]], timeout_s: float
) -> dict[str, Any]:
    """Each request's final status (bounded wait); a request with no record is "lost"."""
    ended: dict[str, Any] = {}

    def all_ended() -> bool:
        for location, own in locations.items():
            if location in ended:
                continue
            answer = stack.request("GET", location, headers=own)
            if answer.status_code == 404:
                ended[location] = "lost"
            elif answer.status_code == 200 and answer.json()["status"] in ENDED:
                ended[location] = answer.json()["status"]
        return len(ended) == len(locations)

    eventually(all_ended, timeout_s=timeout_s, every_s=0.5)
    return {location: ended.get(location, "still queued") for location in locations}


def settle_bound_s(stack: StackProcess) -> float:
    """How long deferred requests may take to end once Kisi is back: the retry queue's
    visibility timeout plus slack. An attempt cut off by the fault holds its claim, and its
    message comes back only after that timeout, as it would on AWS after a crashed worker."""
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url("RetryQueue"), AttributeNames=["VisibilityTimeout"]
    )["Attributes"]
    return int(attributes["VisibilityTimeout"]) + 120.0


def tally(ended: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in ended.values():
        counts[status] = counts.get(status, 0) + 1
    return counts


def test_deferred_requests_survive_a_kill_of_moto(tmp_path: Path, record_property: Any) -> None:
    with new_stack(tmp_path) as stack:
        locations = defer_while_kisi_fails(stack)
        killed = stack.moto_pid()
        assert killed is not None
        os.kill(killed, signal.SIGKILL)  # moto is our own grandchild: make run started it

        restarted = eventually(
            lambda: (pid := stack.moto_pid()) not in (None, killed) and pid, timeout_s=60)
        assert restarted, "the watchdog did not start moto again:\n" + stack.current_log()
        log = stack.current_log()
        assert f"watchdog: moto (pid {killed}) exited with code -9: starting it again" in log
        assert "moto state: restored sqs: 3 queues" in log

        stack.sim.update_faults({"outage_until": None})  # Kisi recovers
        ended = outcomes(stack, locations, timeout_s=settle_bound_s(stack))
        record_property("kill_moto", {"deferred": DEFERRED, **tally(ended)})
        assert tally(ended) == {"succeeded": DEFERRED}, ended


def test_deferred_requests_survive_a_restart_of_make_run_and_fresh_forgets_them(
    tmp_path: Path, record_property: Any
) -> None:
    stack = new_stack(tmp_path)
    try:
        stack.start()
        locations = defer_while_kisi_fails(stack)
        first_state = stack.state_dir
        stack.restart()  # Ctrl-C, then make run again on the same state (a new, healthy Kisi)
        assert stack.state_dir == first_state
        restored = re.search(r"moto state: restored sqs: 3 queues, (\d+) messages",
                             stack.current_log())
        assert restored, stack.current_log()
        assert int(restored.group(1)) >= DEFERRED
        ended = outcomes(stack, locations, timeout_s=settle_bound_s(stack))
        record_property("restart_make_run", {"deferred": DEFERRED, **tally(ended)})
        assert tally(ended) == {"succeeded": DEFERRED}, ended

        stack.stop()
        stack.env = {**stack.env, "FRESH": "1"}
        stack.start(keep_log=True)
        log = stack.current_log()
        assert f"FRESH=1: {first_state} emptied (moto-state.pickle, " in log
        assert f"moto state: none in {first_state}, starting empty" in log
        first = next(iter(locations))
        assert stack.request("GET", first, headers=locations[first]).status_code == 404
    finally:
        stack.stop()
