"""The composition root: settings and AWS clients in, ready pipeline objects out.

Handlers call these once per container, on first use rather than at import, so a cold start
pays only for what that function touches. :func:`build_in_memory` builds the same pipeline
over the in-memory stores, for the functional tests and the benchmark.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kisi_gateway.config import ConfigError, Settings
from kisi_gateway.core.backoff import RandomSource
from kisi_gateway.core.breaker import GuardRules
from kisi_gateway.core.identity import DEFAULT_TENANT
from kisi_gateway.core.ratelimit import PACE, BudgetLimits
from kisi_gateway.pipeline.callers import Callers
from kisi_gateway.pipeline.forwarding import Forwarder
from kisi_gateway.pipeline.kisi_http import KisiClient, Timeouts, build_session
from kisi_gateway.pipeline.known_bad import KnownBadGate
from kisi_gateway.pipeline.monitoring import Monitor
from kisi_gateway.pipeline.preflight import Screen
from kisi_gateway.pipeline.retrying import RetryWorker
from kisi_gateway.pipeline.sending import KisiSender, Sender, SystemClock
from kisi_gateway.pipeline.telemetry import EmfSink, MemorySink, Telemetry
from kisi_gateway.stores.memory import (
    MemoryDirectory,
    MemoryGuard,
    MemoryKnownBad,
    MemoryQueue,
    MemoryRecordStore,
    MemorySendBudget,
    MemoryVault,
)
from kisi_gateway.stores.ports import Clock, CredentialVault, RecordStore, RetryQueue
from kisi_gateway.stores.secrets import ServiceKeys, secret_reader
from kisi_gateway.tracing import tracing

LOG = logging.getLogger("kisi_gateway")
IDENTITY_SECRET_MAX_AGE_S = 3600  # the identity key never changes while the stack lives


@dataclass(frozen=True, slots=True)
class AwsTimeouts:
    """Timeouts and retries of every AWS client the functions build (DynamoDB, SQS, Secrets
    Manager, KMS, CloudWatch, SNS), in this one place.

    API Gateway ends an integration after 29 s with its own 504. A store that stalls must fail
    well before, so the caller gets the gateway's 503 with ``Retry-After`` instead; botocore's
    defaults (60 s connect, 60 s read, legacy mode's 5 attempts) would outlive it many times.
    These calls take milliseconds when healthy, so seconds are generous.
    """

    connect_s: float = 1.0
    read_s: float = 3.0  # botocore's read timeout bounds each wait for bytes from the socket
    max_attempts: int = 2  # botocore's total_max_attempts: the first try and one retry

    def config(self) -> Any:
        """The botocore ``Config`` (standard retry mode: throttling and transient errors).

        Client-side parameter validation is off: every request is built by the adapters in
        :mod:`kisi_gateway.stores`, never from a caller's input, and the tests run them against
        moto, which checks them as the services do. Validation walks the whole request on every
        call, a fifth of the CPU of the send budget's UpdateItem (``make bench``, section 4); a
        request that is wrong anyway comes back from AWS as a ``ValidationException``, which
        the adapters handle like any other error of the store.
        """
        from botocore.config import Config  # noqa: PLC0415 - cold start

        return Config(
            connect_timeout=self.connect_s,
            read_timeout=self.read_s,
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            parameter_validation=False,
        )

    @property
    def worst_case_s(self) -> float:
        """The longest one AWS call can take: every attempt waits out both timeouts, and
        standard mode sleeps before retry n at most ``min(2 ** (n - 1), 20)`` s (botocore
        ``retries.standard.ExponentialBackoff``: ``random() * 2 ** (attempt - 1)``).

        >>> AwsTimeouts().worst_case_s
        9.0
        """
        backoff = sum(min(2.0**n, 20.0) for n in range(self.max_attempts - 1))
        return self.max_attempts * (self.connect_s + self.read_s) + backoff


AWS_TIMEOUTS = AwsTimeouts()
# The most AWS calls that can stall one after the other before api_call answers 503: the
# guard's read fails open (it must not take the gateway down), the next store call fails the
# request. 2 x 9 s = 18 s, well inside API Gateway's 29 s.
STALLED_CALLS_BEFORE_503 = 2
API_GATEWAY_LIMIT_S = 29.0


def _client(service: str) -> Any:
    """A boto3 client with the gateway's timeouts (:data:`AWS_TIMEOUTS`)."""
    import boto3  # noqa: PLC0415 - cold start

    return boto3.client(service, config=AWS_TIMEOUTS.config())  # type: ignore[call-overload]


def identity_key(settings: Settings, secrets: Callable[[str, bool], str]) -> bytes:
    """The stack's secret for keyed hashes of credentials (``IDENTITY_SECRET``)."""
    secret_id = settings.need(settings.identity_secret, "IDENTITY_SECRET")
    text = secrets(secret_id, False)
    if len(text.strip()) < 16:
        raise ConfigError("IDENTITY_SECRET holds fewer than 16 characters")
    return text.strip().encode()


def budget_limits(settings: Settings) -> BudgetLimits:
    """The send budget's configuration: Kisi's rates, booked at :data:`PACE`."""
    return BudgetLimits(settings.send_rate, settings.rates(), pace=PACE)


def kisi_client(settings: Settings) -> Callable[[], KisiSender]:
    """A factory of the Kisi client (one pooled session per container)."""
    session = build_session()

    def kisi() -> KisiClient:
        return KisiClient(
            settings.kisi_base_url,
            session=session,
            timeouts=Timeouts(settings.connect_timeout_s, settings.read_timeout_s),
            integration_identifier=settings.integration_identifier,
            integration_contact=settings.integration_contact,
        )

    return kisi


@dataclass
class Pipeline:
    """What one execution environment holds: the sender and both runners over one set of
    store adapters."""

    sender: Sender
    forwarder: Forwarder
    worker: RetryWorker
    callers: Callers


def build_pipeline(
    settings: Settings,
    *,
    aws: Callable[[str], Any] = _client,
    kisi: Callable[[], KisiSender] | None = None,
    clock: Clock | None = None,
    rng: RandomSource | None = None,
    telemetry: Telemetry | None = None,
    secrets: Callable[[str, bool], str] | None = None,
    key: bytes | None = None,
) -> Pipeline:
    """The pipeline over AWS (``aws(service)`` gives each boto3 client: moto in tests).

    ``secrets`` reads a secret's text (default: Powertools' cache over ``aws``'s Secrets
    Manager client, so secret reads get the same timeouts as every other store call).
    """
    from kisi_gateway.stores.budget import DynamoSendBudget  # noqa: PLC0415
    from kisi_gateway.stores.directory import DynamoDirectory  # noqa: PLC0415
    from kisi_gateway.stores.guard import DynamoGuard  # noqa: PLC0415
    from kisi_gateway.stores.guard_cache import CachedGuard  # noqa: PLC0415
    from kisi_gateway.stores.known_bad import DynamoKnownBad  # noqa: PLC0415
    from kisi_gateway.stores.queue import SqsRetryQueue  # noqa: PLC0415
    from kisi_gateway.stores.records import DynamoRecordStore  # noqa: PLC0415
    from kisi_gateway.stores.vault import KmsVault  # noqa: PLC0415

    tracing()  # on Lambda with tracing on: every AWS call below becomes a subsegment
    clock = clock or SystemClock()
    rng = rng or random.SystemRandom().random
    identity_secret = secrets
    if secrets is None:
        secrets = secret_reader(lambda: aws("secretsmanager"))
        identity_secret = secret_reader(lambda: aws("secretsmanager"),
                                        IDENTITY_SECRET_MAX_AGE_S)
    dynamodb = aws("dynamodb")
    directory = DynamoDirectory(dynamodb, settings.need(settings.tenants_table, "TENANTS_TABLE"))
    requests_table = settings.need(settings.requests_table, "REQUESTS_TABLE")
    telemetry = telemetry or Telemetry(EmfSink(settings.metrics_namespace))
    # Its view of each identity's account item also tells the known-bad screen, within the
    # same staleness as its verdicts, whether there is anything to look up.
    guard = DynamoGuard(
        dynamodb, settings.need(settings.guard_table, "GUARD_TABLE"),
        consecutive_401_threshold=settings.guard_401_threshold,
        cooldown_s=settings.guard_cooldown_s, cache_s=0.0,
        hint_max_age_s=settings.guard_cache_s,
    )
    sender = Sender(
        kisi_factory=kisi or kisi_client(settings),
        budget=DynamoSendBudget(
            dynamodb, settings.need(settings.budget_table, "BUDGET_TABLE"),
            limits=budget_limits(settings), rng=rng,
        ),
        # The cache decides how stale a verdict may be; the guard itself reads every time.
        guard=CachedGuard(guard, staleness_s=settings.guard_cache_s),
        telemetry=telemetry,
        clock=clock,
        rng=rng,
        directory=directory,
        known_bad=KnownBadGate(DynamoKnownBad(dynamodb, requests_table), telemetry,
                               settings.known_bad_window_s, hints=guard),
        max_gate_s=settings.max_gate_s,
    )
    records = DynamoRecordStore(dynamodb, requests_table)
    queue = SqsRetryQueue(
        aws("sqs"), settings.need(settings.retry_queue_url, "RETRY_QUEUE_URL"),
        settings.need(settings.dlq_url, "DLQ_URL"))
    identity = key if key is not None else identity_key(settings, identity_secret or secrets)
    callers = Callers(
        directory, ServiceKeys(secrets), identity,
        policy=settings.caller_credentials,
        default_secret_id=settings.need(settings.kisi_api_key_secret, "KISI_API_KEY_SECRET"),
        clock=clock.now,
    )
    vault = KmsVault(aws("kms"), settings.need(settings.credential_key_id, "CREDENTIAL_KEY_ID"))
    forwarder, worker = runners(settings, sender, records, queue, callers, vault)
    return Pipeline(sender, forwarder, worker, callers)


def runners(
    settings: Settings, sender: Sender, records: RecordStore, queue: RetryQueue,
    callers: Callers, vault: CredentialVault,
) -> tuple[Forwarder, RetryWorker]:
    """api_call's forwarder and retry_worker's worker over the same pieces."""
    forwarder = Forwarder(
        sender=sender, records=records, queue=queue, callers=callers, vault=vault,
        record_ttl_s=settings.record_ttl_days * 86_400, read_timeout_s=settings.read_timeout_s,
        connect_timeout_s=settings.connect_timeout_s, client_wait_s=settings.client_wait_s,
        screen=screen_for(settings, sender),
    )
    worker = RetryWorker(sender=sender, records=records, queue=queue, policies=settings.policies,
                         callers=callers, vault=vault)
    return forwarder, worker


def screen_for(settings: Settings, sender: Sender) -> Screen:
    """The preflight and known-bad screen over ``sender``'s telemetry and memory."""
    return Screen(sender.telemetry, sender.login, settings.kisi_api, sender.known_bad)


def build_forwarder(settings: Settings) -> Forwarder:
    return build_pipeline(settings).forwarder


def build_worker(settings: Settings) -> RetryWorker:
    return build_pipeline(settings).worker


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
            _client("dynamodb"), settings.need(settings.guard_table, "GUARD_TABLE"),
            consecutive_401_threshold=settings.guard_401_threshold,
            cooldown_s=settings.guard_cooldown_s, cache_s=settings.guard_cache_s,
        ),
        sns=_client("sns"),
        notify_topic_arn=settings.notify_topic_arn,
        alarm_actions=actions,
        prefix=settings.alarm_prefix,
        min_volume=settings.bad_rate_min_volume,
        route_volume_threshold=settings.route_bad_volume_threshold,
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
    directory: MemoryDirectory
    vault: MemoryVault
    sink: MemorySink
    secrets: dict[str, str]
    known_bad: MemoryKnownBad


