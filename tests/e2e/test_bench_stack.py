"""``bench/stack.py`` against a running local stack, briefly: its two parts count every call
they make and read the simulator's log for the gateway's user. Figures are not checked (they
are timings); what is checked is that nothing is lost or counted twice. One test, so that the
suite starts one stack for it."""

from __future__ import annotations

from bench.stack import measure_latency, run_loop
from tests.e2e.conftest import DIRECT_KEY, LocalStack


def test_the_stack_parts_account_for_every_call(stack: LocalStack) -> None:
    latency = measure_latency(stack, calls=3, spacing_s=0.25, direct_key=DIRECT_KEY)
    assert (latency.calls, latency.failed) == (3, 0)
    assert latency.gateway_median_ms > 0  # both ways were timed
    assert latency.direct_median_ms > 0

    loop = run_loop(stack, reads=6, callers=2, drain_s=20.0)
    assert loop.unfinished == 0
    assert loop.inline + loop.deferred + sum(loop.other.values()) == 6
    assert loop.kisi_requests >= loop.inline  # each inline answer reached Kisi at least once
    assert sum(loop.deferred_ended.values()) == loop.deferred
