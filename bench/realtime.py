"""The comparison for real, on loopback: does the simulation's ordering of strategies hold?

200 reads from 50 caller threads against the Kisi simulator over HTTP on 127.0.0.1, at real
time, with its default bucket (5 req/s, burst 5) and 50 ms of added latency per request:

- ``gateway``: the library's own :class:`~kisi_gateway.pipeline.forwarding.Forwarder` (one per
caller
  thread, as each Lambda has its own) and :class:`~kisi_gateway.pipeline.retrying.RetryWorker` (five
  worker threads polling the retry queue), wired as ``tests/harness.py`` wires them but on the
  real clock (:class:`~kisi_gateway.pipeline.sending.SystemClock`): DynamoDB budget, guard and
  records
  and SQS on moto in this process, the Kisi client over HTTP.
- ``immediate``: ``requests`` in a loop, at most 10 attempts.
- ``urllib3``: a ``requests`` session with ``HTTPAdapter(max_retries=Retry(...))`` — urllib3
  itself sleeping and retrying.

Bounded: each strategy stops taking new requests after ``hard_stop_s`` and is abandoned
(counted as unfinished) shortly after; the pipeline's worker threads stop with it.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import requests
from botocore.config import Config
from requests.adapters import HTTPAdapter

from bench import simproc
from bench.strategies import IMMEDIATE_ATTEMPTS, urllib3_retry
from kisi_gateway.config import Settings
from kisi_gateway.core.records import TERMINAL, RecordStatus, RetryMessage
from kisi_gateway.pipeline.calls import parse_call
from kisi_gateway.pipeline.forwarding import CallContext, Forwarder
from kisi_gateway.pipeline.kisi_http import KisiClient, Timeouts, build_session, same_origin
from kisi_gateway.pipeline.replies import location_rewriter
from kisi_gateway.pipeline.retrying import Disposition, RetryWorker
from kisi_gateway.pipeline.sending import SystemClock
from kisi_gateway.pipeline.telemetry import MemorySink, Telemetry
from kisi_gateway.stores.records import DynamoRecordStore
from kisi_gateway.wiring import Pipeline, build_pipeline
from kisi_sim import DEMO_KEY

REQUESTS = 200
CALLERS = 50
HARD_STOP_S = 120.0
GRACE_S = 20.0  # a request in progress at the hard stop may finish within this
WORKERS = 5  # template.yaml: the retry worker's MaximumConcurrency
LATENCY_MS = 50  # added by the simulator to every request: loopback is unrealistically fast
REGION = "us-east-1"
IDLE_POLL_S = 0.05
MOTO_ITEM_OPERATIONS = ("get_item", "put_item", "update_item", "delete_item", "batch_get_item",
                        "transact_write_items", "scan")
RETRYABLE = frozenset({429, 500, 502, 503, 504})

Work = Callable[[str], str]  # path -> how the request ended
# Every boto3 client of the bench goes through a proxy on a closed loopback port: moto (or a
# canned answer) intercepts before any socket is opened, and should a thread outlive the mock,
# its call fails on 127.0.0.1 instead of reaching AWS.
LOOPBACK_ONLY = Config(proxies={"http": "http://127.0.0.1:9", "https": "http://127.0.0.1:9"},
                       retries={"max_attempts": 1})


def aws_client(service: str) -> Any:
    """A boto3 client for the bench: dummy region, loopback-only (see :data:`LOOPBACK_ONLY`)."""
    # boto3-stubs types client() by literal service names only (wiring._client does the same).
    return boto3.client(service, region_name=REGION, config=LOOPBACK_ONLY)  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class RealtimeFigures:
    strategy: str
    requests: int
    succeeded: int
    unfinished: int
    deferred: int
    attempts: int
    rate_limited: int
    wall_s: float
    peak_per_s: int  # most requests Kisi received within any one second


    @property
    def attempts_per_success(self) -> float:
        return self.attempts / self.succeeded if self.succeeded else float("inf")

    @property
    def rate_limited_pct(self) -> float:
        return 100.0 * self.rate_limited / self.attempts if self.attempts else 0.0


def peak_per_second(arrivals: Sequence[float]) -> int:
    """The most arrivals within any 1 s window (Kisi lets 5 + 5 through in one second)."""
    ordered = sorted(arrivals)
    best, start = 0, 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def read_paths(count: int) -> list[str]:
    return [f"/locks/{1 + i % 120}" for i in range(count)]


def run_callers(
    paths: Sequence[str], callers: int, make_work: Callable[[], Work], stop_at: float
) -> list[str]:
    """``callers`` threads work through ``paths``; each thread gets its own ``make_work()``.

    Returns how each request ended (``"unfinished"`` for those never started or still running
    when the grace period after ``stop_at`` ran out).
    """
    results = ["unfinished"] * len(paths)
    pending = deque(enumerate(paths))

    def caller() -> None:
        work = make_work()
        while time.monotonic() < stop_at:
            try:
                index, path = pending.popleft()
            except IndexError:
                return
            results[index] = work(path)

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, stop_at + GRACE_S - time.monotonic()))
    return list(results)


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def immediate_work(base_url: str) -> Work:
    session = _session()
    headers = {"Authorization": f"KISI-LOGIN {DEMO_KEY}"}

    def work(path: str) -> str:
        for _ in range(IMMEDIATE_ATTEMPTS):
            status = session.get(base_url + path, headers=headers, timeout=10).status_code
            if status not in RETRYABLE:
                return "succeeded" if status < 400 else "rejected"
        return "gave_up"

    return work


def urllib3_work(base_url: str) -> Work:
    session = _session()
    adapter = HTTPAdapter(max_retries=urllib3_retry())
    session.mount("http://", adapter)
    headers = {"Authorization": f"KISI-LOGIN {DEMO_KEY}"}

    def work(path: str) -> str:
        try:
            status = session.get(base_url + path, headers=headers, timeout=10).status_code
        except requests.exceptions.RetryError:
            return "gave_up"
        return "succeeded" if status < 400 else "rejected"

    return work


# -- the gateway ------------------------------------------------------------------------------


@contextmanager
def aws_environment() -> Iterator[None]:
    """Dummy credentials and a region for moto, restored afterwards."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
             "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_PROFILE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION})
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def create_resources(dynamodb: Any, sqs: Any) -> dict[str, str]:
    """The tables and queues of template.yaml the pipeline uses, with the template's settings
    (retry queue: 180 s visibility, redrive to the DLQ after 15 receives)."""
    for table, key in (("requests", "request_id"), ("budget", "pk"), ("guard", "scope"),
                       ("tenants", "pk")):
        dynamodb.create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        )
    dlq = sqs.create_queue(QueueName="retry-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    redrive = f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": 15}}'
    queue = sqs.create_queue(
        QueueName="retry", Attributes={"VisibilityTimeout": "180", "RedrivePolicy": redrive}
    )["QueueUrl"]
    return {"queue": queue, "dlq": dlq}


