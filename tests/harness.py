"""A whole gateway in one process for tests: moto as AWS, the Kisi simulator on 127.0.0.1.

Time is a :class:`FakeClock` shared by the pipeline, the simulator's rate limiter and moto's
SQS (its delays and visibility timeouts read the same clock), so a test moves time forward
instead of sleeping, and every delay is exact.
"""

from __future__ import annotations

import functools
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from kisi_gateway.config import Settings
from kisi_gateway.core.identity import Credential, KisiLogin, identity_of
from kisi_gateway.core.records import RequestRecord, RetryMessage
from kisi_gateway.pipeline.calls import parse_call
from kisi_gateway.pipeline.forwarding import CallContext, Forwarder
from kisi_gateway.pipeline.kisi_http import KisiClient, Timeouts, same_origin
from kisi_gateway.pipeline.replies import Reply, location_rewriter
from kisi_gateway.pipeline.retrying import Disposition, RetryWorker
from kisi_gateway.pipeline.sending import Sender
from kisi_gateway.pipeline.telemetry import MemorySink, Telemetry
from kisi_gateway.stores.directory import DynamoDirectory
from kisi_gateway.wiring import build_pipeline
from kisi_sim import DEMO_KEY, KisiSimulator, SimConfig

START = 1_800_000_000.0
REGION = "us-east-1"
SCOPE = "caller-scope"  # the calling API key's id
IDENTITY_KEY = b"identity-key-of-the-test-stack"


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll a condition that another thread makes true (bounded; not a way to wait out delays)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class FakeClock:
    """``now`` only moves when a test, or a ``sleep``, moves it."""

    def __init__(self, start: float = START) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.t += seconds


def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and a region, so boto3 never looks for real ones."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


MOTO_ITEM_OPERATIONS = ("get_item", "put_item", "update_item", "delete_item", "batch_get_item",
                        "transact_write_items", "scan")


def atomic_moto_dynamodb(
    monkeypatch: pytest.MonkeyPatch, operations: tuple[str, ...] = MOTO_ITEM_OPERATIONS
) -> None:
    """Serialise moto's DynamoDB item operations, as DynamoDB applies each one atomically.

    moto checks a condition and writes in separate steps (and copies whole tables during a
    transaction), so threads could interleave inside one call. With this, threaded tests
    check the gateway's conditional writes, not moto's thread safety.
    """
    from moto.dynamodb.models import DynamoDBBackend  # noqa: PLC0415

    lock = threading.RLock()
    for name in operations:
        original = getattr(DynamoDBBackend, name)

        @functools.wraps(original)
        def atomic(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(*args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, atomic)


def drive_moto_sqs_clock(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """Make moto's SQS delays and visibility timeouts follow ``clock``."""
    import moto.sqs.models as sqs_models  # noqa: PLC0415

    monkeypatch.setattr(sqs_models, "unix_time", lambda *a: clock.now())
    monkeypatch.setattr(sqs_models, "unix_time_millis", lambda *a: clock.now() * 1000.0)


def create_hash_table(dynamodb: Any, name: str, key: str) -> None:
    """A table as template.yaml declares them: one string hash key, on demand."""
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
    )


def create_tables_and_queues(dynamodb: Any, sqs: Any) -> dict[str, str]:
    """The resources of template.yaml that the pipeline uses, as the template declares them."""
    names = {"requests": "requests", "budget": "budget", "guard": "guard", "tenants": "tenants"}
    for table, key in (("requests", "request_id"), ("budget", "pk"), ("guard", "scope"),
                       ("tenants", "pk")):
        create_hash_table(dynamodb, table, key)
    dlq = sqs.create_queue(QueueName="retry-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    queue = sqs.create_queue(
        QueueName="retry",
        Attributes={
            "VisibilityTimeout": "180",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 15}),
        },
    )["QueueUrl"]
    return {**names, "queue": queue, "dlq": dlq}


def stack_env(names: dict[str, str], kms: Any) -> dict[str, str]:
    """The environment template.yaml gives the functions, for these tables and queues."""
    key_id = kms.create_key(Description="caller credentials")["KeyMetadata"]["KeyId"]
    return {
        "REQUESTS_TABLE": names["requests"], "BUDGET_TABLE": names["budget"],
        "GUARD_TABLE": names["guard"], "TENANTS_TABLE": names["tenants"],
        "RETRY_QUEUE_URL": names["queue"], "DLQ_URL": names["dlq"],
        "CREDENTIAL_KEY_ID": key_id, "KISI_API_KEY_SECRET": "service-login",
    }


