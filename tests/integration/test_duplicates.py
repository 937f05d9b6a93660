"""Duplicates and concurrency: many deliveries or callers at once, still one call to Kisi.

SQS delivers at least once, and API callers retry: the gateway's conditional writes in the
request record (``claim``, ``add_attempt``, ``create``) must make each attempt happen once
however many Lambdas race for it. Each thread below is one Lambda execution environment
with its own boto3 clients, stores, guard cache and Kisi session, all over one moto
backend and one simulator.

DynamoDB applies each write atomically, condition and all; moto checks the condition and
writes in separate steps, so threads can interleave inside one call. One lock around moto's
item operations gives moto DynamoDB's atomicity (as tests/integration/test_budget_dynamo.py
does), so these tests check the gateway's conditions, not moto's thread safety.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
import pytest

from kisi_gateway.core.records import RecordStatus, RetryMessage
from kisi_gateway.pipeline.calls import parse_call
from kisi_gateway.pipeline.replies import Reply
from kisi_gateway.pipeline.retrying import Disposition
from tests.harness import REGION, Gateway, atomic_moto_dynamodb, gateway

pytestmark = pytest.mark.xdist_group("moto")

LAMBDAS = 8
ASYNC = {"Prefer": "respond-async"}
ADA = {"user": {"name": "Ada", "email": "ada@example.com"}}
T = TypeVar("T")


@pytest.fixture(autouse=True)
def atomic_dynamodb(monkeypatch: pytest.MonkeyPatch) -> None:
    atomic_moto_dynamodb(monkeypatch)


class Lambda:
    """One execution environment: its own clients and stores (built in the main thread, as
    boto3's default session is not safe to build clients from in many threads at once)."""

    def __init__(self, gw: Gateway) -> None:
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        self.sender, self.forwarder, self.worker = gw.build_lambda(dynamodb, sqs)


def all_at_once(jobs: list[Callable[[], T]]) -> list[T]:
    """Run the jobs in as many threads, released together by a barrier."""
    barrier = threading.Barrier(len(jobs))

    def run(job: Callable[[], T]) -> T:
        barrier.wait(timeout=10)
        return job()

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        return [future.result(timeout=30) for future in futures]


@pytest.fixture
def gw(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    # A budget wide enough that no Lambda is refused a slot: the race is for the record.
    with gateway(monkeypatch, env={"SEND_RATE": "100"}) as gw:
        yield gw


def queued_create(gw: Gateway, *, outage_goes_on: bool = False) -> tuple[str, dict[str, Any]]:
    """A ``POST /users`` deferred by a Kisi 503, due now; its SQS message, received."""
    gw.sim.update_faults({"outage_seconds": 3600})
    reply = gw.call("POST", "/users", body=ADA, headers=ASYNC)
    assert reply.status == 202
    if not outage_goes_on:
        gw.sim.update_faults({"outage_until": None})
    request_id = reply.json()["request_id"]
    next_at = gw.record(request_id).next_attempt_at
    assert next_at is not None
    gw.clock.t = next_at + 0.001
    [message] = gw.receive()
    return request_id, message


def test_one_message_delivered_to_eight_lambdas_at_once_calls_kisi_once(gw: Gateway) -> None:
    request_id, message = queued_create(gw)
    parsed = RetryMessage.from_json(message["Body"])
    lambdas = [Lambda(gw) for _ in range(LAMBDAS)]
    results = all_at_once([
        functools.partial(each.worker.process, parsed, message["ReceiptHandle"])
        for each in lambdas
    ])
    assert len(gw.sim.calls("POST", "/users")) == 1
    assert gw.kisi_calls("POST", "/users") == 2  # the first 503, then the one create
    # The winner is DONE; the others saw the attempt claimed (LATER), the request ended
    # (DONE), or lost the send budget's optimistic write five times and requeued a copy
    # to wait (DONE, no attempt spent).
    assert Disposition.DONE in results
    record = gw.record(request_id)
    assert record.status is RecordStatus.SUCCEEDED
    assert [a.cls for a in record.attempts] == ["server_error", "success"]
    gw.sqs.delete_message(QueueUrl=gw.names["queue"], ReceiptHandle=message["ReceiptHandle"])
    gw.run_retries()  # any copies requeued while waiting for the budget end as duplicates
    assert len(gw.sim.calls("POST", "/users")) == 1


def test_eight_copies_of_a_message_in_parallel_then_redelivered_call_kisi_once(
    gw: Gateway,
) -> None:
    request_id, message = queued_create(gw)
    for _ in range(LAMBDAS - 1):  # SQS at-least-once: the same body, more copies
        gw.sqs.send_message(QueueUrl=gw.names["queue"], MessageBody=message["Body"])
    copies = [message]
    while len(copies) < LAMBDAS:
        copies += gw.receive()
    lambdas = [Lambda(gw) for _ in range(LAMBDAS)]

    def process(each: Lambda, copy: dict[str, Any]) -> Disposition:
        parsed = RetryMessage.from_json(copy["Body"])
        disposition = each.worker.process(parsed, copy["ReceiptHandle"])
        if disposition is Disposition.DONE:
            gw.sqs.delete_message(QueueUrl=gw.names["queue"], ReceiptHandle=copy["ReceiptHandle"])
        return disposition

    all_at_once([functools.partial(process, each, copy)
                 for each, copy in zip(lambdas, copies, strict=True)])
    # The copies left behind come back after their visibility timeout and end as duplicates.
    gw.run_retries()
    assert len(gw.sim.calls("POST", "/users")) == 1
    assert gw.record(request_id).status is RecordStatus.SUCCEEDED
    assert gw.queue_depth("queue") == gw.queue_depth("dlq") == 0


def test_eight_deliveries_during_an_outage_make_one_attempt(gw: Gateway) -> None:
    request_id, message = queued_create(gw, outage_goes_on=True)
    parsed = RetryMessage.from_json(message["Body"])
    lambdas = [Lambda(gw) for _ in range(LAMBDAS)]
    results = all_at_once([
        functools.partial(each.worker.process, parsed, message["ReceiptHandle"])
        for each in lambdas
    ])
    assert gw.kisi_calls("POST", "/users") == 2  # the deferral's 503 and one retry
    assert Disposition.LATER in results  # the winner, its message postponed
    record = gw.record(request_id)
    assert record.status is RecordStatus.QUEUED
    assert [a.cls for a in record.attempts] == ["server_error", "server_error"]
    # When Kisi is back, the postponed message and any copies finish it, once.
    gw.sim.update_faults({"outage_until": None})
    gw.run_retries()
    done = gw.record(request_id)
    assert [a.cls for a in done.attempts] == ["server_error", "server_error", "success"]
    assert gw.kisi_calls("POST", "/users") == 3
    assert len(gw.sim.calls("POST", "/users")) == 1


def forward(gw: Gateway, each: Lambda, headers: dict[str, str]) -> Reply:
    settings = gw.settings
    call = parse_call(
        method="POST", path="/users", query=[], body='{"user": {"name": "Ada", '
        '"email": "ada@example.com"}}', is_base64=False, headers=headers,
        policies=settings.policies, max_body_bytes=settings.max_body_bytes,
        default_wait_s=settings.default_wait_s, max_wait_s=settings.max_wait_s,
    )
    return each.forwarder.forward(call, gw.context())


@pytest.mark.parametrize("outage", [False, True], ids=["kisi-up", "kisi-503"])
def test_one_idempotency_key_from_eight_callers_at_once_calls_kisi_once(
    gw: Gateway, outage: bool
) -> None:
    if outage:
        gw.sim.update_faults({"outage_seconds": 3600})
    headers = {"Idempotency-Key": "create-ada-once", **(ASYNC if outage else {})}
    lambdas = [Lambda(gw) for _ in range(LAMBDAS)]
    replies = all_at_once([functools.partial(forward, gw, each, headers) for each in lambdas])
    assert gw.kisi_calls("POST", "/users") == 1
    request_ids = {reply.headers["X-Gateway-Request-Id"] for reply in replies}
    assert len(request_ids) == 1
    first = [r for r in replies if "Idempotent-Replayed" not in r.headers]
    assert len(first) == 1  # exactly one caller's call went to Kisi
    expected = 202 if outage else 200
    assert first[0].status == expected
    for reply in replies:
        if reply.status == 409:
            assert reply.json() == {
                "error": "a request with this Idempotency-Key is in progress", "code": "9e0490"}
            assert int(reply.headers["Retry-After"]) >= 1
        else:
            assert reply.status == expected
            assert reply.status == 202 or reply.body == first[0].body
    # Later repeats replay the result; Kisi still saw one create.
    if outage:
        gw.sim.update_faults({"outage_until": None})
        gw.run_retries()
    again = forward(gw, Lambda(gw), headers)
    assert again.status == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(gw.sim.calls("POST", "/users")) == 1
