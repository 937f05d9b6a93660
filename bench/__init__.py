"""``make bench``: how kisi-gateway compares with common retry strategies, and what it costs.

- :mod:`bench.simulate` — a discrete-event simulation in virtual time that runs the
  library's own api_call and retry_worker code (:mod:`bench.gateway`, on the virtual clock of
  :mod:`bench.vthreads`) against the Kisi simulator's core, beside three client-side
  baselines.
- :mod:`bench.realtime` — the same comparison for real, on loopback: the pipeline on moto and
  the simulator over HTTP, to confirm the simulation's ordering.
- :mod:`bench.coldstart` — import and init time, and peak memory, of each handler.
- :mod:`bench.cpu_cost` — the gateway's own CPU per synchronous call.

``python -m bench`` runs them all and writes ``docs/benchmarks.md`` and its plots.
"""