@dataclass
class _Pipeline:
    """Builds what each simulated Lambda environment owns, over shared AWS clients, with the
    library's own composition root (``wiring.build_pipeline``)."""

    base_url: str
    settings: Settings
    clients: dict[str, Any]
    seed: int

    def build(self) -> Pipeline:
        session = build_session()
        settings = self.settings
        return build_pipeline(
            settings, aws=self.clients.__getitem__,
            kisi=lambda: KisiClient(
                self.base_url, session=session,
                timeouts=Timeouts(settings.connect_timeout_s, settings.read_timeout_s),
            ),
            clock=SystemClock(), rng=random.Random(self.seed).random,
            telemetry=Telemetry(MemorySink()),
            secrets=lambda secret_id, refresh: DEMO_KEY, key=b"realtime-bench-identity-key",
        )

    def forwarder(self) -> Forwarder:
        return self.build().forwarder

    def worker(self) -> RetryWorker:
        return self.build().worker

    def records(self) -> DynamoRecordStore:
        return DynamoRecordStore(self.clients["dynamodb"], "requests")


def _gateway_work(pipeline: _Pipeline, deferred: list[str]) -> Work:
    forwarder = pipeline.forwarder()
    settings = pipeline.settings
    base = pipeline.base_url
    context = CallContext("bench", None, "", location_rewriter(
        lambda url: same_origin(url, base), ""))

    def work(path: str) -> str:
        call = parse_call(
            method="GET", path=path, query=[], body=None, is_base64=False, headers={},
            policies=settings.policies, max_body_bytes=settings.max_body_bytes,
            default_wait_s=settings.default_wait_s, max_wait_s=settings.max_wait_s,
        )
        reply = forwarder.forward(call, context)
        if reply.status == 202:
            deferred.append(reply.headers["X-Gateway-Request-Id"])
            return "deferred"
        return "succeeded" if reply.status < 400 else "rejected"

    return work


def _worker_loop(pipeline: _Pipeline, stop: threading.Event, errors: list[str]) -> None:
    """One retry_worker 'Lambda': poll, process each message, delete the finished ones."""
    worker = pipeline.worker()
    while not stop.is_set():
        sqs, queue_url = pipeline.clients["sqs"], pipeline.settings.retry_queue_url
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            stop.wait(IDLE_POLL_S)
            continue
        for message in messages:
            try:
                parsed = RetryMessage.from_json(message["Body"])
                disposition = worker.process(parsed, message["ReceiptHandle"])
            except Exception as exc:  # a bench reports a worker's failure, it does not die of it
                errors.append(type(exc).__name__)
                continue
            if disposition is Disposition.DONE:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def _settle(pipeline: _Pipeline, ids: Sequence[str], until: float) -> list[RecordStatus | None]:
    """Wait (bounded) until every deferred request has ended; their states at that point."""
    store = pipeline.records()
    while True:
        statuses = [record.status if (record := store.get(i)) else None for i in ids]
        if all(s in TERMINAL for s in statuses) or time.monotonic() >= until:
            return statuses
        time.sleep(0.25)


@dataclass(frozen=True, slots=True)
class Tally:
    """How the requests of one strategy ended, as its callers (or the records) tell it."""

    requests: int
    succeeded: int
    unfinished: int
    deferred: int = 0

    @classmethod
    def of(cls, results: Sequence[str]) -> Tally:
        return cls(len(results), results.count("succeeded"), results.count("unfinished"))


