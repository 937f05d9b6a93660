"""The gateway's own CPU per synchronous call, next to a direct ``requests`` call.

Both sides make the same call (``GET /locks/7``) to the same Kisi simulator, which runs in
another process so that its CPU is not counted; ``time.process_time`` of this process is
summed over ``CALLS`` calls per side, in alternating rounds so drift affects both alike.

The gateway side is the api_call path without the Lambda runtime: ``parse_call`` (validation,
route policy) then :meth:`~kisi_gateway.pipeline.forwarding.Forwarder.forward` (known-bad
screen, guard, budget, send, classification, telemetry, reply), composed by the library's own
composition root in these variants:

- ``in-memory``: ``wiring.build_in_memory`` (the in-memory stores); telemetry is the deployed
  EMF sink, one document per call as the handler prints it (output discarded). The
  gateway's own logic.
- ``boto3``: ``wiring.build_pipeline``, the composition api_call runs, over real boto3 clients
  configured as ``wiring`` configures them, whose DynamoDB answers are canned at botocore's
  ``before-send`` hook: boto3's validation, serialising, signing and parsing are counted, no
  server is. The closest to what a Lambda spends: per call the budget's conditional
  UpdateItem; about once a second (the guard's verdict cache) a guard read and a known-bad
  lookup, which the guard's view of the identity otherwise spares.
- ``boto3, known-bad off``: the same with ``KNOWN_BAD_WINDOW_S=0``.
- ``moto``: the same composition on moto in this process. An upper bound: moto's server-side
  work is counted too, which on AWS happens elsewhere. ``mock_aws`` also routes ``requests``
  through ``responses``, so this variant is compared with a direct call made under the
  same mock.

Beside the direct keep-alive call, a direct call as Kisi's own Python client makes every call
(``requests.request``, a new connection each time) is measured, and the ``boto3`` variant is
compared with it too.

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

from bench import simproc
from bench.realtime import LOOPBACK_ONLY, aws_client, aws_environment, create_resources
from kisi_gateway.config import Settings
from kisi_gateway.pipeline.calls import parse_call
from kisi_gateway.pipeline.forwarding import CallContext, Forwarder
from kisi_gateway.pipeline.kisi_http import KisiClient, build_session, same_origin
from kisi_gateway.pipeline.replies import location_rewriter
from kisi_gateway.pipeline.sending import SystemClock
from kisi_gateway.pipeline.telemetry import EmfSink, Telemetry, metric_batch
from kisi_gateway.wiring import AWS_TIMEOUTS, build_in_memory, build_pipeline
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


def simulator_process() -> contextlib.AbstractContextManager[str]:
    """The Kisi simulator in a child process with an unthrottled bucket; yields its URL."""
    return simproc.simulator_process({"KISI_SIM_RATE_PER_S": str(UNTHROTTLED),
                                      "KISI_SIM_BURST": str(int(UNTHROTTLED))})


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


def kisi_client_call(base_url: str) -> Call:
    """A direct call as Kisi's own Python client (``Kisi==1.4``, ``kisi/kisi.py``) makes each
    of its calls: ``requests.request`` with no session, so a new session and a new connection
    every time (on loopback, without the TLS handshake that api.kisi.io would add)."""
    headers = {"Authorization": f"KISI-LOGIN {DEMO_KEY}", "Accept": "application/json"}

    def call() -> int:
        response = requests.request("GET", base_url + PATH, headers=headers, json=None,
                                    params=None, timeout=10)
        _ = response.content
        return response.status_code

    return call


def gateway_call(base_url: str, forwarder: Forwarder) -> Call:
    settings = Settings.from_env({"KISI_BASE_URL": base_url})
    context = CallContext("bench", None, "", location_rewriter(
        lambda url: same_origin(url, base_url), ""))

    def call() -> int:
        with metric_batch():  # as api_call's handler does: one EMF line per call
            return _forward(forwarder, settings, context)

    return call


def _forward(forwarder: Forwarder, settings: Settings, context: CallContext) -> int:
    incoming = parse_call(
        method="GET", path=PATH, query=[], body=None, is_base64=False, headers={},
        policies=settings.policies, max_body_bytes=settings.max_body_bytes,
        default_wait_s=settings.default_wait_s, max_wait_s=settings.max_wait_s,
    )
    return forwarder.forward(incoming, context).status


def _settings(base_url: str, **names: str) -> Settings:
    """The deployed settings, with the budget's rate far above Kisi's (:data:`UNTHROTTLED`)."""
    return Settings.from_env({
        "KISI_BASE_URL": base_url, "SEND_RATE": str(UNTHROTTLED),
        "KISI_API_KEY_SECRET": "service-login", **names,
    })


def in_memory_forwarder(base_url: str) -> Forwarder:
    """``wiring.build_in_memory``: the library's in-memory stores, the deployed EMF telemetry."""
    session = build_session()
    gateway = build_in_memory(
        _settings(base_url), KisiClient(base_url, session=session), SystemClock(),
        random.Random(1).random, service_key=DEMO_KEY,
        telemetry=Telemetry(EmfSink()),
    )
    return gateway.forwarder


