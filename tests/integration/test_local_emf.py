"""EMF lines printed by Powertools Metrics become CloudWatch metric data in moto."""

import io
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from local.emf import EmfTee, emf_to_metric_data
from local.moto_server import aws_client
from tests.fixtures.local_stack.harness import shared_moto


@pytest.fixture
def cloudwatch():
    return aws_client("cloudwatch", shared_moto().endpoint_url)


def statistics(cloudwatch, namespace, name, dimensions):
    now = datetime.now(UTC)
    return cloudwatch.get_metric_statistics(
        Namespace=namespace,
        MetricName=name,
        Dimensions=dimensions,
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["Sum", "SampleCount"],
    )["Datapoints"]


def test_powertools_flush_reaches_get_metric_statistics(cloudwatch):
    # given a real Powertools Metrics object, printing EMF to stdout as on Lambda
    target = io.StringIO()
    metrics = Metrics(namespace="EmfTest", service="emf-svc")
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=3)
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=4)
    metrics.add_metric(name="LatencyMs", unit=MetricUnit.Milliseconds, value=12.5)

    # when it flushes through the tee
    with EmfTee(cloudwatch, target=target) as tee:
        print("an ordinary log line")
        metrics.flush_metrics()

    # then the EMF line became metric data, and only the ordinary line reached stdout
    assert target.getvalue() == "an ordinary log line\n"
    assert tee.published == 2
    dimensions = [{"Name": "service", "Value": "emf-svc"}]
    [point] = statistics(cloudwatch, "EmfTest", "Requests", dimensions)
    assert (point["Sum"], point["SampleCount"], point["Unit"]) == (7.0, 2.0, "Count")
    [latency] = statistics(cloudwatch, "EmfTest", "LatencyMs", dimensions)
    assert latency["Sum"] == 12.5


def test_echo_keeps_emf_lines_visible(cloudwatch):
    target = io.StringIO()
    line = json.dumps(
        {
            "_aws": {
                "Timestamp": 0,
                "CloudWatchMetrics": [
                    {"Namespace": "EmfEcho", "Dimensions": [[]], "Metrics": [{"Name": "X"}]}
                ],
            },
            "X": 1,
        }
    )
    with EmfTee(cloudwatch, target=target, echo_emf=True):
        print(line)
    assert target.getvalue() == line + "\n"


def test_lines_from_threads_do_not_interleave(cloudwatch):
    target = io.StringIO()
    with EmfTee(cloudwatch, target=target):

        def speak(name):
            for _ in range(50):
                print(name, "says", "hello", sep="-")

        threads = [threading.Thread(target=speak, args=(f"t{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    lines = target.getvalue().splitlines()
    assert len(lines) == 200
    assert all(line.endswith("-says-hello") and line.count("-") == 2 for line in lines)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (  # two dimension sets -> the data twice, once per set
            {
                "_aws": {
                    "Timestamp": 1700000000000,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": "N",
                            "Dimensions": [["service"], ["service", "route"]],
                            "Metrics": [{"Name": "Hits", "Unit": "Count"}],
                        }
                    ],
                },
                "service": "api",
                "route": "GET /x",
                "Hits": [1, 2],
            },
            [
                (
                    "N",
                    [
                        {
                            "MetricName": "Hits",
                            "Values": [1.0, 2.0],
                            "Unit": "Count",
                            "Dimensions": [{"Name": "service", "Value": "api"}],
                        },
                        {
                            "MetricName": "Hits",
                            "Values": [1.0, 2.0],
                            "Unit": "Count",
                            "Dimensions": [
                                {"Name": "service", "Value": "api"},
                                {"Name": "route", "Value": "GET /x"},
                            ],
                        },
                    ],
                )
            ],
        ),
        (  # a single value, no dimensions, high resolution
            {
                "_aws": {
                    "Timestamp": 1700000000000,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": "N",
                            "Dimensions": [[]],
                            "Metrics": [{"Name": "Up", "StorageResolution": 1}],
                        }
                    ],
                },
                "Up": 1,
            },
            [("N", [{"MetricName": "Up", "Value": 1.0, "StorageResolution": 1}])],
        ),
        ({"message": "not EMF"}, []),
        ({"_aws": {"Timestamp": 0}}, []),  # no directives
    ],
)
def test_emf_to_metric_data_table(document, expected):
    result = emf_to_metric_data(json.dumps(document))
    for _, data in result:
        for datum in data:
            datum.pop("Timestamp")
    assert result == expected


def test_non_json_lines_are_not_emf():
    assert emf_to_metric_data("plain text") == []
    assert emf_to_metric_data('{"_aws": broken') == []
