"""The composition root: settings and AWS clients in, ready pipeline objects out.

Handlers call these once per container, on first use rather than at import, so a cold start
pays only for what that function touches. Tests build the same objects from fakes instead.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kisi_gateway.config import ConfigError, Settings
from kisi_gateway.core.backoff import RandomSource
from kisi_gateway.core.breaker import GuardRules
from kisi_gateway.pipeline.forwarding import Forwarder
from kisi_gateway.pipeline.kisi_http import KisiClient, Timeouts, build_session
from kisi_gateway.pipeline.monitoring import Monitor
from kisi_gateway.pipeline.retrying import RetryWorker
from kisi_gateway.pipeline.sending import KisiSender, Sender, SystemClock
from kisi_gateway.pipeline.telemetry import MemorySink, PowertoolsEmfSink, Telemetry
from kisi_gateway.stores.memory import MemoryGuard, MemoryQueue, MemoryRecordStore, MemorySendBudget
from kisi_gateway.stores.ports import Clock
from kisi_gateway.stores.queue import SqsRetryQueue
from kisi_gateway.stores.records import DynamoRecordStore

LOG = logging.getLogger("kisi_gateway")
SECRET_MAX_AGE_S = 300  # re-read the key every 5 minutes, so a rotated key is picked up


def read_api_key(settings: Settings) -> str:
    """The Kisi key from Secrets Manager (cached by Powertools Parameters).

    The secret holds the key itself, or JSON with an ``api_key`` field.
    """
    from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415 - cold start

    secret_id = settings.need(settings.kisi_api_key_secret, "KISI_API_KEY_SECRET")
    value = parameters.get_secret(secret_id, max_age=SECRET_MAX_AGE_S)
    text = value.decode() if isinstance(value, bytes) else str(value)
    if text.lstrip().startswith("{"):
        try:
            doc: Any = json.loads(text)
        except ValueError as exc:
            raise ConfigError("the Kisi key secret is not valid JSON") from exc
        key = doc.get("api_key") if isinstance(doc, dict) else None
        if not isinstance(key, str) or not key:
            raise ConfigError("the Kisi key secret has no api_key field")
        return key
    if not text.strip():
        raise ConfigError("the Kisi key secret is empty")
    return text.strip()


class KeyRing:
    """The current Kisi key: re-read through the secret cache, the last good one on failure.

    A rotated key is picked up within ``SECRET_MAX_AGE_S``; a Secrets Manager hiccup (or, in
    ``make run``, a restarted embedded AWS) does not stop sends with a key that worked.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._last = read_api_key(settings)  # fails at start if there is no usable key

    @property
    def first(self) -> str:
        return self._last

    def current(self) -> str:
        try:
            self._last = read_api_key(self._settings)
        except Exception as exc:  # any failure: keep the key that worked
            LOG.warning("could not re-read the Kisi key; using the last one",
                        extra={"error": type(exc).__name__})
        return self._last


def _client(service: str) -> Any:
    import boto3  # noqa: PLC0415 - cold start

    return boto3.client(service)  # type: ignore[call-overload]


def build_sender(settings: Settings) -> Sender:
    """The attempt machinery both Lambdas share, bound to one Kisi key."""
    from kisi_gateway.core.ratelimit import bucket_id_for_key  # noqa: PLC0415
    from kisi_gateway.stores.budget import DynamoSendBudget  # noqa: PLC0415
    from kisi_gateway.stores.guard import DynamoGuard  # noqa: PLC0415

    keys = KeyRing(settings)
    session = build_session()

    def kisi() -> KisiClient:
        return KisiClient(
            settings.kisi_base_url,
            # Read through Powertools' cache on every send: a rotated key is used within
            # SECRET_MAX_AGE_S, without a new container.
            api_key=keys.current,
            session=session,
            timeouts=Timeouts(settings.connect_timeout_s, settings.read_timeout_s),
            integration_identifier=settings.integration_identifier,
            integration_contact=settings.integration_contact,
        )

    dynamodb = _client("dynamodb")
    budget = DynamoSendBudget(
        dynamodb,
        settings.need(settings.budget_table, "BUDGET_TABLE"),
        # The bucket follows the key this container started with; a rotation starts a new
        # bucket in new containers (Kisi's quota is per user, so both share it there).
        bucket_id_for_key(keys.first),
        rate=settings.send_rate,
        route_rates=settings.rates(),
    )
    guard = DynamoGuard(
        dynamodb,
        settings.need(settings.guard_table, "GUARD_TABLE"),
        consecutive_401_threshold=settings.guard_401_threshold,
        cooldown_s=settings.guard_cooldown_s,
        cache_s=settings.guard_cache_s,
    )
    return Sender(
        kisi_factory=kisi,
        budget=budget,
        guard=guard,
        telemetry=Telemetry(PowertoolsEmfSink(settings.metrics_namespace)),
        clock=SystemClock(),
        rng=random.SystemRandom().random,
    )


