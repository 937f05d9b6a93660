"""moto with its state on disk (local.durable_moto), and the SQS poller handing back a batch.

The process tests start the real launcher as a child, kill it with SIGKILL (as a crash would)
and start it again on the same state directory: what a caller was told was done is there,
KMS ciphertexts made before the crash still decrypt, and a message received before the crash
can be handed back with its receipt handle.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import pickle
import signal
import threading
from pathlib import Path
from typing import Any

import moto
import pytest

from local.durable_moto import (
    DEFERRED_S,
    SAVE_SHARE,
    STATE_FILE,
    MotoState,
    StateError,
    request_kind,
)
from local.event_sources import SqsPoller
from local.lambda_invoke import Invocation
from local.moto_server import MotoProcess, MotoServerError, aws_client, free_port
from local.stack import SqsMapping
from tests.fixtures.local_stack.harness import shared_moto


@pytest.fixture
def durable(tmp_path: Path) -> Any:
    process = MotoProcess(port=free_port(), state_dir=tmp_path / "state")
    process.start()
    yield process
    process.stop()


def crash_and_restart(process: MotoProcess) -> None:
    """SIGKILL our own child (no chance to save anything more), then start it again."""
    pid = process.pid
    assert pid is not None
    assert process.alive()
    os.kill(pid, signal.SIGKILL)
    process.restart()
    assert process.alive()
    assert process.pid != pid
    assert process.exit_code is None


def test_what_was_answered_survives_a_kill(durable: MotoProcess) -> None:
    url = durable.endpoint_url
    sqs, ddb = aws_client("sqs", url), aws_client("dynamodb", url)
    kms, sm = aws_client("kms", url), aws_client("secretsmanager", url)
    queue = sqs.create_queue(QueueName="work", Attributes={"VisibilityTimeout": "300"})[
        "QueueUrl"
    ]
    for body in ("a", "b", "c"):
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    ddb.create_table(
        TableName="records",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName="records", Item={"pk": {"S": "r1"}, "status": {"S": "queued"}})
    key_id = kms.create_key(KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/vault", TargetKeyId=key_id)
    sealed = kms.encrypt(KeyId="alias/vault", Plaintext=b"caller secret")["CiphertextBlob"]
    sm.create_secret(Name="service-key", SecretString="s3cr3t")
    cloudwatch = aws_client("cloudwatch", url)  # a service with a lock of its own
    cloudwatch.put_metric_alarm(
        AlarmName="kept", Namespace="N", MetricName="M", Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold",
    )
    # One message in flight (hidden for 300 s) when moto dies, then one deleted.
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=2)["Messages"]
    assert len(received) == 2
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=received[1]["ReceiptHandle"])

    crash_and_restart(durable)

    sqs, ddb = aws_client("sqs", url), aws_client("dynamodb", url)
    kms, sm = aws_client("kms", url), aws_client("secretsmanager", url)
    item = ddb.get_item(TableName="records", Key={"pk": {"S": "r1"}})["Item"]
    assert item["status"] == {"S": "queued"}
    assert kms.decrypt(CiphertextBlob=sealed)["Plaintext"] == b"caller secret"
    assert kms.describe_key(KeyId="alias/vault")["KeyMetadata"]["KeyId"] == key_id
    assert sm.get_secret_value(SecretId="service-key")["SecretString"] == "s3cr3t"
    alarms = aws_client("cloudwatch", url).describe_alarms()["MetricAlarms"]
    assert [alarm["AlarmName"] for alarm in alarms] == ["kept"]
    # The in-flight message is still hidden; its receipt handle is known, so it can be handed
    # back; the deleted one stays deleted.
    visible = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    bodies = sorted(m["Body"] for m in visible)
    assert received[0]["Body"] not in bodies
    assert received[1]["Body"] not in bodies
    assert len(bodies) == 1
    sqs.change_message_visibility(
        QueueUrl=queue, ReceiptHandle=received[0]["ReceiptHandle"], VisibilityTimeout=0
    )
    again = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in again] == [received[0]["Body"]]


def test_a_stop_saves_and_a_second_moto_may_not_share_the_directory(
    durable: MotoProcess,
) -> None:
    sqs = aws_client("sqs", durable.endpoint_url)
    sqs.create_queue(QueueName="kept")
    assert durable.state_dir is not None
    other = MotoProcess(port=free_port(), state_dir=durable.state_dir)
    with pytest.raises(MotoServerError):  # it exits: "another moto is using ..."
        other.start(timeout_s=20)
    aws_client("kms", durable.endpoint_url).create_key(KeyUsage="ENCRYPT_DECRYPT")
    durable.stop()
    assert durable.exit_code == 0  # SIGTERM: last snapshot written, clean exit
    # The snapshot names the launcher's helpers by module, not as __main__: any reader can
    # rebuild every service from it.
    document = pickle.loads((durable.state_dir / STATE_FILE).read_bytes())  # noqa: S301
    services = {key[1]: pickle.loads(blob) for key, blob in document["services"].items()}  # noqa: S301
    assert {"sqs", "kms"} <= set(services)
    durable.start()
    assert aws_client("sqs", durable.endpoint_url).list_queues()["QueueUrls"][0].endswith("/kept")


def test_state_of_another_moto_version_is_refused(tmp_path: Path) -> None:
    document = {"format": 1, "moto": "0.0.1", "saved_at": 0.0, "services": {}}
    (tmp_path / STATE_FILE).write_bytes(pickle.dumps(document))
    with pytest.raises(StateError, match=f"moto 0.0.1 .* this is moto {moto.__version__}"):
        MotoState(tmp_path, log=lambda line: None).restore()


def test_unreadable_state_is_refused(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"not a pickle")
    with pytest.raises(StateError, match="cannot be read"):
        MotoState(tmp_path, log=lambda line: None).restore()
    assert MotoState(tmp_path / "empty", log=lambda line: None).restore() is None


@pytest.mark.parametrize(
    ("backend", "shared", "held"),
    [
        ("dynamodb", True, set()),
        ("sqs", True, set()),
        ("cloudwatch", False, {"cloudwatch"}),
        ("logs", False, {"logs"}),
        ("cloudformation", True, {"cloudwatch", "logs"}),  # changes other services
        ("sns", True, {"cloudwatch", "logs"}),
        ("?", True, {"cloudwatch", "logs"}),  # not recognised: everything
    ],
)
def test_a_request_holds_only_the_locks_of_what_it_may_change(
    tmp_path: Path, backend: str, shared: bool, held: set[str]
) -> None:
    """Saving metric data (which grows all session) never holds up DynamoDB or SQS."""
    state = MotoState(tmp_path, log=lambda line: None)
    separate = state._separate  # the locks under test
    with state.locked(backend):
        assert state.lock.locked() is shared
        assert {name for name, lock in separate.items() if lock.locked()} == held
    assert not state.lock.locked()
    assert not any(lock.locked() for lock in separate.values())


def test_metric_data_is_saved_less_often_when_saving_it_takes_long(tmp_path: Path) -> None:
    now = [1000.0]
    state = MotoState(tmp_path, log=lambda line: None, clock=lambda: now[0])
    with state.locked("cloudwatch"):
        assert state.changed("cloudwatch", deferred=True) == 0  # nobody waits for it
    now[0] += DEFERRED_S
    assert state._due() == {"cloudwatch"}
    state._pickle_s["cloudwatch"] = 0.5  # as if its last pickle took 0.5 s
    assert state._due() == set()
    now[0] += 0.5 * SAVE_SHARE - DEFERRED_S
    assert state._due() == {"cloudwatch"}
    assert state.snapshot()
    assert state._due() == set()


@pytest.mark.parametrize(
    ("environ", "kind"),
    [
        ({"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.PutItem"}, "write"),
        ({"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.GetItem"}, "read"),
        ({"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.Query"}, "read"),
        ({"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.TransactWriteItems"}, "write"),
        ({"HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage"}, "unlocked"),
        ({"HTTP_X_AMZ_TARGET": "AmazonSQS.DeleteMessage"}, "write"),
        ({"HTTP_X_AMZ_TARGET": "AmazonSQS.ChangeMessageVisibility"}, "write"),
        ({"HTTP_X_AMZ_TARGET": "TrentService.Decrypt"}, "read"),
        ({"HTTP_X_AMZ_TARGET": "TrentService.Encrypt"}, "read"),
        ({"HTTP_X_AMZ_TARGET": "TrentService.CreateKey"}, "write"),
        ({"HTTP_X_AMZ_TARGET": "GraniteServiceVersion20100801.PutMetricData"}, "deferred"),
        ({"QUERY_STRING": "Action=SendMessage&Version=2012-11-05"}, "write"),
        ({"REQUEST_METHOD": "GET", "PATH_INFO": "/restapis"}, "read"),
        ({"REQUEST_METHOD": "POST", "PATH_INFO": "/restapis"}, "write"),
    ],
)
def test_request_kind(environ: dict[str, Any], kind: str) -> None:
    assert request_kind(environ) == kind


def _dynamodb(action: str, document: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(document).encode()
    return {"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": f"DynamoDB_20120810.{action}",
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}


BUDGET_TABLE = "kisi-gateway-BudgetTable"  # as the local stack names it
REQUESTS_TABLE = "kisi-gateway-RequestsTable-4D5E6F"


@pytest.mark.parametrize(
    ("action", "document", "kind"),
    [
        ("UpdateItem", {"TableName": BUDGET_TABLE}, "deferred"),
        ("TransactWriteItems", {"TransactItems": [{"Update": {"TableName": BUDGET_TABLE}},
                                                  {"Update": {"TableName": BUDGET_TABLE}}]},
         "deferred"),
        ("UpdateItem", {"TableName": REQUESTS_TABLE}, "write"),
        ("TransactWriteItems", {"TransactItems": [{"Update": {"TableName": BUDGET_TABLE}},
                                                  {"Put": {"TableName": REQUESTS_TABLE}}]},
         "write"),
        ("DeleteTable", {"TableName": BUDGET_TABLE}, "write"),
        ("GetItem", {"TableName": BUDGET_TABLE}, "read"),
    ],
)
def test_send_budget_writes_do_not_wait_for_a_snapshot(
    action: str, document: dict[str, Any], kind: str
) -> None:
    """The budget's pacing state is saved within a second, like metrics; everything else a
    request changes is still answered only once saved. The body is left for moto."""
    environ = _dynamodb(action, document)
    assert request_kind(environ) == kind
    assert json.loads(environ["wsgi.input"].read()) == document


def test_request_kind_reads_a_form_body_and_leaves_it_for_moto() -> None:
    body = b"Action=DeleteQueue&QueueUrl=x"
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "application/x-www-form-urlencoded; charset=utf-8",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    assert request_kind(environ) == "write"
    assert environ["wsgi.input"].read() == body


# -- the poller hands back what it held when moto went away ----------------------------------
class _Invoker:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def invoke(self, function: str, event: Any) -> Invocation:
        self.events.append(event)
        return Invocation(function, "id", {"batchItemFailures": []}, None, 1.0)


class _FailingSecondReceive:
    """An SQS client whose second ReceiveMessage fails, as when moto dies mid-window (and
    whose receives do not long-poll: the tests' queues are empty when they should be)."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.receives = 0

    def receive_message(self, **request: Any) -> Any:
        self.receives += 1
        if self.receives == 2:
            raise ConnectionError("moto went away")
        return self._sqs.receive_message(**{**request, "WaitTimeSeconds": 0})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def test_a_batch_abandoned_mid_window_is_handed_back() -> None:
    sqs = aws_client("sqs", shared_moto().endpoint_url)
    url = sqs.create_queue(QueueName="held", Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
    for body in ("x", "y"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    mapping = SqsMapping("Held", "Worker", "arn:aws:sqs:us-east-1:123456789012:held", url,
                         batch_size=10, max_batching_window_s=5,
                         report_batch_item_failures=True)
    now = [100.0]
    invoker = _Invoker()
    failing = _FailingSecondReceive(sqs)
    poller = SqsPoller(mapping, invoker, failing, "us-east-1",  # type: ignore[arg-type]
                       log=lambda line: None, clock=lambda: now[0])
    with pytest.raises(ConnectionError):
        poller.poll_once(wait_time_s=0)
    assert invoker.events == []  # never handled
    assert sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages") is None

    assert poller.release_held(since=101.0) == 0  # abandoned before `since`: not ours to give
    assert poller.release_held(since=100.0) == 2
    bodies = sorted(m["Body"] for m in sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10)["Messages"])
    assert bodies == ["x", "y"]


def test_after_a_restart_the_polling_thread_hands_back_before_it_receives() -> None:
    sqs = aws_client("sqs", shared_moto().endpoint_url)
    url = sqs.create_queue(QueueName="held-run", Attributes={"VisibilityTimeout": "600"})[
        "QueueUrl"
    ]
    sqs.send_message(QueueUrl=url, MessageBody="z")
    mapping = SqsMapping("HeldRun", "Worker", "arn:aws:sqs:us-east-1:123456789012:held-run",
                         url, batch_size=10, max_batching_window_s=5,
                         report_batch_item_failures=True)
    lines: list[str] = []
    stop = threading.Event()

    class StopAfterOne(_Invoker):
        def invoke(self, function: str, event: Any) -> Invocation:
            stop.set()
            return super().invoke(function, event)

    invoker = StopAfterOne()
    ticks = itertools.count(100.0)  # a second per look: the batching window ends
    poller = SqsPoller(mapping, invoker, _FailingSecondReceive(sqs), "us-east-1",  # type: ignore[arg-type]
                       log=lines.append, clock=ticks.__next__)
    with pytest.raises(ConnectionError):
        poller.poll_once(wait_time_s=0)  # "moto died" while the batch was gathered
    poller.aws_restarted(since=99.0)
    poller.run(stop)  # hands back first, then receives the message again and handles it
    assert [r["body"] for event in invoker.events for r in event["Records"]] == ["z"]
    assert "SQS held-run: 1 message(s) held when moto died handed back" in lines
    assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0).get("Messages") is None


def test_moto_saves_and_stops_once_make_run_is_gone(tmp_path: Path) -> None:
    # Told to watch a PID that is not its parent: as if make run had died (kill -9) and moto
    # had been handed to another parent. It checks once a second.
    process = MotoProcess(
        port=free_port(), state_dir=tmp_path / "state", parent_pid=os.getpid() + 1_000_000
    )
    process.start()
    try:
        assert process.wait(timeout_s=60) == 0  # saved, then a clean exit
    finally:
        process.stop()
    assert (tmp_path / "state" / STATE_FILE).exists()
