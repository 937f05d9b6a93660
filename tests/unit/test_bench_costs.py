"""The benchmark's cost figures and the Kisi it assumes: resources metered on each request of
the gateway's run, priced per million calls; random 429s and a Kisi without ``Retry-After``.
Virtual time only: no sockets, no sleeping."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from bench.costs import (
    EMF_ENVELOPE_BYTES,
    LAMBDA_MEMORY_GB,
    PLATFORM_LOG_BYTES,
    PRICE,
    Usage,
    breakdown_rows,
    eventbridge_per_million,
    per_million,
)
from bench.engine import Engine, Process
from bench.kisi_model import Reply, VirtualKisi
from bench.simulate import BURST, OUTAGE, ClosedLoop, OpenLoop, run
from bench.tracking import Final, TrackedCall

SMALL_BURST = replace(BURST, name="small_burst", load=ClosedLoop(callers=10, count=50))
SMALL_OUTAGE = replace(OUTAGE, name="small_outage", load=OpenLoop(1.0, 60.0), outage=(10.0, 40.0))


def read(index: int) -> TrackedCall:
    return TrackedCall(index, "GET", "/locks/1", "GET /locks/{id}", 86_400.0)


def test_a_million_calls_cost_a_million_times_one_call() -> None:
    usage = Usage(requests=2, api_requests=2, lambda_invocations=2, rru=6, wru=2)
    usage.lambda_run(0.1234)  # billed as 124 ms
    cost = per_million(usage)
    assert cost["api_requests"] == pytest.approx(3.50)
    assert cost["rru"] == pytest.approx(3 * 0.125)
    assert cost["wru"] == pytest.approx(0.625)
    assert cost["lambda_gb_s"] == pytest.approx(0.124 * LAMBDA_MEMORY_GB * PRICE["lambda_gb_s"]
                                                * 1_000_000 / 2)
    assert cost["lambda_invocations"] == pytest.approx(3 * 0.20 / 2)
    assert usage.log_bytes == PLATFORM_LOG_BYTES + EMF_ENVELOPE_BYTES  # one EMF document
    assert per_million(Usage()) == {}


def test_eventbridge_is_one_event_and_one_invocation_per_kisi_request() -> None:
    assert eventbridge_per_million(1.0) == pytest.approx(1.20)
    assert eventbridge_per_million(2.5) == pytest.approx(1.50)


def test_the_breakdown_ends_with_the_total_of_its_lines() -> None:
    usage = Usage(requests=1, api_requests=1, lambda_invocations=1, rru=1, wru=1)
    rows = breakdown_rows({"synchronous": usage, "deferred": Usage()})
    assert len(rows[0]) == 3  # no deferred calls: one kind of column pair only
    assert rows[-1][-1] == f"**${sum(per_million(usage).values()):,.2f}**"


def test_every_request_of_the_gateway_run_is_metered_once() -> None:
    result = run(SMALL_OUTAGE, "gateway", seed=5)
    sync, deferred = result.usage["synchronous"], result.usage["deferred"]
    paused = sum(1 for call in result.calls if call.final is Final.PAUSED)
    assert sync.requests + deferred.requests == len(result.calls) - paused
    assert deferred.requests == (result.gateway.deferred if result.gateway else -1)
    # every call is one API Gateway request and one api_call invocation, at least
    assert sync.api_requests == sync.lambda_invocations == sync.requests
    assert deferred.api_requests == deferred.requests
    assert deferred.lambda_invocations > deferred.requests  # plus the worker's share
    assert sync.sqs_requests == 0  # a synchronous answer never touches the queue
    assert deferred.sqs_requests >= 2 * deferred.requests  # enqueue, receive, delete
    assert sync.log_bytes > 0
    assert sync.rru > 0
    assert sync.wru > 0


def test_the_cost_figures_are_the_same_for_a_seed() -> None:
    assert run(SMALL_BURST, "gateway", seed=3).usage == run(SMALL_BURST, "gateway", seed=3).usage


def exchange(kisi: VirtualKisi, engine: Engine, count: int, spacing_s: float) -> list[Reply]:
    replies: list[Reply] = []

    def send(call: TrackedCall) -> Process[None]:
        replies.append((yield from kisi.request(call)))

    for index in range(count):
        engine.at(index * spacing_s, lambda index=index: engine.spawn(send(read(index))))
    engine.run(until=count * spacing_s + 10, max_events=100_000)
    return replies


@pytest.mark.parametrize("retry_after", [True, False])
def test_random_429s_come_at_the_share_asked_and_say_retry_after_only_if_kisi_does(
    retry_after: bool,
) -> None:
    engine = Engine()
    kisi = VirtualKisi(engine, rng=random.Random(4), retry_after=retry_after, random_429=0.1,
                       dice=random.Random(5))
    replies = exchange(kisi, engine, 1_000, 0.25)  # 4 per second: the bucket never refuses
    limited = [reply for reply in replies if reply.status == 429]
    assert 70 <= len(limited) <= 130  # 10 % of 1,000, seeded
    assert {reply.retry_after for reply in limited} == ({"1"} if retry_after else {None})


def test_a_kisi_without_retry_after_still_limits_at_five_per_second() -> None:
    engine = Engine()
    kisi = VirtualKisi(engine, rng=random.Random(1), latency_s=(0.1, 0.1), retry_after=False)
    replies = exchange(kisi, engine, 7, 0.0)
    assert sorted(reply.status for reply in replies) == [200] * 5 + [429] * 2
    assert all(reply.retry_after is None for reply in replies)


def test_the_urllib3_rows_differ_only_in_retry_after() -> None:
    scenario = replace(SMALL_BURST, name="tiny", load=ClosedLoop(callers=10, count=20))
    told = run(scenario, "urllib3", seed=2)
    untold = run(scenario, "urllib3_no_ra", seed=2)
    assert told.figures.rate_limited > 0
    assert untold.figures.rate_limited > 0
    assert told.figures != untold.figures  # urllib3 sleeps its own backoff instead
