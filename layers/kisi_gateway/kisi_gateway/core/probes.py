"""Which request the gateway sends itself as a half-open probe, so no caller's write is one.

When a paused scope's cooldown ends, one check fleet-wide is elected as the probe
(:mod:`kisi_gateway.core.breaker`). Sending that caller's own request would make an unlock or
a create the experiment (and a hostile caller's bad request the one that keeps a pause shut),
so the gateway sends a cheap, safe read of its own with the same credential, then lets the
caller's request through only if the read proved the scope healthy:

* the account (a 401 storm: is the key good again?): ``GET /login``, the current login, which
  every valid credential may read (KISI_API.md, "Useful probes");
* a route (a 403/404/422 storm): a read of the route's collection, e.g. ``GET /locks?limit=1``
  for ``POST /locks/{id}/unlock``: the longest documented ``GET`` on a placeholder-free prefix
  of the route's template. No such read: ``GET /login`` (it proves the key, not the route).

>>> probe_for("id-0a1b2c3d", "POST /locks/{id}/unlock")
ProbeCall(method='GET', path='/login', query=(), observe_as='GET /login')
>>> route = probe_for("id-0a1b2c3d|POST /locks/{id}/unlock", "POST /locks/{id}/unlock")
>>> route.path, route.query, route.observe_as
('/locks', (('limit', '1'),), 'POST /locks/{id}/unlock')
"""

from __future__ import annotations

from dataclasses import dataclass

from kisi_gateway.core.breaker import is_account
from kisi_gateway.core.kisi_api import Documented, KisiApi, default_table

LOGIN = "GET /login"


@dataclass(frozen=True, slots=True)
class ProbeCall:
    """The gateway's own probe: what to send, and the route key its answer is observed as
    (so the evidence reaches the scope being probed)."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    observe_as: str


def probe_for(scope: str, route_key: str, api: KisiApi | None = None) -> ProbeCall:
    """The read that probes ``scope`` (the account's, or ``route_key``'s for one identity)."""
    if is_account(scope):
        return ProbeCall("GET", "/login", (), LOGIN)
    table = api if api is not None else default_table()
    literal: list[str] = []
    for segment in route_key.partition(" ")[2].split("/")[1:]:
        if "{" in segment:  # placeholder-free prefixes only: a collection needs no caller's id
            break
        literal.append(segment)
    for length in range(len(literal), 0, -1):
        path = "/" + "/".join(literal[:length])
        if isinstance(table.match("GET", path), Documented):
            return ProbeCall("GET", path, (("limit", "1"),), route_key)
    return ProbeCall("GET", "/login", (), route_key)
