"""CloudWatch Embedded Metric Format (EMF) lines -> ``put_metric_data`` in the embedded AWS.

On Lambda, Powertools ``Metrics`` prints EMF JSON lines to stdout and CloudWatch Logs turns
them into metrics. Locally nothing does, so :class:`EmfTee` sits in front of ``sys.stdout``:
ordinary lines pass through, EMF lines become metric data (and alarms can see them).

As on Lambda, printing a metric costs the handler nothing more than the print: the metric data
go to the embedded AWS from a publisher thread of their own, which sends whatever has piled up
in one ``put_metric_data`` per namespace (a handler prints several EMF lines per request, and
each call to moto used to hold the request up). Should the publisher fall behind by
``max_pending`` lines, the printing thread publishes its line itself: slower, never lost.
Uninstalling publishes everything still pending.
"""

from __future__ import annotations

import io
import json
import queue
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO, TypedDict

__all__ = ["EmfTee", "MetricDatum", "emf_to_metric_data", "put_metric_data"]

# PutMetricData accepts up to 1000 metrics per request and 150 values per metric.
MAX_DATUMS_PER_CALL = 1000
MAX_VALUES_PER_DATUM = 150
MAX_PENDING = 10_000  # EMF lines waiting for the publisher before writers publish their own
DRAIN_TIMEOUT_S = 30.0  # how long uninstall waits for the publisher to send what is pending


class _Dimension(TypedDict):
    Name: str
    Value: str


class MetricDatum(TypedDict, total=False):
    MetricName: str
    Dimensions: list[_Dimension]
    Timestamp: datetime
    Value: float
    Values: list[float]
    Unit: str
    StorageResolution: int


Batches = list[tuple[str, list[MetricDatum]]]


def _numbers(value: Any) -> list[float] | None:
    values = value if isinstance(value, list) else [value]
    if not values or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        return None
    return [float(v) for v in values]


def _data(
    metric: dict[str, Any], values: list[float], dimensions: list[_Dimension], timestamp: datetime
) -> list[MetricDatum]:
    data: list[MetricDatum] = []
    for start in range(0, len(values), MAX_VALUES_PER_DATUM):
        chunk = values[start : start + MAX_VALUES_PER_DATUM]
        datum: MetricDatum = {"MetricName": str(metric["Name"]), "Timestamp": timestamp}
        if dimensions:
            datum["Dimensions"] = dimensions
        if len(chunk) == 1:
            datum["Value"] = chunk[0]
        else:
            datum["Values"] = chunk
        if metric.get("Unit"):
            datum["Unit"] = str(metric["Unit"])
        if metric.get("StorageResolution"):
            datum["StorageResolution"] = int(metric["StorageResolution"])
        data.append(datum)
    return data


def emf_to_metric_data(line: str) -> list[tuple[str, list[MetricDatum]]]:
    """The metric data an EMF line stands for, per namespace; ``[]`` for any other line.

    Each dimension set of a directive yields its own data, as CloudWatch does.

    >>> line = ('{"_aws": {"Timestamp": 0, "CloudWatchMetrics": [{"Namespace": "N", '
    ...         '"Dimensions": [["service"]], "Metrics": [{"Name": "Hits", "Unit": "Count"}]}]},'
    ...         ' "service": "api", "Hits": [1, 2]}')
    >>> emf_to_metric_data(line)[0][1][0]["Values"]
    [1.0, 2.0]
    """
    text = line.strip()
    if not (text.startswith("{") and '"_aws"' in text):
        return []
    try:
        document = json.loads(text)
        meta = document["_aws"]
        directives = meta["CloudWatchMetrics"]
    except (ValueError, KeyError, TypeError):
        return []
    timestamp = datetime.fromtimestamp(int(meta.get("Timestamp", 0)) / 1000, UTC)
    result: list[tuple[str, list[MetricDatum]]] = []
    for directive in directives:
        namespace = str(directive.get("Namespace", "aws-embedded-metrics"))
        dimension_sets = directive.get("Dimensions") or [[]]
        data: list[MetricDatum] = []
        for metric in directive.get("Metrics") or []:
            name = metric.get("Name")
            values = _numbers(document.get(name)) if name else None
            if values is None:
                continue
            for dimension_set in dimension_sets:
                dimensions: list[_Dimension] = [
                    {"Name": str(key), "Value": str(document[key])}
                    for key in dimension_set
                    if key in document
                ]
                data.extend(_data(metric, values, dimensions, timestamp))
        if data:
            result.append((namespace, data))
    return result


def merged(pending: list[Batches]) -> Batches:
    """Several lines' batches as one per namespace (in first-seen order), to send together."""
    by_namespace: dict[str, list[MetricDatum]] = {}
    for batches in pending:
        for namespace, data in batches:
            by_namespace.setdefault(namespace, []).extend(data)
    return list(by_namespace.items())


