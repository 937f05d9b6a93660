"""The benchmark's simulation: deterministic, faithful to Kisi's bucket and to urllib3, and the
gateway row is the library's own code, which keeps its promises on small scenarios. Virtual
time only: no sockets, no sleeping."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from bench.engine import Engine, Process
from bench.kisi_model import Reply, VirtualKisi
from bench.simulate import BURST, OUTAGE, REVOKED, ClosedLoop, OpenLoop, Scenario, run
from bench.strategies import as_urllib3_response, urllib3_delay, urllib3_retry
from bench.tracking import Final, TrackedCall
from kisi_gateway.pipeline.forwarding import Forwarder
from kisi_gateway.pipeline.retrying import RetryWorker

SMALL_BURST = replace(BURST, name="small_burst", load=ClosedLoop(callers=10, count=50))
SMALL_MIXED = replace(SMALL_BURST, name="small_mixed", unlock_share=0.3)
# One request a second for a minute, 70/30 reads and unlocks; Kisi down from 10 s to 40 s.
SMALL_OUTAGE = replace(OUTAGE, name="small_outage", load=OpenLoop(1.0, 60.0), outage=(10.0, 40.0))


def read(index: int) -> TrackedCall:
    return TrackedCall(index, "GET", "/locks/1", "GET /locks/{id}", 86_400.0)


@pytest.mark.parametrize("strategy", ["gateway", "jitter", "urllib3"])
def test_same_seed_gives_the_same_figures(strategy: str) -> None:
    first = run(SMALL_BURST, strategy, seed=3)
    again = run(SMALL_BURST, strategy, seed=3)
    assert first.figures == again.figures
    assert first.attempts == again.attempts


def test_the_gateway_through_an_outage_is_the_same_for_a_seed() -> None:
    """Inline retries, the queue and the workers' threads interleave the same way each run."""
    first = run(SMALL_OUTAGE, "gateway", seed=5)
    again = run(SMALL_OUTAGE, "gateway", seed=5)
    assert first.attempts == again.attempts
    assert [(c.final, c.reason, c.ended) for c in first.calls] == [
        (c.final, c.reason, c.ended) for c in again.calls
    ]
    assert first.gateway == again.gateway
    assert first.gateway_notes == again.gateway_notes


def spy(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> Counter[str]:
    """Count calls of ``cls.name`` (still calling it)."""
    calls: Counter[str] = Counter()
    original: Callable[..., Any] = getattr(cls, name)

    def counted(self: object, *args: object, **kwargs: object) -> Any:
        calls[name] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, counted)
    return calls


def test_the_gateway_row_is_the_librarys_forwarder_and_retry_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forwarded = spy(monkeypatch, Forwarder, "forward")
    processed = spy(monkeypatch, RetryWorker, "process")
    result = run(SMALL_OUTAGE, "gateway")
    figures = result.figures
    assert forwarded["forward"] == figures.requests  # every request is one api_call
    deferred = result.gateway.deferred if result.gateway else 0
    assert deferred > 0  # the outage sends requests to the queue ...
    assert processed["process"] >= deferred  # ... and the worker takes each one at least once
    assert figures.lost == 0
    assert figures.late_sends == 0


def test_how_each_request_ended_is_what_the_gateway_reported() -> None:
    """Every end but the guard's 503 is one ``Telemetry.finished``; every attempt Kisi saw is
    one ``Attempts`` metric; every deferral one ``Deferred``."""
    result = run(SMALL_OUTAGE, "gateway")
    ends = Counter(call.final for call in result.calls)
    metrics = result.gateway_metrics
    assert metrics["Finished"] == len(result.calls) - ends[Final.PAUSED]
    assert metrics["Attempts"] == result.figures.attempts
    assert metrics.get("Deferred", 0) == (result.gateway.deferred if result.gateway else -1)
    assert ends[Final.EXPIRED] > 0  # unlocks made during the outage: their 30 s run out
    assert {c.reason for c in result.calls if c.final is Final.EXPIRED} <= {
        "deadline", "attempts_exhausted"
    }


def vthreads_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("vthread-")]


def test_a_run_cut_short_at_its_horizon_leaves_no_thread_behind() -> None:
    before = threading.active_count()
    result = run(replace(SMALL_OUTAGE, horizon_s=20.0), "gateway")
    assert result.figures.lost > 0  # requests still in flight when the run stopped
    assert vthreads_alive() == []
    assert threading.active_count() == before


def test_kisi_answers_429_once_the_burst_of_five_is_spent() -> None:
    engine = Engine()
    kisi = VirtualKisi(engine, rng=random.Random(1), latency_s=(0.1, 0.1))
    replies: list[Reply] = []

    def send(call: TrackedCall) -> Process[None]:
        replies.append((yield from kisi.request(call)))

    for index in range(7):  # seven at once: Kisi allows 5 per second, burst 5
        engine.spawn(send(read(index)))
    engine.after(1.0, lambda: engine.spawn(send(read(7))))  # a second later: refilled
    engine.run(until=10.0, max_events=1_000)

    assert [reply.status for reply in replies] == [200] * 5 + [429] * 2 + [200]
    assert replies[5].retry_after == "1"  # the wait for a token, rounded up to whole seconds
    assert replies[0].at == pytest.approx(0.1)  # one round trip


@pytest.mark.parametrize("scenario", [SMALL_BURST, SMALL_MIXED], ids=lambda s: s.name)
def test_a_small_burst_through_the_gateway_ends_every_request_in_time(scenario: Scenario) -> None:
    figures = run(scenario, "gateway").figures
    assert figures.lost == 0
    assert figures.late_sends == 0
    assert figures.succeeded == figures.requests == 50  # 10 s of Kisi's quota: all fit
    assert figures.rate_limited == 0


def test_the_guard_stops_a_401_storm_that_the_baselines_keep_sending() -> None:
    result = run(REVOKED, "gateway")
    gateway = result.figures
    baseline = run(REVOKED, "immediate").figures
    assert gateway.unauthorized <= 10  # 5 to trip, then one probe per cooldown
    assert baseline.unauthorized > 10 * gateway.unauthorized
    # The paused calls are api_call's own 503 answers, counted as its telemetry counts them.
    assert result.gateway is not None
    assert gateway.paused == result.gateway.paused_calls > 0
    assert result.gateway_metrics["GuardPaused"] >= gateway.paused


@pytest.mark.parametrize(
    ("statuses", "retry_after", "expected"),
    [
        ([503], None, 0.0),  # urllib3: no backoff before the first retry
        ([503, 503], None, 1.0),  # backoff_factor * 2 ** (2 - 1)
        ([503, 503, 503], None, 2.0),
        ([503] * 10, None, 120.0),  # capped at DEFAULT_BACKOFF_MAX
        ([429], "3", 3.0),  # Retry-After wins when present
    ],
)
def test_the_urllib3_baseline_sleeps_what_retry_sleep_would(
    statuses: list[int], retry_after: str | None, expected: float
) -> None:
    retry = urllib3_retry()
    response = as_urllib3_response(Reply(statuses[0], retry_after, 0.0))
    for status in statuses:
        response = as_urllib3_response(Reply(status, retry_after, 0.0))
        retry = retry.increment("GET", "https://api.kisi.io/locks/1", response=response)
    assert urllib3_delay(retry, response) == expected
