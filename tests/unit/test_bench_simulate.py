"""The benchmark's simulation: deterministic, faithful to Kisi's bucket and to urllib3, and the
gateway keeps its promises on a small burst. Virtual time only: no sockets, no sleeping."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from bench.engine import Engine, Process
from bench.kisi_model import Reply, VirtualKisi
from bench.simulate import BURST, REVOKED, ClosedLoop, run
from bench.strategies import as_urllib3_response, urllib3_delay, urllib3_retry
from bench.tracking import TrackedCall

SMALL_BURST = replace(BURST, name="small_burst", load=ClosedLoop(callers=10, count=50))
SMALL_MIXED = replace(SMALL_BURST, name="small_mixed", unlock_share=0.3)


def read(index: int) -> TrackedCall:
    return TrackedCall(index, "GET", "/locks/1", "GET /locks/{id}", 86_400.0)


@pytest.mark.parametrize("strategy", ["gateway", "jitter", "urllib3"])
def test_same_seed_gives_the_same_figures(strategy: str) -> None:
    first = run(SMALL_BURST, strategy, seed=3)
    again = run(SMALL_BURST, strategy, seed=3)
    assert first.figures == again.figures
    assert first.attempts == again.attempts


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
def test_a_small_burst_through_the_gateway_ends_every_request_in_time(scenario) -> None:
    figures = run(scenario, "gateway").figures
    assert figures.lost == 0
    assert figures.late_sends == 0
    assert figures.succeeded == figures.requests == 50  # 10 s of Kisi's quota: all fit
    assert figures.rate_limited == 0


def test_the_guard_stops_a_401_storm_that_the_baselines_keep_sending() -> None:
    gateway = run(REVOKED, "gateway").figures
    baseline = run(REVOKED, "immediate").figures
    assert gateway.unauthorized <= 10  # 5 to trip, then one probe per cooldown
    assert baseline.unauthorized > 10 * gateway.unauthorized


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
