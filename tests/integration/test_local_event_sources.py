"""Event sources: SQS batches with partial failures and redrive, schedules, SNS delivery."""

from datetime import UTC, datetime

import pytest
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel, SnsModel, SqsModel

from local.event_sources import failed_item_ids
from local.moto_server import aws_client
from local.schedule_expressions import ScheduleExpressionError, next_fire
from tests.fixtures.local_stack.harness import (
    eventually,
    queue_depth,
    quiet_runtime,
    recorded,
)

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def runtime():
    with quiet_runtime("sources", now=lambda: NOW) as runtime:
        yield runtime


@pytest.fixture
def sqs(runtime):
    return aws_client("sqs", runtime.endpoint_url)


def worker_events():
    return [entry["event"] for entry in recorded("worker")]


def records_with_body(body):
    return [r for event in worker_events() for r in event["Records"] if r["body"] == body]


def test_batch_item_failures_are_redelivered_then_dead_lettered(runtime, sqs):
    # given two messages, one of which the handler reports as failed every time
    stack = runtime.stack
    queue, dlq = stack.physical_id("WorkQueue"), stack.physical_id("WorkDeadLetterQueue")
    sqs.send_message(
        QueueUrl=queue,
        MessageBody="ok-1",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "test"}},
    )
    sqs.send_message(QueueUrl=queue, MessageBody="fail-1")
    poller = runtime.pollers[0]

    def polled_until(condition):
        def probe():
            poller.poll_once(wait_time_s=1)
            return condition()

        return probe

    # when the mapping polls: the good one is delivered once and deleted, the failed one kept
    eventually(polled_until(lambda: records_with_body("ok-1") and records_with_body("fail-1")))
    for event in worker_events():
        SqsModel.model_validate(event)
    [record] = records_with_body("ok-1")
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == stack.attribute("WorkQueue", "Arn")
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
        record["attributes"]
    )
    assert record["messageAttributes"] == {
        "kind": {
            "stringValue": "test",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        }
    }
    assert len(record["md5OfBody"]) == 32

    # then the failed one comes back after the visibility timeout (1 s of real moto time)
    eventually(polled_until(lambda: len(records_with_body("fail-1")) == 2))
    assert records_with_body("fail-1")[-1]["attributes"]["ApproximateReceiveCount"] == "2"

    # and once maxReceiveCount (2) is reached moto moves it to the dead-letter queue
    def dead_lettered():
        poller.poll_once(wait_time_s=1)
        return sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0).get("Messages")

    [moved] = eventually(dead_lettered)
    assert moved["Body"] == "fail-1"
    assert queue_depth(sqs, queue) == 0
    assert len(records_with_body("ok-1")) == 1
    assert len(records_with_body("fail-1")) == 2


@pytest.mark.parametrize(
    ("result", "kept"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "a"}]}, {"a"}),
        ({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, None),  # unknown id: all kept
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, None),
        ({"batchItemFailures": [{}]}, None),
        ({"batchItemFailures": "a"}, None),
        ("a string", None),
    ],
)
def test_batch_item_failure_responses_follow_lambda(result, kept):
    assert failed_item_ids(result, {"a", "b"}) == kept


def test_a_raising_handler_keeps_the_whole_batch(runtime, sqs, monkeypatch):
    queue = runtime.stack.physical_id("WorkQueue")
    sqs.send_message(QueueUrl=queue, MessageBody="anything")

    def broken(event, context):
        raise RuntimeError("down")

    monkeypatch.setitem(runtime.invoker._handlers, "WorkerFunction", broken)
    outcome = eventually(lambda: runtime.pollers[0].poll_once(wait_time_s=1))
    assert (outcome.received, outcome.deleted) == (1, 0)
    assert outcome.error == "RuntimeError: down"
    monkeypatch.undo()
    eventually(lambda: runtime.pollers[0].poll_once(wait_time_s=1).deleted)


def test_schedule_fires_a_scheduled_event(runtime):
    [invocation] = runtime.scheduler.fire("MetricsFunctionTick")
    assert invocation.ok
    event = recorded("metrics")[-1]["event"]
    EventBridgeModel.model_validate(event)
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["time"] == "2024-05-06T07:08:09Z"
    assert event["resources"] == [runtime.stack.schedules[0].rule_arn]
    assert event["detail"] == {}
    assert event["account"] == "123456789012"


def test_scheduler_tick_fires_when_due(runtime):
    scheduler = runtime.scheduler
    due = scheduler.next_time("MetricsFunctionTick")
    assert due == datetime(2024, 5, 6, 7, 9, 9, tzinfo=UTC)
    assert scheduler.tick(NOW) == []
    assert len(scheduler.tick(due)) == 1
    assert scheduler.next_time("MetricsFunctionTick") == datetime(2024, 5, 6, 7, 10, 9, tzinfo=UTC)


def test_published_messages_reach_subscribed_functions(runtime):
    sns = aws_client("sns", runtime.endpoint_url)
    topic = runtime.stack.physical_id("AlarmTopic")
    sns.publish(
        TopicArn=topic,
        Message="hello",
        Subject="greeting",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "test"}},
    )
    [invocation] = eventually(lambda: runtime.sns.poll_once(wait_time_s=1))
    assert invocation.ok
    event = recorded("metrics")[-1]["event"]
    SnsModel.model_validate(event)
    [record] = event["Records"]
    assert record["EventSource"] == "aws:sns"
    assert record["EventSubscriptionArn"].startswith(topic + ":")
    assert record["Sns"]["Message"] == "hello"
    assert record["Sns"]["Subject"] == "greeting"
    assert record["Sns"]["TopicArn"] == topic
    assert record["Sns"]["MessageAttributes"] == {"kind": {"Type": "String", "Value": "test"}}
    # direct delivery, without moto, gives the same shape
    [direct] = runtime.sns.deliver(topic, "direct")
    assert direct.ok
    SnsModel.model_validate(recorded("metrics")[-1]["event"])


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("rate(1 minute)", datetime(2024, 1, 1, 0, 0, 30), datetime(2024, 1, 1, 0, 1, 30)),
        ("rate(2 hours)", datetime(2024, 1, 1), datetime(2024, 1, 1, 2)),
        ("rate(1 day)", datetime(2024, 1, 1), datetime(2024, 1, 2)),
        ("cron(0/15 * * * ? *)", datetime(2024, 1, 1, 0, 7), datetime(2024, 1, 1, 0, 15)),
        ("cron(0 9 ? * MON-FRI *)", datetime(2024, 1, 6, 12), datetime(2024, 1, 8, 9)),  # Sat
        ("cron(30 2 1 * ? *)", datetime(2024, 1, 15), datetime(2024, 2, 1, 2, 30)),
        ("cron(0 0 ? * 1 *)", datetime(2024, 1, 1), datetime(2024, 1, 7)),  # 1 = Sunday
    ],
)
def test_schedule_expressions(expression, after, expected):
    assert next_fire(expression, after) == expected


@pytest.mark.parametrize(
    "expression",
    ["rate(0 minutes)", "rate(5 weeks)", "cron(0 0 L * ? *)", "cron(0 0 * * * *)", "every minute"],
)
def test_schedule_expressions_not_emulated(expression):
    with pytest.raises(ScheduleExpressionError):
        next_fire(expression, datetime(2024, 1, 1))
