"""The gateway's own CPU per synchronous call, next to a direct ``requests`` call.

Both sides make the same call (``GET /locks/7``) to the same Kisi simulator, which runs in
another process so that its CPU is not counted; ``time.process_time`` of this process is
summed over ``CALLS`` calls per side, in alternating rounds so drift affects both alike.

The gateway side is the api_call path without the Lambda runtime: ``parse_call`` (validation,
route policy) then :meth:`~kisi_gateway.pipeline.forwarding.Forwarder.forward` (guard, budget, send,
classification, telemetry, reply). Its collaborators come in two variants:

- ``in-memory``: :class:`~kisi_gateway.stores.budget.InMemorySendBudget` and the bench's in-memory
  guard over the library's decisions; telemetry is the deployed Powertools EMF sink (its
  output discarded). The records and the queue are not touched by a synchronous success —
  fakes that fail loudly if that ever changes.
- ``boto3``: the deployed adapters (``DynamoSendBudget``, ``DynamoGuard``) through a real boto3
  DynamoDB client whose HTTP answers are canned at botocore's ``before-send`` hook: boto3's
  serialising, signing and parsing are counted, no server is. The closest to what a Lambda
  spends (a read and a conditional write per call; the guard is served from its cache).
- ``moto``: the same adapters on moto in this process. An upper bound: moto's server-side
  work is counted too, which on AWS happens elsewhere. ``mock_aws`` also routes ``requests``
  through ``responses``, so this variant is compared with a direct call made under the
  same mock.

The budget's rate is set far above Kisi's here: the arithmetic is the same, and the calls
must not wait for slots (waiting costs wall time, not CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3
import requests
from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HTTPHeaders

from bench.realtime import LOOPBACK_ONLY, aws_client, aws_environment, create_resources
from kisi_gateway.config import Settings
from kisi_gateway.core.lifecycle import Change
from kisi_gateway.core.records import RequestRecord, RetryMessage
from kisi_gateway.pipeline.callers import Callers
from kisi_gateway.pipeline.calls import parse_call
from kisi_gateway.pipeline.forwarding import CallContext, Forwarder
from kisi_gateway.pipeline.kisi_http import KisiClient, build_session, same_origin
from kisi_gateway.pipeline.replies import location_rewriter
from kisi_gateway.pipeline.sending import Sender, SystemClock
from kisi_gateway.pipeline.telemetry import PowertoolsEmfSink, Telemetry
from kisi_gateway.stores.budget import DynamoSendBudget
from kisi_gateway.stores.directory import DynamoDirectory
from kisi_gateway.stores.guard import DynamoGuard
from kisi_gateway.stores.memory import MemoryDirectory, MemoryVault
from kisi_gateway.stores.memory import MemoryGuard as InMemoryGuard
from kisi_gateway.stores.memory import MemorySendBudget as InMemorySendBudget
from kisi_gateway.stores.ports import Applied, Guard, SendBudget
from kisi_gateway.stores.queue import SqsRetryQueue
from kisi_gateway.stores.records import DynamoRecordStore
from kisi_gateway.stores.secrets import ServiceKeys
from kisi_sim import DEMO_KEY

ROOT = Path(__file__).resolve().parent.parent
CALLS = 1000
ROUNDS = 5
WARMUP = 50
PATH = "/locks/7"
UNTHROTTLED = 1_000_000.0  # req/s: the budget's arithmetic without waiting for slots
START_TIMEOUT_S = 15.0
REGION = "us-east-1"

Call = Callable[[], int]  # one call; returns the HTTP status the caller got


@dataclass(frozen=True, slots=True)
class CpuCost:
    """CPU microseconds per call of each side, and the ratio gateway / direct."""

    variant: str
    direct_us: float
    gateway_us: float
    ratio: float
    calls: int


class _Untouched:
    """Records and queue for a synchronous success, which writes neither (forwarding.py)."""

    def _fail(self, name: str) -> Any:
        raise AssertionError(f"{name} was called on the synchronous success path")

    def create(self, record: RequestRecord) -> bool:
        return bool(self._fail("records.create"))

    def get(self, request_id: str) -> RequestRecord | None:
        return self._fail("records.get")  # type: ignore[no-any-return]

    def apply(self, request_id: str, change: Change) -> Applied | None:
        return self._fail("records.apply")  # type: ignore[no-any-return]

    def enqueue(self, message: RetryMessage, delay_s: int) -> None:
        self._fail("queue.enqueue")

    def postpone(self, receipt_handle: str, delay_s: int) -> None:
        self._fail("queue.postpone")

    def dead_letter(self, message: RetryMessage, reason: str) -> None:
        self._fail("queue.dead_letter")


@contextlib.contextmanager
def simulator_process() -> Iterator[str]:
    """The Kisi simulator in a child process with an unthrottled bucket; yields its URL."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KISI_SIM_RATE_PER_S": str(UNTHROTTLED),
           "KISI_SIM_BURST": str(int(UNTHROTTLED))}
    child = subprocess.Popen(
        [sys.executable, "-m", "kisi_sim", "--port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], START_TIMEOUT_S)
        line = child.stdout.readline() if ready else ""
        if "listening on " not in line:
            raise RuntimeError(f"kisi-sim did not start: {line!r}")
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=5)


def direct_call(base_url: str) -> Call:
    session = requests.Session()
    session.trust_env = False
    headers = {"Authorization": f"KISI-LOGIN {DEMO_KEY}", "Accept": "application/json"}

    def call() -> int:
        response = session.get(base_url + PATH, headers=headers, timeout=10,
                               allow_redirects=False)
        _ = response.content
        return response.status_code

    return call


def gateway_call(base_url: str, forwarder: Forwarder) -> Call:
    settings = Settings.from_env({"KISI_BASE_URL": base_url})
    context = CallContext("bench", None, "", location_rewriter(
        lambda url: same_origin(url, base_url), ""))

    def call() -> int:
        incoming = parse_call(
            method="GET", path=PATH, query=[], body=None, is_base64=False, headers={},
            policies=settings.policies, max_body_bytes=settings.max_body_bytes,
            default_wait_s=settings.default_wait_s, max_wait_s=settings.max_wait_s,
        )
        return forwarder.forward(incoming, context).status

    return call


def _forwarder(
    base_url: str, budget: SendBudget, guard: Guard, records: Any, queue: Any,
    directory: Any,
) -> Forwarder:
    session = build_session()
    sender = Sender(
        kisi_factory=lambda: KisiClient(base_url, session=session),
        budget=budget, guard=guard, telemetry=Telemetry(PowertoolsEmfSink()),
        clock=SystemClock(), rng=random.Random(1).random, directory=directory,
    )
    callers = Callers(directory, ServiceKeys(lambda secret_id, refresh: DEMO_KEY),
                      b"cpu-bench-identity-key",
                      default_secret_id="service-login",  # noqa: S106 - a name, not a secret
                      clock=time.time)
    return Forwarder(sender=sender, records=records, queue=queue, callers=callers,
                     vault=MemoryVault(), record_ttl_s=86_400.0, read_timeout_s=10.0)


def in_memory_forwarder(base_url: str) -> Forwarder:
    untouched = _Untouched()
    return _forwarder(base_url, InMemorySendBudget(rate=UNTHROTTLED), InMemoryGuard(),
                      untouched, untouched, MemoryDirectory())


class _CannedBody(io.BytesIO):
    """A raw HTTP body botocore can stream."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        chunk = self.read()
        while chunk:
            yield chunk
            chunk = self.read()


# DynamoDB's answers when no bucket or guard item exists yet: the budget then books from a
# fresh bucket and writes it, the guard reads "closed" — the common path of every call.
CANNED_DYNAMODB = {
    "GetItem": b"{}",
    "UpdateItem": b"{}",
    "PutItem": b"{}",
    "BatchGetItem": b'{"Responses": {}, "UnprocessedKeys": {}}',
}


def _canned_answer(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
    target = request.headers.get("X-Amz-Target", b"")  # "DynamoDB_20120810.GetItem"
    text = target.decode() if isinstance(target, bytes) else str(target)
    body = CANNED_DYNAMODB[text.rsplit(".", 1)[-1]]
    headers = HTTPHeaders()
    headers["Content-Type"] = "application/x-amz-json-1.0"
    headers["x-amzn-RequestId"] = "bench"
    return AWSResponse(request.url, 200, headers, _CannedBody(body))


def canned_forwarder(base_url: str) -> Forwarder:
    """The DynamoDB adapters over a real boto3 client answered by :data:`CANNED_DYNAMODB`."""
    dynamodb = boto3.client(
        "dynamodb", region_name=REGION, config=LOOPBACK_ONLY,
        aws_access_key_id="bench", aws_secret_access_key="bench",  # noqa: S106 - not a secret
    )
    # botocore-stubs types handlers as returning None; a before-send handler that returns a
    # response short-circuits the HTTP send (that is how botocore's own Stubber works).
    dynamodb.meta.events.register("before-send.dynamodb", _canned_answer)  # type: ignore[arg-type]
    budget = DynamoSendBudget(dynamodb, "budget", rate=UNTHROTTLED)
    untouched = _Untouched()
    return _forwarder(base_url, budget, DynamoGuard(dynamodb, "guard"), untouched, untouched,
                      DynamoDirectory(dynamodb, "tenants"))


def moto_forwarder(base_url: str) -> Forwarder:
    """The deployed adapters on moto (call inside ``mock_aws``)."""
    dynamodb, sqs = aws_client("dynamodb"), aws_client("sqs")
    urls = create_resources(dynamodb, sqs)
    budget = DynamoSendBudget(dynamodb, "budget", rate=UNTHROTTLED)
    return _forwarder(base_url, budget, DynamoGuard(dynamodb, "guard"),
                      DynamoRecordStore(dynamodb, "requests"),
                      SqsRetryQueue(sqs, urls["queue"], urls["dlq"]),
                      DynamoDirectory(dynamodb, "tenants"))


def compare(sides: dict[str, Call], calls: int = CALLS) -> dict[str, float]:
    """CPU microseconds per call of each side, in alternating rounds; every call must
    succeed. Warm-up first (connections, caches); EMF lines go nowhere."""
    spent = dict.fromkeys(sides, 0.0)
    per_round = max(1, calls // ROUNDS)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        for call in sides.values():
            for _ in range(WARMUP):
                call()
        for _ in range(ROUNDS):
            for side, call in sides.items():
                started = time.process_time()
                statuses = {call() for _ in range(per_round)}
                spent[side] += time.process_time() - started
                if statuses != {200}:
                    raise RuntimeError(f"{side}: unexpected statuses {statuses}")
    return {side: cpu / (per_round * ROUNDS) * 1e6 for side, cpu in spent.items()}


def _rows(costs: dict[str, float], calls: int) -> list[CpuCost]:
    direct = costs.pop("direct")
    return [CpuCost(variant, direct, us, us / direct, calls) for variant, us in costs.items()]


@contextlib.contextmanager
def _aws() -> Iterator[None]:
    from moto import mock_aws  # noqa: PLC0415 - only the moto variant needs it

    with aws_environment(), mock_aws():
        yield


def measure(calls: int = CALLS) -> list[CpuCost]:
    """Every variant against one simulator process; moto's beside its own direct baseline."""
    with simulator_process() as url:
        plain = compare({
            "direct": direct_call(url),
            "in-memory": gateway_call(url, in_memory_forwarder(url)),
            "boto3": gateway_call(url, canned_forwarder(url)),
        }, calls)
        with _aws():
            mocked = compare({
                "direct": direct_call(url),
                "moto": gateway_call(url, moto_forwarder(url)),
            }, calls)
    total = max(1, calls // ROUNDS) * ROUNDS
    return _rows(plain, total) + _rows(mocked, total)


def measure_in_subprocess(calls: int = CALLS, timeout_s: float = 300.0) -> list[CpuCost]:
    """:func:`measure` in a fresh process: no stray threads may add to its CPU time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "layers" / "kisi_gateway"), str(ROOT)])}
    done = subprocess.run(  # noqa: S603 - our own interpreter running our own module
        [sys.executable, "-m", "bench.cpu_cost", "--json", "--calls", str(calls)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=True,
    )
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    return [CpuCost(**row) for row in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_cost")
    parser.add_argument("--json", action="store_true", help="one JSON line (for bench)")
    parser.add_argument("--calls", type=int, default=CALLS)
    args = parser.parse_args(argv)
    results = measure(args.calls)
    if args.json:
        print(json.dumps([asdict(row) for row in results]))
        return
    for row in results:
        print(f"{row.variant:10} direct {row.direct_us:7.0f} us  gateway {row.gateway_us:7.0f}"
              f" us  ratio {row.ratio:.2f}  ({row.calls} calls each)")


if __name__ == "__main__":
    main()
