"""Fault injection: DynamoDB, SQS and Kisi failing at each step of api_call and retry_worker.

The gateway runs on moto and the Kisi simulator (tests.harness), but each store gets its own
boto3 client wrapped in a :class:`FaultyClient` that raises on chosen calls, as DynamoDB and
SQS do when they throttle, fail inside, or cannot be reached. What every test checks:

- the caller gets a Kisi-shaped 503 with ``Retry-After``, Kisi's own answer, or a 202, and
  never a 500 (``Forwarder.forward`` never raises);
- or the request stays queued: the worker's exception is a batch item failure, so the
  message is not deleted, comes back after the queue's visibility timeout and is finished;
- no request is lost, and a create (``POST /users``, policy ``create``) reaches Kisi at most
  once (``sim.calls`` counts what Kisi processed).

Time is the harness's fake clock; the only real waits are the simulator's short hangs
(a read timeout of 0.2 s) and bounded polls for the simulator's own thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from kisi_gateway.core.outcome import classify_status
from kisi_gateway.core.records import RecordStatus, RequestRecord, RetryMessage
from kisi_gateway.pipeline.forwarding import Forwarder
from kisi_gateway.pipeline.kisi_http import KisiClient, Timeouts
from kisi_gateway.pipeline.replies import Reply
from kisi_gateway.pipeline.retrying import Disposition, RetryWorker
from kisi_gateway.pipeline.sending import Sender
from kisi_gateway.pipeline.telemetry import Telemetry
from kisi_gateway.stores.budget import DynamoSendBudget
from kisi_gateway.stores.guard import DynamoGuard
from kisi_gateway.stores.queue import SqsRetryQueue
from kisi_gateway.stores.records import DynamoRecordStore
from kisi_sim import SimConfig
from tests.harness import REGION, Gateway, gateway, wait_for

pytestmark = pytest.mark.xdist_group("moto")

ASYNC = {"Prefer": "respond-async"}
ADA = {"user": {"name": "Ada", "email": "ada@example.com"}}
CLAIM_LEASE_S = 60  # RetryWorker.claim_lease_s

# --- injected failures ----------------------------------------------------------------------

ErrorFactory = Callable[[str], Exception]


def aws_error(code: str, status: int) -> ErrorFactory:
    def make(operation: str) -> Exception:
        return ClientError(
            {"Error": {"Code": code, "Message": "injected fault"},
             "ResponseMetadata": {"HTTPStatusCode": status}},
            operation,
        )

    return make


def unreachable(operation: str) -> Exception:
    return EndpointConnectionError(endpoint_url=f"https://aws.invalid/{operation}")


ERRORS: dict[str, ErrorFactory] = {
    "throughput": aws_error("ProvisionedThroughputExceededException", 400),
    "throttling": aws_error("ThrottlingException", 400),
    "internal": aws_error("InternalServerError", 500),
    "unreachable": unreachable,
}


@dataclass
class _Plan:
    error: ErrorFactory
    skip: int
    times: int


class FaultyClient:
    """A boto3 client whose chosen operations raise: ``fail("get_item", error, skip=1)``
    lets the next call of ``get_item`` through and makes the one after it raise."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._plans: dict[str, _Plan] = {}
        self.raised: list[str] = []

    def fail(self, operation: str, error: ErrorFactory, *, skip: int = 0, times: int = 1) -> None:
        self._plans[operation] = _Plan(error, skip, times)

    def heal(self) -> None:
        self._plans.clear()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            plan = self._plans.get(name)
            if plan is not None:
                if plan.skip > 0:
                    plan.skip -= 1
                elif plan.times > 0:
                    plan.times -= 1
                    self.raised.append(name)
                    raise plan.error(name)
            return attribute(*args, **kwargs)

        return call


@dataclass
class Stores:
    """One faulty client per store, as each store would see its own AWS trouble."""

    records: FaultyClient
    budget: FaultyClient
    guard: FaultyClient
    sqs: FaultyClient
    clean_records: DynamoRecordStore = field(init=False)


