"""The send gate's bound: how long one ``Retry-After`` may stop every send of a Kisi user.

A 429 with ``Retry-After`` closes the send budget's gate (:mod:`kisi_gateway.core.ratelimit`)
so no Lambda sends for that user before then. Kisi documents neither the header nor its range
(KISI_API.md, "Rate limits"), so one answer of ``Retry-After: 86400`` would stop every route
for a day. The gate is therefore closed for at most ``max_gate_s`` (15 minutes by default,
``MAX_GATE_S``), and hitting the cap is counted (``GateCapped``) and alarmed: an operator
looks, and ``python -m ops gate status|reopen`` shows and reopens it. The request that got the
long ``Retry-After`` is not retried early: when the wait outlasts its deadline it ends with
reason ``retry_after_past_deadline``.

>>> gate_wait(86400.0, 900.0), gate_wait(3.0, 900.0), gate_wait(None, 900.0)
(900.0, 3.0, None)
"""

from __future__ import annotations

DEFAULT_MAX_GATE_S = 900.0


def gate_wait(retry_after_s: float | None, max_gate_s: float) -> float | None:
    """How long Kisi's ``retry_after_s`` closes the gate: itself, capped at ``max_gate_s``."""
    if retry_after_s is None:
        return None
    return min(retry_after_s, max_gate_s)
