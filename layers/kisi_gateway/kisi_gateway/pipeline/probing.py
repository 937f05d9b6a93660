"""The gateway sends its own half-open probes (:mod:`kisi_gateway.core.probes`).

When a guard check elects this request as a scope's half-open probe, the request is not sent
as the experiment. The gateway sends a cheap, safe read with the same credential instead
(``GET /login`` for the account, a collection read for a route), counts it as any attempt,
lets the guard judge it, and only then decides for the caller's request:

* the read proved the scope healthy (the guard closed it): the caller's request goes on;
* the read was refused again (the guard reopened the scope, cooldown doubled): the caller's
  request is paused, never sent;
* the read said nothing (429, 5xx, no answer: the guard released the lease): paused briefly,
  and the next check elects a new probe.

Scopes belong to one identity, so a probe is only ever sent for the caller's own scopes: a
paused caller's request is never the probe for anybody else.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kisi_gateway.core.breaker import HALF_OPEN_RETRY_S, Evidence, Pause, evidence, is_account
from kisi_gateway.core.probes import probe_for
from kisi_gateway.pipeline.kisi_http import KisiCall

if TYPE_CHECKING:
    from kisi_gateway.pipeline.sending import Acting, Sender

LOG = logging.getLogger("kisi_gateway")


def probe_elected(sender: Sender, route_key: str, acting: Acting) -> Pause | None:
    """Send the gateway's own probe for every scope the last check won; ``None``: healthy (or
    nothing to probe), the caller's request may be sent; else the pause to honour."""
    for scope in sender.guard.probing(acting.identity, route_key):
        probe = probe_for(scope, route_key)
        call = KisiCall(probe.method, probe.path, probe.query, credential=acting.who.credential)
        result = sender.kisi.send(call)
        now = sender.clock.now()
        outcome = result.outcome
        who = acting.who
        sender.telemetry.attempt(f"{probe.method} {probe.path}", outcome, None, who.tenant,
                                 who.kind.value)
        sender.guard.observe(acting.identity, probe.observe_as, outcome, now)
        sender.budget.observe(acting.bucket, f"{probe.method} {probe.path}", outcome, None, now)
        verdict = evidence(scope, outcome)
        LOG.info("guard probe sent by the gateway",
                 extra={"scope_kind": "account" if is_account(scope) else "route",
                        "probe": f"{probe.method} {probe.path}", "status": outcome.status,
                        "evidence": verdict.value})
        if verdict is Evidence.BAD:
            reopened = sender.guard.check(acting.identity, route_key, now)
            return reopened or Pause(scope, "the probe was refused again", HALF_OPEN_RETRY_S)
        if verdict is Evidence.NEUTRAL:
            return Pause(scope, "a probe could not tell whether Kisi accepts this again",
                         HALF_OPEN_RETRY_S)
    return None
