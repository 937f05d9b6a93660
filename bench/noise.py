"""The send budget under noise: throughput when Kisi answers 429 at random, in virtual time.

20 closed-loop senders (one per Lambda) share the library's in-memory send budget
(:class:`~kisi_gateway.stores.memory.MemorySendBudget`, the same arithmetic as the DynamoDB
one) and send to a Kisi modelled as its simulator's token bucket (5 req/s, burst 5) that also
answers a share of otherwise good requests 429 at random, with ``Retry-After: 1``. Each sender
wakes a little late for its slot (uniform up to ``jitter_s``), as Lambda timers do, and the
network adds a round trip. Reported: successes per second against Kisi's limit, which 429s
were the bucket's (our own rate) and which were random, and the share of requests whose slot
fell within the caller's 5 s wait when it first asked (answered inline rather than deferred).

``python -m bench.noise`` prints the figures for 0 % and 10 % random 429s.
"""

from __future__ import annotations

import argparse
import heapq
import random
from dataclasses import dataclass

from kisi_gateway.core.outcome import classify_status
from kisi_gateway.core.ratelimit import PACE, Booking, BudgetLimits
from kisi_gateway.stores.memory import MemorySendBudget
from kisi_sim.limits import TokenBucket

LIMIT = 5.0  # Kisi: requests per second per user
BURST = 5.0  # the simulator's bucket
SENDERS = 20
DURATION_S = 600.0
WAIT_S = 5.0  # each sender books at most this far ahead, as an inline caller would
RTT_S = (0.05, 0.15)
JITTER_S = 0.03
ROUTE = "GET /locks/{id}"
SEED = 20_261_203


@dataclass(frozen=True, slots=True)
class NoiseRun:
    """One run: successes per second, the share of the limit, and the 429s by cause."""

    noise: float
    successes: int
    attempts: int
    own_429: int
    random_429: int
    duration_s: float
    first_asks: int = 0  # requests that asked the budget (a retry after a 429 asks anew)
    inline: int = 0  # of those, the ones whose slot fell within the caller's wait at once

    @property
    def throughput(self) -> float:
        return self.successes / self.duration_s

    @property
    def share_of_limit(self) -> float:
        return self.throughput / LIMIT


def run(noise: float, *, seed: int = SEED, duration_s: float = DURATION_S,
        jitter_s: float = JITTER_S, pace: float = PACE) -> NoiseRun:
    """Run the closed loop for ``duration_s`` virtual seconds with ``noise`` random 429s."""
    rng = random.Random(seed)
    budget = MemorySendBudget(limits=BudgetLimits(LIMIT, pace=pace))
    kisi = TokenBucket(LIMIT, BURST, BURST, 0.0)
    ok = classify_status(200)
    throttled = classify_status(429)
    counts = {"successes": 0, "attempts": 0, "own": 0, "random": 0, "asks": 0, "inline": 0}
    # (time, sequence, sender, action): "ask" the budget ("again" after a refusal), or
    # "answer" with a status
    events: list[tuple[float, int, int, str, int]] = []
    sequence = 0

    def schedule(at: float, sender: int, action: str, status: int = 0) -> None:
        nonlocal sequence
        sequence += 1
        heapq.heappush(events, (at, sequence, sender, action, status))

    for sender in range(SENDERS):
        schedule(rng.uniform(0.0, 1.0), sender, "ask")
    while events:
        now, _, sender, action, status = heapq.heappop(events)
        if now > duration_s:
            break
        if action == "answer":
            budget.observe("user", ROUTE, ok if status == 200 else throttled,
                           1.0 if status == 429 else None, now)
            counts["successes"] += status == 200
            schedule(now, sender, "ask")  # the next request (a 429 is retried as one)
            continue
        grant = budget.acquire("user", ROUTE, now, WAIT_S, Booking(holder=f"id-{sender % 4}"))
        if action == "ask":
            counts["asks"] += 1
            counts["inline"] += grant.ok
        if not grant.ok:  # a deferred caller: its retry asks again later
            schedule(now + max(grant.wait_s - WAIT_S, 0.05), sender, "again")
            continue
        sent = now + grant.wait_s + rng.uniform(0.0, jitter_s)
        half = rng.uniform(*RTT_S) / 2
        kisi.refill(sent + half)
        counts["attempts"] += 1
        if kisi.wait_for_token() > 0:
            counts["own"] += 1
            answer = 429
        else:
            kisi.tokens -= 1.0
            answer = 429 if rng.random() < noise else 200
            counts["random"] += answer == 429
        schedule(sent + 2 * half, sender, "answer", answer)
    return NoiseRun(noise, counts["successes"], counts["attempts"], counts["own"],
                    counts["random"], duration_s, counts["asks"], counts["inline"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--duration", type=float, default=DURATION_S)
    args = parser.parse_args()
    for noise in (0.0, 0.1):
        result = run(noise, seed=args.seed, duration_s=args.duration)
        print(
            f"random 429s {noise:4.0%}: {result.throughput:.2f} successes/s "
            f"({result.share_of_limit:.0%} of Kisi's {LIMIT:g}/s), "
            f"{result.attempts} attempts, 429s from Kisi's bucket {result.own_429} "
            f"({result.own_429 / max(result.attempts, 1):.2%}), random {result.random_429}, "
            f"answered inline {result.inline / max(result.first_asks, 1):.1%}"
        )


if __name__ == "__main__":
    main()
