"""Tenants and callers added to a running ``make run`` with ``python -m ops --local``: the new
caller's x-api-key works at once and its calls reach Kisi with its tenant's service login."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kisi_sim import DEMO_KEY, key_fingerprint
from local.stack_process import StackProcess, stack_env
from tests.e2e.conftest import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

ROOT = Path(__file__).resolve().parents[2]
ACME_KEY = "acme-service-key-e2e"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    log_path = tmp_path_factory.mktemp("tenants-stack") / "make-run.log"
    with StackProcess(log_path, env=stack_env(sim_keys={DEMO_KEY: 1, ACME_KEY: 7})) as running:
        yield running


def ops(stack: StackProcess, *argv: str, stdin: str = "") -> dict[str, object]:
    """``python -m ops --local ...`` as an operator runs it beside make run."""
    done = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "ops", "--local", *argv], cwd=ROOT, input=stdin, text=True,
        capture_output=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "LOCAL_STATE_DIR": str(stack.state_dir),
             "PYTHONPATH": f"{ROOT / 'layers' / 'kisi_gateway'}:{ROOT}"})
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_a_tenant_and_caller_added_with_ops_work_at_once(stack: StackProcess) -> None:
    assert ops(stack, "tenant", "add", "acme", stdin=ACME_KEY)["result"] == "added"
    caller = ops(stack, "caller", "add", "--tenant", "acme")
    key = str(caller["x-api-key"])

    answer = eventually(lambda: (r := stack.request(
        "GET", "/kisi/places?limit=1&offset=3", headers={"x-api-key": key},
    )).status_code == 200 and r)
    assert answer.status_code == 200
    sent = [e for e in stack.sim.stats()["requests"]
            if e["path"] == "/places" and e["query"] == "limit=1&offset=3"]
    assert [e["credential"] for e in sent] == [key_fingerprint(ACME_KEY)]
    assert stack.request("GET", "/kisi/places?limit=1&offset=4").status_code == 200
    default = [e for e in stack.sim.stats()["requests"] if e["query"] == "limit=1&offset=4"]
    assert [e["credential"] for e in default] == [key_fingerprint(DEMO_KEY)]

    listing = ops(stack, "tenant", "list")
    assert listing == {"tenants": [{"tenant": "acme", "callers": [
        {"api_key_id": caller["api_key_id"], "mode": "auto"}]}]}
    assert ops(stack, "caller", "remove", str(caller["api_key_id"]))["result"] == "removed"
    refused = eventually(lambda: (r := stack.request(
        "GET", "/kisi/places", headers={"x-api-key": key})).status_code == 403 and r)
    assert refused.json() == {"message": "Forbidden"}
