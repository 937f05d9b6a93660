"""``make bench``: how kisi-gateway compares with common retry strategies, and what it costs.

- :mod:`bench.simulate` — a discrete-event simulation in virtual time that drives the
  library's own policy code (classification, backoff, route policies, the send budget, the
  guard's decisions) against the Kisi simulator's core, beside three client-side baselines.
- :mod:`bench.realtime` — the same comparison for real, on loopback: the pipeline on moto and
  the simulator over HTTP, to confirm the simulation's ordering.
- :mod:`bench.coldstart` — import and init time, and peak memory, of each handler.
- :mod:`bench.cpu_cost` — the gateway's own CPU per synchronous call.

``python -m bench`` runs them all and writes ``docs/benchmarks.md`` and its plots.
"""