def rewire(gw: Gateway) -> Stores:
    """Replace the harness's forwarder and worker with ones built on faulty clients.

    Built the way tests.harness builds them, one client per store.
    """
    def dynamodb() -> FaultyClient:
        return FaultyClient(boto3.client("dynamodb", region_name=REGION))

    stores = Stores(dynamodb(), dynamodb(), dynamodb(),
                    FaultyClient(boto3.client("sqs", region_name=REGION)))
    stores.clean_records = DynamoRecordStore(gw.dynamodb, gw.names["requests"])
    settings = gw.settings
    sender = Sender(
        kisi_factory=lambda: KisiClient(
            gw.kisi_url, timeouts=Timeouts(settings.connect_timeout_s, settings.read_timeout_s),
        ),
        budget=DynamoSendBudget(
            stores.budget, gw.names["budget"],
            rate=settings.send_rate, route_rates=settings.rates(),
        ),
        guard=DynamoGuard(
            stores.guard, gw.names["guard"],
            consecutive_401_threshold=settings.guard_401_threshold,
            cooldown_s=settings.guard_cooldown_s, cache_s=settings.guard_cache_s,
        ),
        telemetry=Telemetry(gw.sink),
        clock=gw.clock,
        rng=gw.rng.random,
        directory=gw.sender.directory,
    )
    records = DynamoRecordStore(stores.records, gw.names["requests"])
    callers, vault = gw.forwarder.callers, gw.forwarder.vault
    queue = SqsRetryQueue(stores.sqs, gw.names["queue"], gw.names["dlq"])
    gw.sender = sender
    gw.forwarder = Forwarder(
        sender=sender, records=records, queue=queue, callers=callers, vault=vault,
        record_ttl_s=7 * 86_400, read_timeout_s=settings.read_timeout_s,
    )
    gw.worker = RetryWorker(sender=sender, records=records, queue=queue,
                            policies=settings.policies, callers=callers, vault=vault)
    return stores


# --- the worker Lambda, as Powertools' batch processor runs it -------------------------------


def deliver(gw: Gateway) -> list[str]:
    """One poll of the retry queue: DONE deletes the message; LATER leaves it; an exception
    is a batch item failure (the message is left, visible again after the queue's
    visibility timeout)."""
    results: list[str] = []
    for message in gw.receive():
        parsed = RetryMessage.from_json(message["Body"])
        try:
            disposition = gw.worker.process(parsed, message["ReceiptHandle"])
        except Exception as exc:  # what the batch processor does with any error
            results.append(f"error:{type(exc).__name__}")
            continue
        if disposition is Disposition.DONE:
            gw.sqs.delete_message(QueueUrl=gw.names["queue"],
                                  ReceiptHandle=message["ReceiptHandle"])
        results.append(disposition.value)
    return results


def drain(gw: Gateway, limit: int = 100) -> list[str]:
    """Deliver, jumping the clock to each next due message, until the queue is empty."""
    results: list[str] = []
    while len(results) < limit:
        done = deliver(gw)
        results += done
        if done:
            continue
        due = gw.next_due()
        if due is None:
            return results
        gw.clock.t = max(gw.clock.t, due) + 0.001
    raise AssertionError(f"the retry queue did not drain: {results}")


def due_now(gw: Gateway, request_id: str, stores: Stores) -> None:
    """Move the clock to the queued request's next attempt (its message is visible then)."""
    record = stores.clean_records.get(request_id)
    assert record is not None
    assert record.next_attempt_at is not None
    gw.clock.t = max(gw.clock.t, record.next_attempt_at) + 0.001


def record_of(stores: Stores, request_id: str) -> RequestRecord:
    record = stores.clean_records.get(request_id)
    assert record is not None, f"no record {request_id}"
    return record


# --- what callers must get --------------------------------------------------------------------


