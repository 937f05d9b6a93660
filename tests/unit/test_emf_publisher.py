"""The local stack's EMF tee publishes metrics off the printing thread, as Lambda does: a
handler's print never waits on the embedded AWS, and nothing printed is lost. A fake CloudWatch
whose calls block until the test lets them go shows who waits; nothing sleeps."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

from local.emf import EmfTee, merged

PRINTED = 3


def emf_line(name: str, value: float, namespace: str = "Gw") -> str:
    return json.dumps({
        "_aws": {"Timestamp": 1_700_000_000_000, "CloudWatchMetrics": [
            {"Namespace": namespace, "Dimensions": [[]], "Metrics": [{"Name": name}]}]},
        name: value,
    })


class HeldCloudWatch:
    """Records every ``put_metric_data``; the first ``held`` calls wait for ``release``."""

    def __init__(self, held: int = 1) -> None:
        self.calls: list[dict[str, Any]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self._held = held
        self._lock = threading.Lock()

    def put_metric_data(self, **call: Any) -> None:
        with self._lock:
            self.calls.append(call)
            hold = len(self.calls) <= self._held
        if hold:
            self.entered.set()
            assert self.release.wait(timeout=30), "the test never released the call"

    def names(self) -> list[str]:
        return [datum["MetricName"] for call in self.calls for datum in call["MetricData"]]


def test_a_print_returns_while_cloudwatch_is_still_busy_and_uninstall_sends_the_rest() -> None:
    cloudwatch = HeldCloudWatch()
    tee = EmfTee(cloudwatch, target=io.StringIO())
    tee.write(emf_line("First", 1) + "\n")
    assert cloudwatch.entered.wait(timeout=30)  # the publisher took it and is held there
    # These return although the only CloudWatch call in progress has not: nobody waits on it.
    for index in range(PRINTED):
        tee.write(emf_line(f"Later{index}", index) + "\n")
    cloudwatch.release.set()
    tee.uninstall()  # publishes whatever is pending, then stops the publisher
    assert cloudwatch.names() == ["First", "Later0", "Later1", "Later2"]
    assert len(cloudwatch.calls) == 2  # the lines that piled up went in one call
    assert tee.published == 1 + PRINTED


def test_a_publisher_that_falls_behind_makes_the_writer_publish_its_own_line() -> None:
    cloudwatch = HeldCloudWatch()
    tee = EmfTee(cloudwatch, target=io.StringIO(), max_pending=1)
    tee.write(emf_line("Held", 1) + "\n")
    assert cloudwatch.entered.wait(timeout=30)
    tee.write(emf_line("Queued", 2) + "\n")  # fills the one pending place
    tee.write(emf_line("Overflow", 3) + "\n")  # no room: published here, not dropped
    assert cloudwatch.names() == ["Held", "Overflow"]
    cloudwatch.release.set()
    tee.uninstall()
    assert sorted(cloudwatch.names()) == ["Held", "Overflow", "Queued"]
    assert tee.published == 3


def test_ordinary_lines_pass_through_and_a_failed_call_is_reported_not_raised() -> None:
    class Failing:
        def put_metric_data(self, **call: Any) -> None:
            raise ConnectionError("moto is restarting")

    errors: list[str] = []
    target = io.StringIO()
    tee = EmfTee(Failing(), target=target, on_error=errors.append)
    tee.write("plain\n" + emf_line("Lost", 1) + "\n")
    tee.uninstall()
    assert target.getvalue() == "plain\n"
    assert errors == ["EMF -> put_metric_data failed: ConnectionError: moto is restarting"]
    assert tee.published == 0


def test_lines_are_merged_by_namespace_in_first_seen_order() -> None:
    one = [("A", [{"MetricName": "x"}]), ("B", [{"MetricName": "y"}])]
    two = [("A", [{"MetricName": "z"}])]
    assert merged([one, two]) == [("A", [{"MetricName": "x"}, {"MetricName": "z"}]),
                                  ("B", [{"MetricName": "y"}])]
