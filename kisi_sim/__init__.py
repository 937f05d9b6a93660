"""The Kisi API simulator: a loopback HTTP server that answers like api.kisi.io.

``make run``, the integration and end-to-end tests, the scenarios and the benchmarks all use
it; see :mod:`kisi_sim.simulator` for what it mimics and how to configure it. Run it alone
with ``python -m kisi_sim --port 8080``.
"""

from kisi_sim.simulator import (
    COLLECTIONS,
    DEMO_KEY,
    ERRORS,
    ApiCall,
    CollectionSpec,
    Faults,
    KisiSimulator,
    RequestEntry,
    SimConfig,
    SimConfigError,
    SimRequest,
    SimResponse,
    SimStore,
    StatsSnapshot,
    collection_range,
    main,
)

__all__ = [
    "COLLECTIONS",
    "DEMO_KEY",
    "ERRORS",
    "ApiCall",
    "CollectionSpec",
    "Faults",
    "KisiSimulator",
    "RequestEntry",
    "SimConfig",
    "SimConfigError",
    "SimRequest",
    "SimResponse",
    "SimStore",
    "StatsSnapshot",
    "collection_range",
    "main",
]
