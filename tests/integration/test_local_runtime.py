"""The whole runtime with its threads: HTTP in, queue, worker, schedule, metrics, clean stop."""

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from local.moto_server import aws_client
from local.runtime import LocalRuntime, format_report, merged_environment
from local.stack import FunctionSpec, Stack
from tests.fixtures.local_stack.harness import API_KEY, TEMPLATE, eventually, recorded, shared_moto


def test_threads_carry_work_end_to_end_and_stop_cleanly():
    lines = []
    endpoint = shared_moto().endpoint_url
    stdout_before = sys.stdout
    path_before = list(sys.path)
    runtime = LocalRuntime(
        TEMPLATE,
        endpoint,
        stack_name="threads",
        api_key=API_KEY,
        gateway_port=0,
        env_overrides={"KISI_BASE_URL": "http://127.0.0.1:9"},
        log=lines.append,
    )
    runtime.start()
    try:
        # the environment is Lambda's, pointed at the embedded AWS
        assert os.environ["AWS_ENDPOINT_URL"] == endpoint
        assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
        assert os.environ["RECORDS_TABLE"] == "threads-RecordsTable"
        assert os.environ["KISI_BASE_URL"] == "http://127.0.0.1:9"

        # an API call enqueues; the SQS poller thread hands it to the worker on its own
        reply = requests.post(
            f"{runtime.gateway_url}/kisi/enqueue",
            data="threaded",
            headers={"x-api-key": API_KEY},
            timeout=10,
        )
        assert reply.status_code == 202
        eventually(
            lambda: any(
                r["body"] == "threaded" for e in recorded("worker") for r in e["event"]["Records"]
            )
        )
        assert any(line.startswith("POST /kisi/enqueue -> 202") for line in lines)

        # a schedule tick makes the handler print EMF; the tee's publisher thread turns it
        # into metric data (off the handler's path, so it lands a moment later)
        runtime.scheduler.fire("MetricsFunctionTick")
        cloudwatch = aws_client("cloudwatch", endpoint)

        def ticks() -> list[dict[str, Any]]:
            now = datetime.now(UTC)
            return list(cloudwatch.get_metric_statistics(
                Namespace="Fixture",
                MetricName="Ticks",
                Dimensions=[{"Name": "service", "Value": "fixture"}],
                StartTime=now - timedelta(minutes=2),
                EndTime=now + timedelta(minutes=1),
                Period=180,
                Statistics=["Sum"],
            )["Datapoints"])

        points = eventually(ticks)
        assert points[0]["Sum"] >= 1
        threads = runtime.threads
        assert {thread.name for thread in threads} == {
            "local-sqs-WorkerFunctionWork",
            "local-scheduler",
            "local-sns-delivery",
            "local-alarms",
            "local-watchdog",
        }
    finally:
        runtime.stop()
        runtime.stop()  # idempotent

    assert not any(thread.is_alive() for thread in threads)
    assert runtime.threads == ()
    assert sys.stdout is stdout_before
    assert sys.path == path_before
    assert "RECORDS_TABLE" not in os.environ
    assert "AWS_ENDPOINT_URL" not in os.environ
    report = lines[0]
    assert report.startswith(f"stack threads from {TEMPLATE} in {endpoint}: created 15,")
    assert "  unsupported: Workflow AWS::StepFunctions::StateMachine" in report.splitlines()
    assert "  warning: environment KISI_BASE_URL" not in report


def spec(logical_id, environment):
    return FunctionSpec(
        logical_id, logical_id, f"arn:{logical_id}", "m.h", "python3.12", Path("."), environment
    )


def test_conflicting_environments_are_reported():
    stack = Stack("s", "us-east-1", "123456789012", "http://127.0.0.1:1")
    stack.functions = {
        "A": spec("A", {"SHARED": "1", "ONLY_A": "a"}),
        "B": spec("B", {"SHARED": "2", "ONLY_B": "b"}),
    }
    merged, conflicts = merged_environment(stack)
    assert merged == {"SHARED": "1", "ONLY_A": "a", "ONLY_B": "b"}
    assert conflicts == [
        "environment SHARED: A sets '1', B sets '2'; one process can hold one value (A's is used)"
    ]
    stack.warnings.extend(conflicts)
    assert format_report(stack).splitlines()[-1].startswith("  warning: environment SHARED")