def put_metric_data(cloudwatch: Any, batches: list[tuple[str, list[MetricDatum]]]) -> int:
    """Send metric data, at most 1000 data per call; returns how many data were sent."""
    sent = 0
    for namespace, data in batches:
        for start in range(0, len(data), MAX_DATUMS_PER_CALL):
            chunk = data[start : start + MAX_DATUMS_PER_CALL]
            cloudwatch.put_metric_data(Namespace=namespace, MetricData=chunk)
            sent += len(chunk)
    return sent


class EmfTee(io.TextIOBase):
    """A thread-safe stand-in for ``sys.stdout`` that turns EMF lines into metric data.

    Output is buffered per thread until a newline, so lines printed by concurrent handlers
    never interleave. Every line except EMF goes to the real stdout (EMF too with ``echo_emf``);
    EMF lines are published by a thread of the tee's own (see the module's docstring).
    """

    def __init__(
        self,
        cloudwatch: Any,
        target: TextIO | None = None,
        echo_emf: bool = False,
        on_error: Callable[[str], None] | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        super().__init__()
        self._cloudwatch = cloudwatch
        self._target = target if target is not None else sys.stdout
        self._echo_emf = echo_emf
        self._on_error = on_error or (lambda text: print(text, file=sys.stderr))
        self._local = threading.local()
        self._lock = threading.Lock()
        self._previous: TextIO | None = None
        self.published = 0
        self._max_pending = max_pending
        self._pending: queue.Queue[Batches | None] = queue.Queue(maxsize=max_pending)
        self._publisher: threading.Thread | None = None
        self._count_lock = threading.Lock()  # ``published`` is added to from two threads

    # io.TextIOBase --------------------------------------------------------------------
    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")

    def write(self, text: str) -> int:
        buffer = getattr(self._local, "buffer", "") + text
        *lines, rest = buffer.split("\n")
        self._local.buffer = rest
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._target.flush()

    def _line(self, line: str) -> None:
        batches = emf_to_metric_data(line)
        if batches:
            self._hand_over(batches)
            if not self._echo_emf:
                return
        with self._lock:
            self._target.write(line + "\n")

    # publishing -----------------------------------------------------------------------
    def _hand_over(self, batches: Batches) -> None:
        """To the publisher thread; if it has fallen ``max_pending`` lines behind, publish here."""
        with self._lock:  # a line is queued only for a publisher that will take it
            if self._publisher is None:
                self._pending = queue.Queue(maxsize=self._max_pending)
                self._publisher = threading.Thread(
                    target=self._publish_pending, args=(self._pending,),
                    name="local-emf-publisher", daemon=True)
                self._publisher.start()
            try:
                self._pending.put_nowait(batches)
                return
            except queue.Full:
                pass
        self._publish(batches)

    def _publish(self, batches: Batches) -> None:
        try:
            sent = put_metric_data(self._cloudwatch, batches)
        except Exception as error:  # the embedded AWS may be restarting: never crash a handler
            self._on_error(f"EMF -> put_metric_data failed: {type(error).__name__}: {error}")
            return
        with self._count_lock:
            self.published += sent

    def _publish_pending(self, pending: queue.Queue[Batches | None]) -> None:
        """The publisher: wait for a line, take whatever else is pending, send it together;
        stop at the ``None`` that :meth:`drain` queues after the last line."""
        while True:
            first = pending.get()
            taken = [first]
            while first is not None:  # bounded by the queue's size
                try:
                    taken.append(pending.get_nowait())
                except queue.Empty:
                    break
            lines = [batches for batches in taken if batches is not None]
            if lines:
                self._publish(merged(lines))
            if None in taken:
                return

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Publish everything pending and stop the publisher (a later EMF line starts another)."""
        with self._lock:
            publisher, self._publisher = self._publisher, None
            pending = self._pending
        if publisher is None:
            return
        pending.put(None)  # after every line queued for this publisher (they queue under the lock)
        publisher.join(timeout=timeout_s)

    # installation ---------------------------------------------------------------------
    def install(self) -> EmfTee:
        """Become ``sys.stdout`` (remembering the previous one)."""
        if self._previous is None:
            self._previous = sys.stdout
            sys.stdout = self
        return self

    def uninstall(self) -> None:
        """Restore the previous ``sys.stdout``; this thread's unfinished line is written out."""
        rest = getattr(self._local, "buffer", "")
        if rest:
            self._local.buffer = ""
            self._line(rest)
        self.drain()
        if self._previous is not None:
            if sys.stdout is self:
                sys.stdout = self._previous
            self._previous = None

    def __enter__(self) -> EmfTee:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()
