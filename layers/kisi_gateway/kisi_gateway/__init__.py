"""kisi_gateway: the policy library behind the Kisi gateway's Lambdas.

Pure modules (no AWS, no HTTP): ``outcome`` (the classification table), ``errors`` (Kisi
error bodies), ``backoff`` (delays and Retry-After), ``policy`` (route policies), ``config``.
Adapters that take their client as an argument: ``client`` (Kisi over HTTP), ``records``,
``budget``, ``guard``, ``telemetry``. Handlers import what they use, so a cold start loads
only that.
"""

from kisi_gateway.core.backoff import (
    BackoffPolicy,
    Expire,
    RetryAt,
    parse_retry_after,
    schedule_retry,
)
from kisi_gateway.core.errors import GatewayError, GatewayErrorCode, KisiError, parse_kisi_error
from kisi_gateway.core.outcome import Outcome, OutcomeClass, Transport, classify_status
from kisi_gateway.core.policy import PolicyTable, Route, RoutePolicy, route_template

__all__ = [
    "BackoffPolicy",
    "Expire",
    "GatewayError",
    "GatewayErrorCode",
    "KisiError",
    "Outcome",
    "OutcomeClass",
    "PolicyTable",
    "RetryAt",
    "Route",
    "RoutePolicy",
    "Transport",
    "classify_status",
    "parse_kisi_error",
    "parse_retry_after",
    "route_template",
    "schedule_retry",
]
