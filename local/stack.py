"""What provisioning produced: the resources, the emulated functions and their triggers.

Plain data, no I/O: the API server, the event-source emulators and the alarm evaluator read
it; nothing here talks to AWS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ApiKey",
    "ApiRoute",
    "FunctionSpec",
    "LayerSpec",
    "Resource",
    "Schedule",
    "ScheduleTarget",
    "SqsMapping",
    "Stack",
    "Subscription",
]

Status = Literal["created", "emulated", "unsupported", "skipped", "failed"]


@dataclass
class Resource:
    """One template resource and what it became locally."""

    logical_id: str
    type: str
    status: Status
    physical_id: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    # For a created resource: what created it (moto's CloudFormation or our boto3 code).
    created_by: str = ""

    def report_line(self) -> str:
        """One line of the provisioning report, e.g.

        ``created: WorkQueue AWS::SQS::Queue -> http://... (by moto CloudFormation, stack
        s-WorkQueue; verified: VisibilityTimeout=30)``
        """
        if self.status == "unsupported":
            head = f"unsupported: {self.logical_id} {self.type}"
        elif self.status == "emulated":
            head = f"emulated locally: {self.logical_id} {self.type}"
        else:
            head = f"{self.status}: {self.logical_id} {self.type}"
        if self.status == "created" and self.physical_id:
            head += f" -> {self.physical_id}"
        notes = [f"by {self.created_by}"] if self.created_by else []
        notes += [self.detail] if self.detail else []
        return f"{head} ({'; '.join(notes)})" if notes else head


@dataclass(frozen=True)
class LayerSpec:
    logical_id: str
    arn: str
    content_dir: Path
    build_method: str | None

    @property
    def import_dir(self) -> Path:
        """The directory Lambda would put on sys.path (/opt/python) for this layer.

        A built layer has its packages under ``python/``; a layer built by ``make`` (SAM's
        ``BuildMethod: makefile``) holds the package itself and copies it there when built.
        """
        nested = self.content_dir / "python"
        return nested if nested.is_dir() else self.content_dir


@dataclass
class FunctionSpec:
    """An ``AWS::Lambda::Function`` run in-process: what Lambda would need to run it."""

    logical_id: str
    name: str
    arn: str
    handler: str
    runtime: str
    code_dir: Path | None
    environment: dict[str, str]
    timeout_s: int = 3
    memory_mb: int = 128
    layers: list[LayerSpec] = field(default_factory=list)
    unresolved_layers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SqsMapping:
    """An SQS event source mapping (``AWS::Lambda::EventSourceMapping``)."""

    logical_id: str
    function: str
    queue_arn: str
    queue_url: str
    batch_size: int = 10
    max_batching_window_s: int = 0
    report_batch_item_failures: bool = False
    enabled: bool = True


@dataclass(frozen=True)
class ScheduleTarget:
    function: str
    input: str | None = None


@dataclass(frozen=True)
class Schedule:
    """An ``AWS::Events::Rule`` with a ScheduleExpression."""

    logical_id: str
    rule_name: str
    rule_arn: str
    expression: str
    enabled: bool
    targets: tuple[ScheduleTarget, ...]


@dataclass(frozen=True)
class ApiRoute:
    """One method of one resource of a REST API, integrated with a function (aws_proxy)."""

    api: str
    rest_api_id: str
    stage: str
    resource: str
    method: str
    function: str
    api_key_required: bool


@dataclass(frozen=True)
class ApiKey:
    """An ``AWS::ApiGateway::ApiKey`` as created in the embedded AWS.

    ``runtime_key``: this key stands for the key the runtime was started with (the first key
    whose value the template leaves to AWS).
    """

    logical_id: str
    key_id: str
    value: str | None
    runtime_key: bool = False


@dataclass(frozen=True)
class Subscription:
    """An SNS subscription; ``function`` is set for the lambda protocol."""

    logical_id: str
    topic_arn: str
    protocol: str
    endpoint: str
    arn: str
    function: str | None = None
    deliverable: bool = True


@dataclass
class Stack:
    """Everything provisioning made, by logical id, plus the report lines."""

    name: str
    region: str
    account_id: str
    endpoint_url: str
    resources: dict[str, Resource] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    layers: dict[str, LayerSpec] = field(default_factory=dict)
    sqs_mappings: list[SqsMapping] = field(default_factory=list)
    schedules: list[Schedule] = field(default_factory=list)
    routes: list[ApiRoute] = field(default_factory=list)
    api_keys: list[ApiKey] = field(default_factory=list)
    # Ids of the usage plans created in the embedded AWS: their keys may call the API.
    usage_plans: list[str] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    alarms: list[str] = field(default_factory=list)
    sns_taps: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def physical_id(self, logical_id: str) -> str:
        return self.resources[logical_id].physical_id

    def attribute(self, logical_id: str, name: str) -> Any:
        return self.resources[logical_id].attributes[name]

    def function_for_arn(self, arn: str) -> FunctionSpec | None:
        """The function an ARN (or a function name) designates, qualifiers ignored."""
        for spec in self.functions.values():
            if arn in (spec.arn, spec.name) or arn.startswith(spec.arn + ":"):
                return spec
        return None

    def report(self) -> list[str]:
        """The provisioning report: one line per resource, then warnings."""
        lines = [resource.report_line() for resource in self.resources.values()]
        return lines + [f"warning: {text}" for text in self.warnings]

    def summary(self) -> str:
        """``created 9, emulated 14, unsupported 1`` (statuses in a fixed order)."""
        counts: dict[str, int] = {}
        for resource in self.resources.values():
            counts[resource.status] = counts.get(resource.status, 0) + 1
        order = ("created", "emulated", "unsupported", "skipped", "failed")
        return ", ".join(f"{status} {counts[status]}" for status in order if status in counts)