@contextmanager
def atomic_dynamodb_items() -> Iterator[None]:
    """Make moto apply each DynamoDB item operation atomically, as DynamoDB does.

    moto checks a write's condition and then writes, in two steps: two caller threads could
    both pass ``version = 7`` and book one send slot twice, and Kisi would answer 429 to a
    double booking that DynamoDB would never have made.
    """
    from moto.dynamodb.models import DynamoDBBackend  # noqa: PLC0415 - moto only here

    lock = threading.RLock()
    originals = {name: getattr(DynamoDBBackend, name) for name in MOTO_ITEM_OPERATIONS}

    def serialised(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return original(*args, **kwargs)
        return call

    for name, original in originals.items():
        setattr(DynamoDBBackend, name, serialised(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(DynamoDBBackend, name, original)


def run_gateway(base_url: str, paths: Sequence[str], stop_at: float, seed: int) -> Tally:
    """The pipeline on moto in this process: caller threads and worker threads."""
    from moto import mock_aws  # noqa: PLC0415 - only this strategy needs it

    with aws_environment(), mock_aws(), atomic_dynamodb_items():
        dynamodb, sqs, kms = aws_client("dynamodb"), aws_client("sqs"), aws_client("kms")
        urls = create_resources(dynamodb, sqs)
        settings = Settings.from_env({
            "KISI_BASE_URL": base_url, "REQUESTS_TABLE": "requests", "BUDGET_TABLE": "budget",
            "GUARD_TABLE": "guard", "TENANTS_TABLE": "tenants", "RETRY_QUEUE_URL": urls["queue"],
            "DLQ_URL": urls["dlq"], "KISI_API_KEY_SECRET": "service-login",
            "CREDENTIAL_KEY_ID": kms.create_key()["KeyMetadata"]["KeyId"],
        })
        clients = {"dynamodb": dynamodb, "sqs": sqs, "kms": kms}
        pipeline = _Pipeline(base_url, settings, clients, seed)
        stop = threading.Event()
        errors: list[str] = []
        deferred: list[str] = []
        workers = [threading.Thread(target=_worker_loop, args=(pipeline, stop, errors),
                                    daemon=True) for _ in range(WORKERS)]
        for thread in workers:
            thread.start()
        try:
            results = run_callers(paths, CALLERS, lambda: _gateway_work(pipeline, deferred),
                                  stop_at)
            finals = _settle(pipeline, list(deferred), stop_at + GRACE_S)
        finally:
            stop.set()
            for thread in workers:
                thread.join(timeout=GRACE_S)
    if errors:
        logging.getLogger(__name__).warning("retry worker errors: %s", errors[:5])
    inline = Tally.of([r for r in results if r != "deferred"])
    return Tally(
        requests=len(results),
        succeeded=inline.succeeded + finals.count(RecordStatus.SUCCEEDED),
        unfinished=inline.unfinished + sum(1 for s in finals if s not in TERMINAL),
        deferred=len(deferred),
    )


def run_realtime(
    requests_n: int = REQUESTS, hard_stop_s: float = HARD_STOP_S, seed: int = 7
) -> list[RealtimeFigures]:
    """Each strategy in turn against one simulator (reset in between: fresh bucket, stats)."""
    paths = read_paths(requests_n)
    env = {"KISI_SIM_LATENCY_MS": str(LATENCY_MS)}
    noisy = logging.getLogger("kisi_gateway")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    figures = []
    try:
        with simproc.simulator_process(env) as url:
            strategies: list[tuple[str, Callable[[float], Tally]]] = [
                ("gateway", lambda stop: run_gateway(url, paths, stop, seed)),
                ("immediate", lambda stop: Tally.of(run_callers(
                    paths, CALLERS, lambda: immediate_work(url), stop))),
                ("urllib3", lambda stop: Tally.of(run_callers(
                    paths, CALLERS, lambda: urllib3_work(url), stop))),
            ]
            for name, runner in strategies:
                simproc.reset(url)
                started = time.monotonic()
                tally = runner(started + hard_stop_s)
                wall_s = time.monotonic() - started
                stats = simproc.stats(url)
                figures.append(RealtimeFigures(
                    strategy=name, requests=tally.requests, succeeded=tally.succeeded,
                    unfinished=tally.unfinished, deferred=tally.deferred,
                    attempts=stats["total"], rate_limited=stats["rate_limited"],
                    wall_s=wall_s,
                    peak_per_s=peak_per_second([entry["at"] for entry in stats["requests"]]),
                ))
    finally:
        noisy.setLevel(level)
    return figures


def main() -> None:
    for f in run_realtime():
        print(f"{f.strategy:10} ok {f.succeeded}/{f.requests} attempts {f.attempts} "
              f"429 {f.rate_limited} ({f.rate_limited_pct:.1f}%) att/ok "
              f"{f.attempts_per_success:.2f} deferred {f.deferred} wall {f.wall_s:.1f}s")


if __name__ == "__main__":
    main()
