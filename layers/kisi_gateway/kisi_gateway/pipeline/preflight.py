"""Before anything is sent: what the gateway answers itself because Kisi would surely refuse.

Kisi counts every refused request against the integration (KISI_API.md, "Suspension"). Three
kinds are answered here, without reaching Kisi, and counted as ``Prevented``:

* a path Kisi documents no route for: a Kisi-shaped 404 (an invented path would reach Kisi
  and come back 404, counted against the account);
* a documented path with a method it does not have: 405 with ``Allow``;
* a body missing a field Kisi documents as required, or of the wrong type, on a route whose
  body Kisi documents: a 422 in Kisi's own ``{"errors": {...}}`` shape;
* a repeat of a request Kisi already refused (:mod:`kisi_gateway.pipeline.known_bad`).

The route table is :mod:`kisi_gateway.core.kisi_api`'s, with the deployment's overrides
(``KISI_API_OVERRIDES``): extra routes, and routes that pass through unchecked with an
``UndocumentedPassed`` metric. Kisi's own JavaScript client (npm ``kisi-client`` 8.0.0) sends
``PUT`` for updates Kisi documents as ``PATCH``; Kisi's Rails routes answer both, so a PUT on a
documented PATCH path is forwarded. The service login's protection runs here too: it is the
stack's lifeline and never deletes or replaces itself through the gateway.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from kisi_gateway.core.errors import GatewayError, GatewayErrorCode
from kisi_gateway.core.identity import (
    SERVICE_LOGIN_BY_ID,
    CredentialKind,
    KisiLogin,
    protects_service_login,
)
from kisi_gateway.core.kisi_api import (
    Documented,
    KisiApi,
    MethodUndocumented,
    PathUndocumented,
    default_table,
)
from kisi_gateway.pipeline.callers import Who
from kisi_gateway.pipeline.calls import IncomingCall
from kisi_gateway.pipeline.kisi_http import KisiCall
from kisi_gateway.pipeline.known_bad import KnownBadGate
from kisi_gateway.pipeline.replies import Reply, error_reply, json_reply
from kisi_gateway.pipeline.telemetry import Telemetry

UNDOCUMENTED_PATH = "undocumented_path"
UNDOCUMENTED_METHOD = "undocumented_method"
INVALID_BODY = "invalid_body"


def refuse_deleting_the_service_login(
    call: IncomingCall, who: Who, login: Callable[[Who], KisiLogin | None]
) -> None:
    """Raise 403 when ``call`` would delete or replace the service login that sends it."""
    if who.kind is not CredentialKind.SERVICE:
        return
    own = login(who) if call.route.key in SERVICE_LOGIN_BY_ID else None
    login_id = own.login_id if own is not None else None
    unknown = call.route.key in SERVICE_LOGIN_BY_ID and login_id is None
    if unknown or protects_service_login(call.route.key, call.path, login_id):
        raise GatewayError(
            403, GatewayErrorCode.SERVICE_LOGIN_PROTECTED,
            "the gateway's own Kisi login cannot be deleted or changed through the "
            "gateway; send your own credential in Authorization to manage your logins",
        )


def _document(body: bytes | None) -> object:
    try:  # parse_call already checked it is a JSON object; this cannot fail for its bodies
        return json.loads(body) if body else None
    except ValueError:
        return None


@dataclass
class Screen:
    """What runs between "who is this" and "send it": preflight, then known-bad repeats."""

    telemetry: Telemetry
    login: Callable[[Who], KisiLogin | None]
    api: KisiApi | None = None  # None: Kisi's documented table without overrides
    known_bad: KnownBadGate | None = None

    def preflight(self, call: IncomingCall) -> Reply | None:
        """The gateway's own answer to a call Kisi documents no way to accept, else None."""
        api = self.api if self.api is not None else default_table()
        found = api.match(call.method, call.path)
        if isinstance(found, MethodUndocumented) and call.method == "PUT" and (
                "PATCH" in found.allowed):
            return None  # Kisi's own clients update with PUT (see the module's note)
        if isinstance(found, PathUndocumented | MethodUndocumented) and found.let_through:
            self.telemetry.undocumented_passed(found.key)
            return None
        if isinstance(found, PathUndocumented):
            self.telemetry.prevented(UNDOCUMENTED_PATH, call.route.key)
            return error_reply(GatewayError(
                404, GatewayErrorCode.UNDOCUMENTED_ROUTE,
                "Kisi documents no route for this path; it was not sent"))
        if isinstance(found, MethodUndocumented):
            self.telemetry.prevented(UNDOCUMENTED_METHOD, call.route.key)
            allowed = ", ".join(m for m in found.allowed if m != "HEAD")  # HEAD is refused
            return error_reply(GatewayError(
                405, GatewayErrorCode.METHOD_NOT_ALLOWED,
                f"Kisi documents {allowed} for this path, not {call.method}; it was not sent",
            )).with_headers(Allow=allowed)
        assert isinstance(found, Documented)
        if found.warn:
            self.telemetry.undocumented_passed(found.key)
            return None
        errors = api.check_body(found, _document(call.body))
        if errors is None:
            return None
        self.telemetry.prevented(INVALID_BODY, call.route.key)
        return json_reply(422, errors, {"X-Kisi-Gateway-Refused": "invalid-body"})

    def before_send(self, call: IncomingCall, who: Who, now: float) -> Reply | None:
        """The answer for a call that must not reach Kisi, else None (send it).

        Raises :class:`GatewayError` when the call would delete the service login.
        """
        refuse_deleting_the_service_login(call, who, self.login)
        early = self.preflight(call)
        if early is None and self.known_bad is not None:
            kisi_call = KisiCall(call.method, call.path, call.query, call.body)
            early = self.known_bad.answer(who.identity, call.route.key, kisi_call, now)
        return early
