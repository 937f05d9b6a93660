"""A Kisi API simulator: a real HTTP server on loopback that answers like api.kisi.io.

Why it exists: the gateway's job is to survive Kisi's failure modes (429 storms, 5xx, hangs
with an unknown outcome, revoked keys, suspension). Testing that against the real Kisi is slow,
rude and never deterministic, so this module plays Kisi on 127.0.0.1 with the behaviour recorded
in ``/work/shared/KISI_API.md`` and adds switches that inject each failure on demand. It uses
the standard library only, so ``make run``, the tests, the demo and the benchmarks share it.

Run it in the foreground (Ctrl-C stops it)::

    python -m kisi_sim --port 8080
    kisi-sim listening on http://127.0.0.1:8080

Embed it (tests and benchmarks inject the clock, the random source and the sleep)::

    with KisiSimulator(SimConfig(seed_counts={"locks": 3}), clock=fake_clock) as sim:
        requests.get(f"{sim.url}/locks", headers={"Authorization": "KISI-LOGIN sim-demo-key"})
        assert len(sim.calls("GET", "/locks")) == 1

What it mimics (each rule comes from KISI_API.md):

- ``Authorization: KISI-LOGIN <secret>`` on every call; a key belongs to a user and all keys
  of a user share one token bucket (5 req/s, burst 5); ``POST /event_sets`` 1/s and
  ``POST /signed_upload_urls`` 1 per 10 s on top; unauthenticated calls share a bucket per IP.
- The other documented schemes (``Bearer``, ``KISI-ACCESS-KEY``, ``KISI-GROUP-LINK``,
  ``KISI-SERVICE``) map a configured credential to its user; a placeholder such as
  ``Authorization: null`` or ``KISI-LOGIN null`` is no credential (401).
- Identity routes: ``POST /logins`` signs in with e-mail and password and needs no key (200
  with a new login's ``secret``; 401 ``afc516`` for a wrong e-mail or password); ``GET
  /logins``; ``DELETE /login`` deletes the login that sent it (its secret then answers 401),
  ``DELETE /login/elsewhere`` the user's other logins, ``DELETE /logins/{id}`` one by id.
  ``GET /organizations`` answers one organization (Kisi's Python client probes it).
- Kisi-shaped errors ``{"error": "...", "code": "<6 hex>"}``, 422 as ``{"errors": {...}}``,
  a non-existent id answers **403**, creates answer **200**, updates/deletes **204**.
- Offset pagination with ``X-Collection-Range: start-end/total`` (``*/0`` when empty).
- The 429 body is undocumented: plain text by default, JSON or empty on demand; ``Retry-After``
  can be switched off, because clients must not require it.

Environment (``SimConfig.from_env``; every variable is optional, empty means "default"; each
name is ``KISI_SIM_`` + the upper-cased field name):

==================================  ============================================================
``KISI_SIM_KEYS``                   JSON object secret -> user id  [``{"sim-demo-key": 1}``]
``KISI_SIM_ACCOUNTS``               JSON object e-mail -> ``{"password", "user_id"}`` for
                                    ``POST /logins``  [``user1@example.com`` /
                                    ``sim-demo-password``, user 1]
``KISI_SIM_CREDENTIALS``            JSON object scheme -> {secret -> user id} for the
                                    other schemes, e.g. ``{"Bearer": {"tok": 2}}``  [none]
``KISI_SIM_SEED``                   seed of the fault dice  [0]
``KISI_SIM_SEED_COUNTS``            JSON object collection -> seeded rows
                                    [locks 120, places 5, users 60, groups 8,
                                    role_assignments 25]
``KISI_SIM_RATE_PER_S``             per-user token refill, requests/s  [5]
``KISI_SIM_BURST``                  per-user bucket size  [5]
``KISI_SIM_ROUTE_RATES``            JSON object "METHOD /template" -> requests/s (burst 1)
                                    [``POST /event_sets`` 1, ``POST /signed_upload_urls`` 0.1]
``KISI_SIM_DEPRECATED_ROUTES``      JSON object "/template" or "METHOD /template" -> Sunset
                                    value; adds ``Deprecation``/``Sunset`` headers  [none]
``KISI_SIM_VERBOSE``                1/true: log each request line and tracebacks  [off]
``KISI_SIM_ERROR_RATE``             0..1 chance of an injected 5xx  [0]
``KISI_SIM_ERROR_STATUS``           500, 502, 503 or 504 for injected errors/outages  [503]
``KISI_SIM_LATENCY_MS``             delay added to every request  [0]
``KISI_SIM_HANG_MS``                delay before processing a hung request  [0]
``KISI_SIM_HANG_RATE``              0..1 chance that a request hangs  [1]
``KISI_SIM_OUTAGE_UNTIL``           epoch seconds; until then every call gets ERROR_STATUS
``KISI_SIM_OUTAGE_SECONDS``         outage from start for that many seconds
``KISI_SIM_RETRY_AFTER``            send ``Retry-After`` on 429  [true]
``KISI_SIM_RATE_LIMIT_BODY``        429 body: text, json or empty  [text]
``KISI_SIM_REVOKED_KEYS``           comma list or JSON array of revoked secrets  [none]
``KISI_SIM_SUSPEND_AFTER_BAD``      suspend a user after that many 4xx in the window; 0 = off
``KISI_SIM_SUSPEND_WINDOW_S``       window of the suspension count, seconds  [60]
==================================  ============================================================

The CLI also reads ``KISI_SIM_HOST`` [127.0.0.1] and ``KISI_SIM_PORT`` [8080].

Admin API (no Kisi key needed, never counted in the stats):

- ``GET /__admin/faults`` -- the fault settings (revoked keys shown as fingerprints).
- ``PUT /__admin/faults`` -- JSON merge of fault fields; ``outage_seconds: n`` starts an
  outage of n seconds from now, ``outage_until: null`` ends one.
- ``POST /__admin/reset`` -- restore the start-up faults, seed data and credentials (logins
  created or deleted since are forgotten), clear buckets, suspensions and stats (204).
- ``GET /__admin/stats`` -- counts and the request log; ``?log=0`` omits the log.

The request log never holds a key or the ``Authorization`` header: only the user id, the
auth scheme, a fingerprint of the credential (``key_fingerprint``: a SHA-256 prefix) and a
SHA-256 of the request body.

Modules, by role: :mod:`kisi_sim.config` (SimConfig, Faults), :mod:`kisi_sim.limits` (token
buckets, suspension), :mod:`kisi_sim.store` (collections and seed data),
:mod:`kisi_sim.identity` (Authorization schemes, credentials, accounts, logins),
:mod:`kisi_sim.api` (the endpoints, sign-in and logins included, and the routing table),
:mod:`kisi_sim.responses` (Kisi-shaped answers), :mod:`kisi_sim.request_log`,
:mod:`kisi_sim.simulator` (the core: gates, admin API), :mod:`kisi_sim.server` (the socket
layer) and :mod:`kisi_sim.cli`.
"""

from kisi_sim.api import ApiCall
from kisi_sim.cli import main
from kisi_sim.config import DEMO_EMAIL, DEMO_KEY, DEMO_PASSWORD, Faults, SimConfig, SimConfigError
from kisi_sim.identity import (
    Account,
    AuthHeader,
    Credential,
    LoginBook,
    key_fingerprint,
    parse_authorization,
)
from kisi_sim.request_log import RequestEntry, StatsSnapshot
from kisi_sim.responses import ERRORS, SimRequest, SimResponse, collection_range
from kisi_sim.simulator import KisiSimulator
from kisi_sim.store import COLLECTIONS, CollectionSpec, SimStore

__all__ = [
    "COLLECTIONS",
    "DEMO_EMAIL",
    "DEMO_KEY",
    "DEMO_PASSWORD",
    "ERRORS",
    "Account",
    "ApiCall",
    "AuthHeader",
    "CollectionSpec",
    "Credential",
    "Faults",
    "KisiSimulator",
    "LoginBook",
    "RequestEntry",
    "SimConfig",
    "SimConfigError",
    "SimRequest",
    "SimResponse",
    "SimStore",
    "StatsSnapshot",
    "collection_range",
    "key_fingerprint",
    "main",
    "parse_authorization",
]
