"""Known-bad repeats stop at the gateway (:mod:`kisi_gateway.core.known_bad`).

:class:`KnownBadGate` runs the rules over a :class:`~kisi_gateway.stores.ports.KnownBadStore`:
:meth:`~KnownBadGate.answer` before a call is sent (Kisi's remembered refusal, or ``None``),
:meth:`~KnownBadGate.observe` after every answer from Kisi, in both Lambdas (a final client
error is remembered, a successful write forgets its path). The store failing never stops a
call: the gate then just lets it through, and the failure is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kisi_gateway.core.known_bad import (
    REPLAYED_HEADER,
    REPLAYED_VALUE,
    clears,
    remembered,
    request_key,
    resource_of,
    should_remember,
)
from kisi_gateway.pipeline.kisi_http import AttemptResult, KisiCall, KisiResponse
from kisi_gateway.pipeline.replies import Reply
from kisi_gateway.pipeline.telemetry import Telemetry
from kisi_gateway.stores.ports import KnownBadHints, KnownBadStore, KnownBadStoreError

LOG = logging.getLogger("kisi_gateway")
PREVENTED_KNOWN_BAD = "known_bad"


@dataclass
class KnownBadGate:
    """Answers repeats of requests Kisi refused, for ``window_s`` seconds per refusal."""

    store: KnownBadStore
    telemetry: Telemetry
    window_s: float
    # None: look the entries up before every send. Else the guard's hint spares the lookup
    # for an identity with no live entry (a refusal noted by another Lambda is seen within
    # the guard's verdict cache, as its pauses are).
    hints: KnownBadHints | None = None

    def answer(self, identity: str, route_key: str, call: KisiCall, now: float) -> Reply | None:
        """Kisi's remembered answer to this very request of ``identity``, else ``None``."""
        if self.window_s <= 0:
            return None
        if self.hints is not None and not self.hints.may_know_bad(identity, now):
            return None
        key = request_key(call.method, call.path, call.query, call.body)
        try:
            known = self.store.find(identity, resource_of(call.path), key, now)
        except KnownBadStoreError as exc:
            LOG.warning("known-bad entries unreadable, sending", extra={"error": str(exc)})
            return None
        if known is None:
            return None
        self.telemetry.prevented(PREVENTED_KNOWN_BAD, route_key)
        headers = {REPLAYED_HEADER: REPLAYED_VALUE, "X-Gateway-Attempts": "0",
                   "X-Kisi-Gateway-Replayed-For": str(known.retry_after_s(now))}
        if known.content_type:
            headers["Content-Type"] = known.content_type
        return Reply(known.status, headers, known.body)

    def observe(self, identity: str, call: KisiCall, result: AttemptResult, now: float) -> None:
        """Remember a final client error; forget the path after a successful write."""
        if not isinstance(result, KisiResponse) or self.window_s <= 0:
            return
        resource = resource_of(call.path)
        try:
            if should_remember(call.method, result.status) and not result.too_large:
                entry = remembered(result.status, result.headers.get("content-type"),
                                   result.body, now, self.window_s)
                if entry is not None:
                    key = request_key(call.method, call.path, call.query, call.body)
                    if self.hints is not None:  # first: an entry nobody looks up is no use
                        self.hints.note_known_bad(identity, entry.until, now)
                    self.store.remember(identity, resource, key, entry)
            elif clears(call.method, result.status):
                self.store.forget(identity, resource)
        except KnownBadStoreError as exc:
            LOG.warning("known-bad entry not written", extra={"error": str(exc)})
