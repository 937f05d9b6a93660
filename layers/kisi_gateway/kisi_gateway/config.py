"""Settings, read once from the environment at cold start and validated.

Every variable the functions read is a field here; ``template.yaml`` sets them (a test checks
the names match). A bad value fails at start with a message that names the variable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit

from kisi_gateway.core.identity import CallerCredentials
from kisi_gateway.core.policy import PolicyConfigError, PolicyTable

T = TypeVar("T")


class ConfigError(ValueError):
    """A missing or invalid environment variable; the message names it."""


def _text(raw: str) -> str:
    return raw


def _url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ValueError("must be an absolute http(s) URL without a query")
    return raw.rstrip("/")


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _rates(raw: str) -> dict[str, float]:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError('must be a JSON object like {"POST /event_sets": 1}')
    rates: dict[str, float] = {}
    for route, rate in doc.items():
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
            raise ValueError(f"rate of {route!r} must be a positive number")
        method, _, template = str(route).partition(" ")
        if not method.isupper() or not template.startswith("/"):
            raise ValueError(f"{route!r} must read 'METHOD /template'")
        rates[str(route)] = float(rate)
    return rates


def _env(name: str, parse: Callable[[str], Any] = _text, default: Any = None) -> Any:
    return field(default=default, metadata={"env": name, "parse": parse})


# Kisi's documented per-route limits (KISI_API.md "Rate limits"): stricter than 5/s.
DEFAULT_ROUTE_RATES = {"POST /event_sets": 1.0, "POST /signed_upload_urls": 0.1}


@dataclass(frozen=True)
class Settings:
    """Everything the functions are configured with. Defaults match template.yaml's."""

    kisi_base_url: str = _env("KISI_BASE_URL", _url, "https://api.kisi.io")
    kisi_api_key_secret: str | None = _env("KISI_API_KEY_SECRET")
    integration_identifier: str | None = _env("KISI_INTEGRATION_IDENTIFIER")
    integration_contact: str | None = _env("KISI_INTEGRATION_CONTACT")
    requests_table: str | None = _env("REQUESTS_TABLE")
    budget_table: str | None = _env("BUDGET_TABLE")
    guard_table: str | None = _env("GUARD_TABLE")
    tenants_table: str | None = _env("TENANTS_TABLE")
    identity_secret: str | None = _env("IDENTITY_SECRET")
    credential_key_id: str | None = _env("CREDENTIAL_KEY_ID")
    caller_credentials: CallerCredentials = _env(
        "CALLER_CREDENTIALS", CallerCredentials, CallerCredentials.ALLOW
    )
    retry_queue_url: str | None = _env("RETRY_QUEUE_URL", _url)
    dlq_url: str | None = _env("DLQ_URL", _url)
    alarm_topic_arn: str | None = _env("ALARM_TOPIC_ARN")  # where alarms send changes
    notify_topic_arn: str | None = _env("NOTIFY_TOPIC_ARN")  # where people read about them
    service_name: str = _env("POWERTOOLS_SERVICE_NAME", _text, "kisi-gateway")
    alarm_prefix: str = _env("ALARM_PREFIX", _text, "kisi-gateway")
    metrics_namespace: str = _env("POWERTOOLS_METRICS_NAMESPACE", _text, "KisiGateway")
    record_ttl_days: float = _env("RECORD_TTL_DAYS", _positive_float, 7.0)
    send_rate: float = _env("SEND_RATE", _positive_float, 5.0)
    route_rates: dict[str, float] = _env("ROUTE_RATES", _rates, None)
    default_wait_s: float = _env("DEFAULT_WAIT_S", _positive_float, 5.0)
    max_wait_s: float = _env("MAX_WAIT_S", _positive_float, 25.0)
    client_wait_s: float = _env("CLIENT_WAIT_S", _positive_float, 4.0)
    connect_timeout_s: float = _env("CONNECT_TIMEOUT_S", _positive_float, 3.05)
    read_timeout_s: float = _env("READ_TIMEOUT_S", _positive_float, 10.0)
    max_body_bytes: int = _env("MAX_BODY_BYTES", _positive_int, 200_000)
    guard_401_threshold: int = _env("GUARD_401_THRESHOLD", _positive_int, 5)
    guard_cooldown_s: float = _env("GUARD_COOLDOWN_S", _positive_float, 60.0)
    guard_cache_s: float = _env("GUARD_CACHE_S", _positive_float, 2.0)
    bad_rate_min_volume: int = _env("BAD_RATE_MIN_VOLUME", _positive_int, 20)
    route_bad_volume_threshold: int = _env("ROUTE_BAD_VOLUME_THRESHOLD", _positive_int, 20)
    policies: PolicyTable = field(default_factory=PolicyTable.default, metadata={})

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build and validate settings; raises :class:`ConfigError` naming the variable."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            name = item.metadata.get("env")
            if name is None:
                continue
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[item.name] = item.metadata["parse"](raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{name}: {exc}") from exc
        try:
            values["policies"] = PolicyTable.from_config(environ.get("ROUTE_POLICIES"))
        except PolicyConfigError as exc:
            raise ConfigError(str(exc)) from exc
        settings = cls(**values)
        if settings.default_wait_s > settings.max_wait_s:
            raise ConfigError("DEFAULT_WAIT_S must not exceed MAX_WAIT_S")
        return settings

    @staticmethod
    def variables() -> set[str]:
        """Every environment variable the settings read."""
        names = {f.metadata["env"] for f in fields(Settings) if "env" in f.metadata}
        return names | {"ROUTE_POLICIES"}

    def rates(self) -> dict[str, float]:
        """Per-route send rates: Kisi's documented limits, then configuration."""
        return {**DEFAULT_ROUTE_RATES, **(self.route_rates or {})}

    def need(self, value: T | None, variable: str) -> T:
        """``value``, or a :class:`ConfigError` naming the unset variable a function needs."""
        if value is None:
            raise ConfigError(f"{variable} must be set for this function")
        return value