IN_MEMORY_SERVICE_SECRET = "service-login"  # noqa: S105 - the name of a secret, not one


def build_in_memory(
    settings: Settings,
    kisi: KisiSender,
    clock: Clock,
    rng: RandomSource,
    *,
    service_key: str = "sim-demo-key",
    records: MemoryRecordStore | None = None,
    queue: MemoryQueue | None = None,
    telemetry: Telemetry | None = None,
) -> InMemoryGateway:
    """api_call's forwarder and retry_worker's worker sharing one set of in-memory stores.

    The default tenant's service login is ``service_key``; ``secrets`` (secret id -> text)
    holds it and any other tenant's, and may be changed to rotate a key.
    """
    sink = MemorySink()
    secrets = {IN_MEMORY_SERVICE_SECRET: service_key}
    read: Callable[[str, bool], str] = lambda secret_id, refresh: secrets[secret_id]  # noqa: E731
    directory = MemoryDirectory()
    callers = Callers(directory, ServiceKeys(read), b"in-memory identity key",
                      policy=settings.caller_credentials,
                      default_secret_id=IN_MEMORY_SERVICE_SECRET, clock=clock.now)
    budget = MemorySendBudget(limits=budget_limits(settings))
    guard = MemoryGuard(GuardRules(
        consecutive_401_threshold=settings.guard_401_threshold,
        cooldown_s=settings.guard_cooldown_s, cache_s=settings.guard_cache_s,
    ))
    records = records if records is not None else MemoryRecordStore()
    queue = queue if queue is not None else MemoryQueue(clock.now)
    vault = MemoryVault()
    telemetry = telemetry if telemetry is not None else Telemetry(sink)
    known_bad = MemoryKnownBad()
    sender = Sender(
        kisi_factory=lambda: kisi, budget=budget, guard=guard, telemetry=telemetry,
        clock=clock, rng=rng, directory=directory,
        known_bad=KnownBadGate(known_bad, telemetry, settings.known_bad_window_s, hints=guard),
        max_gate_s=settings.max_gate_s,
    )
    forwarder, worker = runners(settings, sender, records, queue, callers, vault)
    return InMemoryGateway(forwarder, worker, sender, records, queue, budget, guard, directory,
                           vault, sink, secrets, known_bad)


__all__ = ["DEFAULT_TENANT", "InMemoryGateway", "build_forwarder", "build_in_memory",
           "build_monitor", "build_worker"]
