"""The EMF sink: what it prints is what Powertools' ``single_metric`` would print (as metric
data), and a batch prints the same data in fewer lines."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping

import pytest
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from hypothesis import given
from hypothesis import strategies as st

from kisi_gateway.pipeline.telemetry import EmfSink, metric_batch
from local.emf import emf_to_metric_data

NOW = 1_800_000_000.0
SERVICE = "kisi-gateway"

Emit = tuple[str, float, str, dict[str, str]]


def data_of(lines: list[str]) -> Counter[str]:
    """The metric data the lines stand for, as CloudWatch would receive them (one entry per
    value, so a value array and separate lines compare equal)."""
    found: Counter[str] = Counter()
    for line in lines:
        for namespace, data in emf_to_metric_data(line):
            for datum in data:
                values = datum.get("Values") or [datum["Value"]]
                dims = tuple(sorted((d["Name"], d["Value"]) for d in datum.get("Dimensions", [])))
                for value in values:
                    found[repr((namespace, datum["MetricName"], datum.get("Unit"), dims,
                                value, datum["Timestamp"]))] += 1
    return found


def sink(lines: list[str]) -> EmfSink:
    return EmfSink("KisiGateway", write=lines.append, clock=lambda: NOW)


def powertools_lines(emits: list[Emit], capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    for name, value, unit, dims in emits:
        with single_metric(name=name, unit=MetricUnit(unit), value=value,
                           namespace="KisiGateway") as metric:
            for key, dim in dims.items():
                metric.add_dimension(name=key, value=dim)
    return capsys.readouterr().out.splitlines()


CALL: list[Emit] = [
    ("AttemptsByTenant", 1, "Count", {"Tenant": "default", "Credential": "service"}),
    ("AttemptsByOutcome", 1, "Count", {"Outcome": "success"}),
    ("AttemptsByRoute", 1, "Count", {"Route": "GET /locks/{id}"}),
    ("Attempts", 1, "Count", {}),
    ("RetryDelay", 2.5, "Seconds", {}),
    ("Finished", 1, "Count", {"Status": "succeeded"}),
]


def test_each_value_outside_a_batch_is_what_powertools_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", SERVICE)
    ours: list[str] = []
    for name, value, unit, dims in CALL:
        sink(ours).emit(name, value, unit, dims)
    theirs = powertools_lines(CALL, capsys)
    assert len(ours) == len(theirs) == len(CALL)

    def untimed(lines: list[str]) -> Counter[str]:  # Powertools stamps its own clock
        return Counter(entry.rsplit(", datetime", 1)[0] for entry in data_of(lines).elements())

    assert untimed(ours) == untimed(theirs)
    assert all('"service":"kisi-gateway"' in line for line in ours)


def test_a_batch_prints_a_calls_metrics_as_one_line_with_the_same_data() -> None:
    single: list[str] = []
    for emit in CALL:
        sink(single).emit(*emit)
    batched: list[str] = []
    one = sink(batched)
    with metric_batch():
        for emit in CALL:
            one.emit(*emit)
        assert batched == []  # printed when the batch closes
    assert len(batched) == 1
    assert data_of(batched) == data_of(single)


def test_repeats_share_a_line_and_other_dimension_values_take_another() -> None:
    lines: list[str] = []
    one = sink(lines)
    with metric_batch():
        one.emit("Attempts", 1, "Count", {})
        one.emit("Attempts", 1, "Count", {})
        one.emit("AttemptsByRoute", 1, "Count", {"Route": "GET /locks"})
        one.emit("AttemptsByRoute", 1, "Count", {"Route": "GET /users"})  # Route is taken
    assert len(lines) == 2
    assert '"Attempts":[1.0,1.0]' in lines[0]
    names = Counter(entry.split(", ")[1] for entry in data_of(lines).elements())
    assert names == {"'Attempts'": 2, "'AttemptsByRoute'": 2}
    assert '"Route":"GET /locks"' in lines[0]
    assert '"Route":"GET /users"' in lines[1]


def test_a_batch_prints_on_an_error_only_once_when_nested_and_only_its_threads_values() -> None:
    lines: list[str] = []
    one = sink(lines)

    def handler() -> None:
        with metric_batch():
            one.emit("Attempts", 1, "Count", {})
            with metric_batch():
                one.emit("Deferred", 1, "Count", {})
            assert lines == []  # the inner batch printed nothing
            other = threading.Thread(target=one.emit, args=("GuardPaused", 1, "Count", {}))
            other.start()
            other.join()
            assert len(lines) == 1  # another thread's value: printed at once, alone
            assert "GuardPaused" in lines[0]
            raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError, match="the handler failed"):
        handler()
    assert len(lines) == 2
    assert "Attempts" in lines[1]
    assert "Deferred" in lines[1]


NAMES = st.sampled_from(["Attempts", "AttemptsByRoute", "BadRequestsByRouteStatus", "Finished"])
DIMS: Mapping[str, st.SearchStrategy[dict[str, str]]] = {
    "Attempts": st.just({}),
    "AttemptsByRoute": st.fixed_dictionaries({"Route": st.sampled_from(["GET /a", "GET /b"])}),
    "BadRequestsByRouteStatus": st.fixed_dictionaries({
        "Route": st.sampled_from(["GET /a", "GET /b"]), "Status": st.sampled_from(["404", "422"])}),
    "Finished": st.fixed_dictionaries({"Status": st.sampled_from(["succeeded", "failed"])}),
}
EMITS = st.lists(
    NAMES.flatmap(lambda name: st.tuples(
        st.just(name), st.sampled_from([1.0, 2.0]), st.just("Count"), DIMS[name])),
    max_size=250,
)


@given(EMITS)
def test_whatever_is_emitted_a_batch_prints_the_same_data(emits: list[Emit]) -> None:
    single: list[str] = []
    for emit in emits:
        sink(single).emit(*emit)
    batched: list[str] = []
    one = sink(batched)
    with metric_batch():
        for emit in emits:
            one.emit(*emit)
    assert data_of(batched) == data_of(single)
    assert len(batched) <= len(single)