@dataclass
class Gateway:
    """The pipeline wired to moto and the simulator, plus helpers to drive it."""

    clock: FakeClock
    sim: KisiSimulator
    settings: Settings
    sqs: Any
    dynamodb: Any
    names: dict[str, str]
    sink: MemorySink
    rng: random.Random
    kms: Any
    forwarder: Forwarder = field(init=False)
    worker: RetryWorker = field(init=False)
    sender: Sender = field(init=False)
    kisi_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.kisi_url = self.sim.url  # kept: a test may stop the simulator
        self.sender, self.forwarder, self.worker = self.build_lambda(self.dynamodb, self.sqs)
        self.know_login(DEMO_KEY, user_id=1, login_id=1)

    def identity(self, key: str | None = None) -> str:
        """The identity (guard scope) of a Kisi key sent as KISI-LOGIN (the service key)."""
        return identity_of(IDENTITY_KEY, Credential("KISI-LOGIN", key or DEMO_KEY))

    def know_login(self, key: str, user_id: int, login_id: int) -> None:
        """Tell the directory what ``GET /login`` says of ``key``, as an earlier call would
        have: tests that count Kisi calls count their own, not the one-off lookup."""
        identity = identity_of(IDENTITY_KEY, Credential("KISI-LOGIN", key))
        DynamoDirectory(self.dynamodb, self.names["tenants"]).remember_login(
            identity, KisiLogin(user_id, login_id), self.clock.now() + 10 * 86_400)

    def build_lambda(self, dynamodb: Any, sqs: Any) -> tuple[Sender, Forwarder, RetryWorker]:
        """The pieces one execution environment holds, over the clients it is given."""
        clients = {"dynamodb": dynamodb, "sqs": sqs, "kms": self.kms}
        pipeline = build_pipeline(
            self.settings, aws=clients.__getitem__,
            kisi=lambda: KisiClient(
                self.kisi_url,
                timeouts=Timeouts(self.settings.connect_timeout_s, self.settings.read_timeout_s),
            ),
            clock=self.clock, rng=self.rng.random, telemetry=Telemetry(self.sink),
            secrets=lambda secret_id, refresh: DEMO_KEY, key=IDENTITY_KEY,
        )
        return pipeline.sender, pipeline.forwarder, pipeline.worker

    def context(
        self, prefix: str = "/Prod", scope: str = SCOPE, authorization: str | None = None
    ) -> CallContext:
        """How api_call sees a call from caller ``scope`` (its API key id)."""
        rewrite = location_rewriter(lambda url: same_origin(url, self.kisi_url), prefix)
        return CallContext(scope, authorization, prefix, rewrite)

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        query: list[tuple[str, str]] | None = None,
        scope: str = SCOPE,
        authorization: str | None = None,
    ) -> Reply:
        """Forward a call as api_call would (validation included)."""
        raw = body if isinstance(body, str) or body is None else json.dumps(body)
        call = parse_call(
            method=method, path=path, query=query or [], body=raw, is_base64=False,
            headers=headers or {}, policies=self.settings.policies,
            max_body_bytes=self.settings.max_body_bytes,
            default_wait_s=self.settings.default_wait_s, max_wait_s=self.settings.max_wait_s,
        )
        return self.forwarder.forward(
            call, self.context(scope=scope, authorization=authorization))

    def record(self, request_id: str) -> RequestRecord:
        record = self.forwarder.records.get(request_id)
        assert record is not None, f"no record {request_id}"
        return record

    def receive(self, queue: str = "queue", limit: int = 10) -> list[dict[str, Any]]:
        answer = self.sqs.receive_message(
            QueueUrl=self.names[queue], MaxNumberOfMessages=limit, WaitTimeSeconds=0,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        )
        return list(answer.get("Messages", []))

    def deliver(self) -> list[Disposition]:
        """One poll of the retry queue, processed as the worker Lambda would (delete on DONE)."""
        results = []
        for message in self.receive():
            parsed = RetryMessage.from_json(message["Body"])
            disposition = self.worker.process(parsed, message["ReceiptHandle"])
            if disposition is Disposition.DONE:
                self.sqs.delete_message(
                    QueueUrl=self.names["queue"], ReceiptHandle=message["ReceiptHandle"]
                )
            results.append(disposition)
        return results

    def next_due(self) -> float | None:
        """When the next retry message becomes receivable (read from moto's queue)."""
        from moto.sqs.models import sqs_backends  # noqa: PLC0415

        queue = sqs_backends["123456789012"][REGION].queues["retry"]
        times = [max(m.visible_at, m.delayed_until) / 1000.0 for m in queue._messages]
        return min(times) if times else None

    def run_retries(self, max_deliveries: int = 500) -> int:
        """Deliver, jumping time to each next due message, until the queue is empty."""
        deliveries = 0
        while deliveries < max_deliveries:
            done = self.deliver()
            deliveries += len(done)
            if done:
                continue
            due = self.next_due()
            if due is None:
                return deliveries
            self.clock.t = max(self.clock.t, due) + 0.001
        raise AssertionError("retries did not finish within the delivery limit")

    def queue_depth(self, queue: str) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.names[queue],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    def kisi_calls(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests reached the simulator (answered or not)."""
        return sum(
            1 for entry in self.sim.stats()["requests"]
            if (method is None or entry["method"] == method)
            and (path is None or entry["path"] == path)
        )


@contextmanager
def gateway(
    monkeypatch: pytest.MonkeyPatch,
    *,
    env: dict[str, str] | None = None,
    sim_config: SimConfig | None = None,
    seed: int = 7,
) -> Iterator[Gateway]:
    """Start moto and the simulator, both on the fake clock, and wire the pipeline to them."""
    from moto import mock_aws  # noqa: PLC0415

    aws_env(monkeypatch)
    clock = FakeClock()
    drive_moto_sqs_clock(monkeypatch, clock)
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        kms = boto3.client("kms", region_name=REGION)
        names = create_tables_and_queues(dynamodb, sqs)
        settings = Settings.from_env({**stack_env(names, kms), "READ_TIMEOUT_S": "2",
                                      **(env or {})})
        sim = KisiSimulator(sim_config, clock=clock.now, wall_clock=clock.now,
                            rng=random.Random(seed))
        with sim:
            yield Gateway(clock, sim, settings, sqs, dynamodb, names, MemorySink(),
                          random.Random(seed), kms)