class _CannedBody(io.BytesIO):
    """A raw HTTP body botocore can stream."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        chunk = self.read()
        while chunk:
            yield chunk
            chunk = self.read()


# DynamoDB's answers when no item exists yet: the budget then books from a fresh bucket and
# writes it, the guard reads "closed", no known-bad entry and no directory entry are found —
# the common path of every call. Other services are built but never called on this path.
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


def _deployed_forwarder(
    base_url: str, clients: dict[str, Any], names: dict[str, str]
) -> Forwarder:
    """``wiring.build_pipeline`` over ``clients``: the composition api_call runs."""
    session = build_session()
    pipeline = build_pipeline(
        _settings(base_url, **names), aws=clients.__getitem__,
        kisi=lambda: KisiClient(base_url, session=session), clock=SystemClock(),
        rng=random.Random(1).random, telemetry=Telemetry(EmfSink()),
        secrets=lambda secret_id, refresh: DEMO_KEY, key=b"cpu-bench-identity-key",
    )
    return pipeline.forwarder


TABLES = {"REQUESTS_TABLE": "requests", "BUDGET_TABLE": "budget", "GUARD_TABLE": "guard",
          "TENANTS_TABLE": "tenants"}


def canned_forwarder(base_url: str, **settings: str) -> Forwarder:
    """The deployed composition over real boto3 clients, configured as ``wiring`` configures
    them, whose DynamoDB answers are canned (:data:`CANNED_DYNAMODB`); ``settings`` adds to
    the environment."""
    config = AWS_TIMEOUTS.config().merge(LOOPBACK_ONLY)
    clients: dict[str, Any] = {
        service: boto3.client(
            service, region_name=REGION, config=config,
            aws_access_key_id="bench", aws_secret_access_key="bench",  # noqa: S106 - not a secret
        ) for service in ("dynamodb", "sqs", "kms")
    }
    # A before-send handler that returns a response short-circuits the HTTP send (that is how
    # botocore's own Stubber works).
    events = clients["dynamodb"].meta.events
    events.register("before-send.dynamodb", _canned_answer)
    return _deployed_forwarder(base_url, clients, {
        **TABLES, "RETRY_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/retry",
        "DLQ_URL": "https://sqs.us-east-1.amazonaws.com/1/retry-dlq",
        "CREDENTIAL_KEY_ID": "bench-key", **settings,
    })


def moto_forwarder(base_url: str) -> Forwarder:
    """The deployed composition on moto (call inside ``mock_aws``)."""
    clients = {service: aws_client(service) for service in ("dynamodb", "sqs", "kms")}
    urls = create_resources(clients["dynamodb"], clients["sqs"])
    return _deployed_forwarder(base_url, clients, {
        **TABLES, "RETRY_QUEUE_URL": urls["queue"], "DLQ_URL": urls["dlq"],
        "CREDENTIAL_KEY_ID": clients["kms"].create_key()["KeyMetadata"]["KeyId"],
    })


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


KISI_CLIENT = "direct as Kisi's Python client calls"
VERSUS_KISI_CLIENT = "boto3, vs a call as Kisi's Python client makes it"


def _rows(costs: dict[str, float], calls: int) -> list[CpuCost]:
    direct = costs.pop("direct")
    client = costs.pop(KISI_CLIENT, None)
    rows = [CpuCost(variant, direct, us, us / direct, calls) for variant, us in costs.items()]
    if client is not None and "boto3" in costs:
        rows.append(CpuCost(VERSUS_KISI_CLIENT, client, costs["boto3"],
                            costs["boto3"] / client, calls))
    return rows


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
            KISI_CLIENT: kisi_client_call(url),
            "in-memory": gateway_call(url, in_memory_forwarder(url)),
            "boto3": gateway_call(url, canned_forwarder(url)),
            "boto3, known-bad off": gateway_call(
                url, canned_forwarder(url, KNOWN_BAD_WINDOW_S="0")),
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
        print(f"{row.variant:20} direct {row.direct_us:7.0f} us  gateway {row.gateway_us:7.0f}"
              f" us  ratio {row.ratio:.2f}  ({row.calls} calls each)")


if __name__ == "__main__":
    main()