def build_forwarder(settings: Settings) -> Forwarder:
    sender = build_sender(settings)
    return Forwarder(
        sender=sender,
        records=DynamoRecordStore(
            _client("dynamodb"), settings.need(settings.requests_table, "REQUESTS_TABLE")
        ),
        queue=_queue(settings),
        record_ttl_s=settings.record_ttl_days * 86_400,
        read_timeout_s=settings.read_timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
    )


def build_worker(settings: Settings) -> RetryWorker:
    return RetryWorker(
        sender=build_sender(settings),
        records=DynamoRecordStore(
            _client("dynamodb"), settings.need(settings.requests_table, "REQUESTS_TABLE")
        ),
        queue=_queue(settings),
        policies=settings.policies,
    )


def build_monitor(settings: Settings) -> Monitor:
    """The metrics Lambda's collaborators: CloudWatch, SNS and the guard's table."""
    from kisi_gateway.stores.cloudwatch import CloudWatchAlarms, MetricsReader  # noqa: PLC0415
    from kisi_gateway.stores.guard import DynamoGuard  # noqa: PLC0415

    cloudwatch = _client("cloudwatch")
    actions = (settings.alarm_topic_arn,) if settings.alarm_topic_arn else ()
    return Monitor(
        reader=MetricsReader(cloudwatch, settings.metrics_namespace, settings.service_name),
        alarms=CloudWatchAlarms(cloudwatch, settings.metrics_namespace, settings.alarm_prefix),
        guard=DynamoGuard(
            _client("dynamodb"),
            settings.need(settings.guard_table, "GUARD_TABLE"),
            consecutive_401_threshold=settings.guard_401_threshold,
            cooldown_s=settings.guard_cooldown_s,
            cache_s=settings.guard_cache_s,
        ),
        sns=_client("sns"),
        notify_topic_arn=settings.notify_topic_arn,
        alarm_actions=actions,
        prefix=settings.alarm_prefix,
        min_volume=settings.bad_rate_min_volume,
        route_volume_threshold=settings.route_bad_volume_threshold,
    )


def _queue(settings: Settings) -> SqsRetryQueue:
    return SqsRetryQueue(
        _client("sqs"),
        settings.need(settings.retry_queue_url, "RETRY_QUEUE_URL"),
        settings.need(settings.dlq_url, "DLQ_URL"),
    )


def settings_from(environ: Mapping[str, str]) -> Settings:
    return Settings.from_env(environ)


@dataclass
class InMemoryGateway:
    """The whole pipeline over the in-memory stores: for functional tests and the benchmark.

    ``kisi`` is anything with ``send(KisiCall)``; ``clock`` decides what time is, and its
    ``sleep`` is how the runners wait (a virtual clock makes a whole run deterministic).
    """

    forwarder: Forwarder
    worker: RetryWorker
    sender: Sender
    records: MemoryRecordStore
    queue: MemoryQueue
    budget: MemorySendBudget
    guard: MemoryGuard
    sink: MemorySink


def build_in_memory(
    settings: Settings,
    kisi: KisiSender,
    clock: Clock,
    rng: RandomSource,
    *,
    records: MemoryRecordStore | None = None,
    queue: MemoryQueue | None = None,
    telemetry: Telemetry | None = None,
) -> InMemoryGateway:
    """api_call's forwarder and retry_worker's worker sharing one set of in-memory stores."""
    sink = MemorySink()
    budget = MemorySendBudget(rate=settings.send_rate, route_rates=settings.rates())
    guard = MemoryGuard(GuardRules(
        consecutive_401_threshold=settings.guard_401_threshold,
        cooldown_s=settings.guard_cooldown_s, cache_s=settings.guard_cache_s,
    ))
    records = records if records is not None else MemoryRecordStore()
    queue = queue if queue is not None else MemoryQueue(clock.now)
    sender = Sender(
        kisi_factory=lambda: kisi, budget=budget, guard=guard,
        telemetry=telemetry if telemetry is not None else Telemetry(sink),
        clock=clock, rng=rng,
    )
    forwarder = Forwarder(
        sender=sender, records=records, queue=queue,
        record_ttl_s=settings.record_ttl_days * 86_400, read_timeout_s=settings.read_timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
    )
    worker = RetryWorker(sender=sender, records=records, queue=queue, policies=settings.policies)
    return InMemoryGateway(forwarder, worker, sender, records, queue, budget, guard, sink)