def assert_retry_later(reply: Reply) -> int:
    """A Kisi-shaped 503 the caller may retry; returns its Retry-After in seconds."""
    assert reply.status == 503, reply.body
    assert set(reply.json()) == {"error", "code"}
    assert reply.json()["code"] == "9e0530"
    assert reply.headers["Content-Type"] == "application/json"
    retry_after = int(reply.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


def assert_kisi_shaped(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply.body
    assert set(reply.json()) == {"error", "code"}
    assert reply.json()["code"] == code


def created(gw: Gateway) -> int:
    """How many users Kisi created (processed ``POST /users``)."""
    return len(gw.sim.calls("POST", "/users"))


# --- api_call: a store fails before anything was sent -----------------------------------------

BEFORE_SENDING = [
    # step, store, operation, with an Idempotency-Key
    ("idempotency-record-read", "records", "get_item", True),
    ("idempotency-record-create", "records", "put_item", True),
    ("budget-read", "budget", "get_item", False),
    ("budget-reservation-write", "budget", "update_item", False),
]


@pytest.mark.parametrize("error", list(ERRORS.values()), ids=list(ERRORS))
@pytest.mark.parametrize(("step", "store", "operation", "keyed"), BEFORE_SENDING,
                         ids=[row[0] for row in BEFORE_SENDING])
def test_store_failure_before_sending_answers_503_and_the_retry_goes_through(
    monkeypatch, step, store, operation, keyed, error
) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        headers = {"Idempotency-Key": f"create-ada-{step}"} if keyed else {}
        # Given the store fails once at this step
        getattr(stores, store).fail(operation, error)
        # When a create is forwarded
        reply = gw.call("POST", "/users", body=ADA, headers=headers)
        # Then the caller is told to retry, and nothing reached Kisi
        retry_after = assert_retry_later(reply)
        assert getattr(stores, store).raised == [operation]
        assert gw.kisi_calls() == 0
        assert gw.queue_depth("queue") == 0
        # And the caller's retry after Retry-After creates the user, once
        gw.clock.advance(retry_after)
        again = gw.call("POST", "/users", body=ADA, headers=headers)
        assert again.status == 200
        assert again.json()["name"] == "Ada"
        assert created(gw) == 1


@pytest.mark.parametrize("error", [ERRORS["internal"], ERRORS["unreachable"]],
                         ids=["internal", "unreachable"])
def test_budget_store_down_answers_503_until_it_recovers(monkeypatch, error) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        stores.budget.fail("get_item", error, times=1000)
        for _ in range(3):
            assert_retry_later(gw.call("POST", "/locks/1/unlock"))
            gw.clock.advance(2)
        assert gw.kisi_calls() == 0  # fails closed: nothing is sent without the budget
        stores.budget.heal()
        assert gw.call("POST", "/locks/1/unlock").status == 200
        assert len(gw.sim.calls("POST", "/locks/1/unlock")) == 1


@pytest.mark.parametrize("error", [ERRORS["throttling"], ERRORS["unreachable"]],
                         ids=["throttling", "unreachable"])
@pytest.mark.parametrize(("path", "status"), [("/locks/1", 200), ("/locks/99999", 403)])
def test_guard_store_down_fails_open(monkeypatch, error, path, status) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        for operation in ("batch_get_item", "get_item", "update_item"):
            stores.guard.fail(operation, error, times=1000)
        for _ in range(3):
            reply = gw.call("GET", path)
            assert reply.status == status  # Kisi's own answer: the guard did not stop it
            gw.clock.advance(1)
        assert "batch_get_item" in stores.guard.raised
        assert gw.kisi_calls("GET", path) == 3


# --- api_call: a store fails after Kisi answered ----------------------------------------------


@pytest.mark.parametrize("error", [ERRORS["throughput"], ERRORS["unreachable"]],
                         ids=["throughput", "unreachable"])
def test_final_record_write_failure_still_answers_kisis_result(monkeypatch, error) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        key = {"Idempotency-Key": "create-ada"}
        stores.records.fail("update_item", error)  # the final write of a keyed call
        reply = gw.call("POST", "/users", body=ADA, headers=key)
        assert stores.records.raised == ["update_item"]
        assert reply.status == 200
        assert reply.json()["name"] == "Ada"
        assert created(gw) == 1
        # A repeat of the key is told to wait, and is never sent to Kisi again.
        repeat = gw.call("POST", "/users", body=ADA, headers=key)
        assert_kisi_shaped(repeat, 409, "9e0490")
        assert int(repeat.headers["Retry-After"]) >= 1
        assert created(gw) == 1


def test_deferral_record_write_failure_answers_503_and_queues_nothing(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        gw.sim.update_faults({"outage_seconds": 3})
        stores.records.fail("put_item", ERRORS["internal"])  # the new record of a deferral
        reply = gw.call("POST", "/users", body=ADA, headers=ASYNC)
        retry_after = assert_retry_later(reply)
        assert gw.kisi_calls("POST", "/users") == 1  # the 503 that led to the deferral
        assert created(gw) == 0
        assert gw.queue_depth("queue") == 0
        assert gw.dynamodb.scan(TableName="requests")["Count"] == 0
        gw.clock.advance(max(retry_after, 3))
        again = gw.call("POST", "/users", body=ADA, headers=ASYNC)
        assert again.status == 200
        assert created(gw) == 1


def test_keyed_deferral_write_failure_answers_503_and_queues_nothing(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        gw.sim.update_faults({"outage_seconds": 3})
        stores.records.fail("update_item", ERRORS["throttling"])  # SENDING -> QUEUED
        reply = gw.call("POST", "/users", body=ADA,
                        headers={"Idempotency-Key": "create-ada", **ASYNC})
        assert_retry_later(reply)
        assert gw.queue_depth("queue") == 0
        assert created(gw) == 0


@pytest.mark.parametrize("error", [ERRORS["throttling"], ERRORS["unreachable"]],
                         ids=["throttling", "unreachable"])
def test_sqs_send_failure_answers_503_and_the_callers_retry_goes_through(
    monkeypatch, error
) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        gw.sim.update_faults({"outage_seconds": 3})
        stores.sqs.fail("send_message", error)
        reply = gw.call("POST", "/users", body=ADA, headers=ASYNC)
        retry_after = assert_retry_later(reply)
        assert stores.sqs.raised == ["send_message"]
        assert gw.queue_depth("queue") == 0
        assert created(gw) == 0
        gw.clock.advance(max(retry_after, 3))
        again = gw.call("POST", "/users", body=ADA, headers=ASYNC)
        assert again.status == 200
        assert created(gw) == 1


def test_sqs_send_failure_before_any_attempt_leaves_no_record(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        # The budget's gate is closed for 10 s (Kisi's Retry-After): deferred unsent.
        gw.sender.budget.observe("user-1", "POST /users", classify_status(429), 10.0,
                                 gw.clock.now())
        stores.sqs.fail("send_message", ERRORS["internal"])
        reply = gw.call("POST", "/users", body=ADA, headers=ASYNC)
        assert_retry_later(reply)
        assert gw.kisi_calls() == 0
        assert gw.dynamodb.scan(TableName="requests")["Count"] == 0


STUCK_KEY = [
    # step, store, operation, Kisi outage (so that the call is deferred)
    ("budget-read", "budget", "get_item", 0),
    ("budget-reservation-write", "budget", "update_item", 0),
    ("deferral-record-write", "records", "update_item", 3),
]


@pytest.mark.parametrize(("step", "store", "operation", "outage"), STUCK_KEY,
                         ids=[row[0] for row in STUCK_KEY])
def test_keyed_call_told_to_retry_after_a_store_failure_can_be_retried(
    monkeypatch, step, store, operation, outage
) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        if outage:
            gw.sim.update_faults({"outage_seconds": outage})
        headers = {"Idempotency-Key": f"create-ada-{step}", **ASYNC}
        getattr(stores, store).fail(operation, ERRORS["internal"])
        retry_after = assert_retry_later(gw.call("POST", "/users", body=ADA, headers=headers))
        # The caller waits as told (and longer: past the record's lease and the outage).
        gw.clock.advance(max(retry_after, outage) + 60)
        again = gw.call("POST", "/users", body=ADA, headers=headers)
        assert again.status == 200, again.body
        assert created(gw) == 1


def test_keyed_call_whose_message_could_not_be_queued_still_ends(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        gw.sim.update_faults({"outage_seconds": 3})
        headers = {"Idempotency-Key": "create-ada", **ASYNC}
        stores.sqs.fail("send_message", ERRORS["throttling"])
        first = gw.call("POST", "/users", body=ADA, headers=headers)
        request_id = first.headers["X-Gateway-Request-Id"]
        retry_after = assert_retry_later(first)
        gw.clock.advance(max(retry_after, 3))
        again = gw.call("POST", "/users", body=ADA, headers=headers)
        assert again.status in (200, 202)
        drain(gw)
        assert record_of(stores, request_id).status is RecordStatus.SUCCEEDED
        assert created(gw) == 1


def test_record_of_a_call_whose_message_could_not_be_queued_does_not_stay_queued(
    monkeypatch,
) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        gw.sim.update_faults({"outage_seconds": 3})
        stores.sqs.fail("send_message", ERRORS["internal"])
        reply = gw.call("POST", "/users", body=ADA, headers=ASYNC)
        assert_retry_later(reply)
        lookup = gw.forwarder.lookup(reply.headers["X-Gateway-Request-Id"], gw.context())
        assert lookup.status == 404 or lookup.json()["status"] != "queued"


# --- retry_worker: a store fails at each step -------------------------------------------------


def queued(
    gw: Gateway, stores: Stores, method: str = "POST", path: str = "/users",
    body: Any = ADA, *, outage_goes_on: bool = False,
) -> str:
    """A request deferred by a Kisi 503; the clock moved to its next attempt."""
    gw.sim.update_faults({"outage_seconds": 3600})
    reply = gw.call(method, path, body=body, headers=ASYNC)
    assert reply.status == 202
    if not outage_goes_on:
        gw.sim.update_faults({"outage_until": None})
    request_id = reply.json()["request_id"]
    due_now(gw, request_id, stores)
    return request_id


WORKER_BEFORE_SENDING = [
    ("record-read", "records", "get_item"),
    ("claim", "records", "update_item"),
    ("budget-read", "budget", "get_item"),
    ("budget-reservation-write", "budget", "update_item"),
]


@pytest.mark.parametrize("error", [ERRORS["throughput"], ERRORS["unreachable"]],
                         ids=["throughput", "unreachable"])
@pytest.mark.parametrize(("step", "store", "operation"), WORKER_BEFORE_SENDING,
                         ids=[row[0] for row in WORKER_BEFORE_SENDING])
def test_worker_store_failure_before_sending_keeps_the_message(
    monkeypatch, step, store, operation, error
) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        request_id = queued(gw, stores)
        getattr(stores, store).fail(operation, error)
        assert deliver(gw) == [f"error:{_store_error(store)}"]
        # Nothing was sent, no attempt spent, the message waits for its redelivery.
        assert created(gw) == 0
        record = record_of(stores, request_id)
        assert (record.status, record.attempt_count) == (RecordStatus.QUEUED, 1)
        assert gw.queue_depth("queue") == 1
        drain(gw)
        done = record_of(stores, request_id)
        assert done.status is RecordStatus.SUCCEEDED
        assert [a.cls for a in done.attempts] == ["server_error", "success"]
        assert created(gw) == 1
        assert gw.queue_depth("queue") == gw.queue_depth("dlq") == 0


def _store_error(store: str) -> str:
    return "BudgetUnavailableError" if store == "budget" else "RecordStoreError"


DIES_AFTER_KISI_ANSWERED = [
    # method, path, body, how the record ends, how many times Kisi processed it
    ("POST", "/users", ADA, RecordStatus.FAILED, "unknown_outcome", 1),
    ("GET", "/locks/1", None, RecordStatus.SUCCEEDED, None, 2),
    # The claim lease (60 s) outlasts the unlock's deadline (30 s): never repeated.
    ("POST", "/locks/1/unlock", None, RecordStatus.EXPIRED, "deadline", 1),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "reason", "processed"),
                         DIES_AFTER_KISI_ANSWERED, ids=["create", "read", "unlock"])
def test_worker_dying_after_kisi_answered_repeats_only_what_the_route_allows(
    monkeypatch, method, path, body, status, reason, processed
) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        request_id = queued(gw, stores, method, path, body)
        # Given the worker sends, Kisi answers 200, and the record write after it fails
        stores.records.fail("update_item", ERRORS["internal"], skip=1)  # claim, then this
        assert deliver(gw) == ["error:RecordStoreError"]
        assert len(gw.sim.calls(method, path)) == 1
        claimed = record_of(stores, request_id)
        assert (claimed.status, claimed.claimed_attempt) == (RecordStatus.QUEUED, 2)
        # When SQS redelivers the message after its visibility timeout (past the claim lease)
        due = gw.next_due()
        assert due is not None
        assert due - gw.clock.now() > CLAIM_LEASE_S
        drain(gw)
        # Then the record ends as the route's policy says
        record = record_of(stores, request_id)
        assert (record.status, record.reason) == (status, reason)
        assert len(gw.sim.calls(method, path)) == processed
        assert gw.queue_depth("queue") == 0
        if status is RecordStatus.SUCCEEDED:
            assert record.response is not None
            assert record.response.status == 200
            assert [a.cls for a in record.attempts] == ["server_error", "success"]
        else:
            dead = gw.receive("dlq")
            assert [m["MessageAttributes"]["reason"]["StringValue"] for m in dead] == [reason]
            lookup = gw.forwarder.lookup(request_id, gw.context()).json()
            assert (lookup["status"], lookup["reason"]) == (status.value, reason)


def test_postpone_failure_after_a_retryable_answer_keeps_each_attempt_once(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        request_id = queued(gw, stores, outage_goes_on=True)
        stores.sqs.fail("change_message_visibility", ERRORS["throttling"])
        assert deliver(gw) == ["error:QueueError"]
        record = record_of(stores, request_id)
        assert [a.cls for a in record.attempts] == ["server_error", "server_error"]
        assert record.status is RecordStatus.QUEUED
        gw.sim.update_faults({"outage_until": None})
        drain(gw)
        done = record_of(stores, request_id)
        assert done.status is RecordStatus.SUCCEEDED
        assert [a.cls for a in done.attempts] == ["server_error", "server_error", "success"]
        # Each attempt number reached Kisi once; the user was created once.
        assert gw.kisi_calls("POST", "/users") == len(done.attempts)
        assert created(gw) == 1


def test_dead_letter_send_failure_still_ends_the_request(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        gw.sim.update_faults({"outage_seconds": 5})
        doc = gw.call("POST", "/locks/3/unlock", headers=ASYNC).json()
        gw.clock.advance(45)  # past the unlock's 30 s deadline
        stores.sqs.fail("send_message", ERRORS["internal"])  # the dead-letter send
        assert deliver(gw) == ["error:QueueError"]
        # Dead-lettering comes first, so the failed send leaves the request open ...
        assert record_of(stores, doc["request_id"]).status is RecordStatus.QUEUED
        drain(gw)  # ... and the redelivery ends it, dead-lettered
        record = record_of(stores, doc["request_id"])
        assert (record.status, record.reason) == (RecordStatus.EXPIRED, "deadline")
        assert gw.queue_depth("queue") == 0
        assert gw.sim.calls("POST", "/locks/3/unlock") == []


def test_dead_letter_send_failure_still_dead_letters_the_request(monkeypatch) -> None:
    with gateway(monkeypatch) as gw:
        stores = rewire(gw)
        gw.sim.update_faults({"outage_seconds": 5})
        doc = gw.call("POST", "/locks/3/unlock", headers=ASYNC).json()
        gw.clock.advance(45)
        stores.sqs.fail("send_message", ERRORS["internal"])
        deliver(gw)
        drain(gw)
        dead = gw.receive("dlq")
        assert [json.loads(m["Body"])["request_id"] for m in dead] == [doc["request_id"]]


# --- Kisi times out after the request was sent (unknown outcome) ------------------------------

HANG = {"hang_ms": 600}  # longer than READ_TIMEOUT_S; the simulator acts after the hang
TIMEOUT_ENV = {"READ_TIMEOUT_S": "0.2"}


def test_create_timing_out_answers_504_and_is_never_repeated(monkeypatch) -> None:
    with gateway(monkeypatch, env=TIMEOUT_ENV) as gw:
        gw.sim.update_faults(HANG)
        key = {"Idempotency-Key": "create-ada"}
        reply = gw.call("POST", "/users", body=ADA, headers=key)
        assert_kisi_shaped(reply, 504, "9e0504")
        assert reply.headers["X-Gateway-Attempts"] == "1"
        assert wait_for(lambda: created(gw) == 1)
        assert gw.queue_depth("queue") == 0
        gw.sim.update_faults({"hang_ms": 0})
        repeat = gw.call("POST", "/users", body=ADA, headers=key)
        assert_kisi_shaped(repeat, 504, "9e0504")
        assert gw.kisi_calls("POST", "/users") == 1
        record = gw.record(reply.headers["X-Gateway-Request-Id"])
        assert (record.status, record.reason) == (RecordStatus.FAILED, "unknown_outcome")


def test_create_timing_out_in_the_worker_ends_failed_unknown_outcome(monkeypatch) -> None:
    with gateway(monkeypatch, env=TIMEOUT_ENV) as gw:
        stores = rewire(gw)
        request_id = queued(gw, stores)
        gw.sim.update_faults(HANG)
        assert deliver(gw) == ["done"]
        assert wait_for(lambda: created(gw) == 1)
        gw.sim.update_faults({"hang_ms": 0})
        drain(gw)
        record = record_of(stores, request_id)
        assert (record.status, record.reason) == (RecordStatus.FAILED, "unknown_outcome")
        assert [a.cls for a in record.attempts] == ["server_error", "network_error"]
        assert gw.kisi_calls("POST", "/users") == 2  # the 503, then the one that hung
        assert created(gw) == 1


def test_read_timing_out_is_retried(monkeypatch) -> None:
    with gateway(monkeypatch, env=TIMEOUT_ENV) as gw:
        stores = rewire(gw)
        gw.sim.update_faults(HANG)
        reply = gw.call("GET", "/locks/1", headers=ASYNC)
        assert reply.status == 202
        assert reply.json()["last_outcome"] == {"class": "network_error", "status": None}
        gw.sim.update_faults({"hang_ms": 0})
        drain(gw)
        record = record_of(stores, reply.json()["request_id"])
        assert record.status is RecordStatus.SUCCEEDED
        assert [a.cls for a in record.attempts] == ["network_error", "success"]
        assert wait_for(lambda: len(gw.sim.calls("GET", "/locks/1")) == 2)


API_GATEWAY_LIMIT_S = 29  # ApiCallFunction's Timeout; API Gateway's integration limit


def test_an_inline_attempt_never_starts_too_late_to_end_within_the_lambda_timeout(
    monkeypatch,
) -> None:
    sim = SimConfig(rate_per_s=0.05, burst=1)  # one request per 20 s
    with gateway(monkeypatch, env={"SEND_RATE": "50", "READ_TIMEOUT_S": "10"},
                 sim_config=sim) as gw:
        start = gw.clock.now()
        assert gw.call("GET", "/locks/1").status == 200  # takes Kisi's only token
        reply = gw.call("GET", "/locks/2", headers={"Prefer": "wait=25"})
        # Kisi's Retry-After (20 s) leaves no time for a retry that could take 13.05 s
        # before the 29 s limit, although the caller would wait 25 s: deferred instead.
        assert reply.status == 202
        assert reply.json()["last_outcome"] == {"class": "rate_limited", "status": 429}
        last_sent = max(entry["at"] for entry in gw.sim.stats()["requests"])
        longest_attempt = gw.settings.connect_timeout_s + gw.settings.read_timeout_s
        assert last_sent + longest_attempt <= start + API_GATEWAY_LIMIT_S
        gw.run_retries()  # and the worker finishes it
        assert gw.record(reply.json()["request_id"]).status is RecordStatus.SUCCEEDED
