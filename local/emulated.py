"""Resource types the local runtime stands in for instead of creating them in moto.

Lambda functions run in-process, their triggers (SQS mappings, schedules, API routes, SNS
lambda subscriptions) are read into the :class:`~local.stack.Stack` for the emulators, and
IAM/permission resources are recorded but not enforced. A schedule's rule itself is created by
moto's CloudFormation (see :mod:`local.provision`); moto never fires it, the scheduler does.
Each method returns the ``Ref`` value and ``Fn::GetAtt`` attributes CloudFormation would give,
so templates resolve unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from local.aws_resources import AwsResources, _bool
from local.intrinsics import placeholder
from local.sam import LOCAL_CODE_BUCKET, CodeSource
from local.stack import (
    ApiRoute,
    FunctionSpec,
    LayerSpec,
    Schedule,
    ScheduleTarget,
    SqsMapping,
    Stack,
    Subscription,
)

__all__ = ["EMULATED_TYPES", "Emulated", "Emulator"]

_INVOCATION_URI = re.compile(r"functions/(arn:aws:lambda:[^/]+)/invocations")
_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_NOT_ENFORCED = "recorded; permissions are not enforced locally"


@dataclass(frozen=True)
class Emulated:
    ref: Any
    attributes: dict[str, Any]
    detail: str
    physical_id: str = ""
    supported: bool = True


def short_id(seed: str, length: int = 10) -> str:
    """A stable id shaped like the ones AWS generates (lowercase letters and digits)."""
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return digest[:length]


class Emulator:
    """Builds the Stack's functions and triggers from resolved resource properties."""

    def __init__(self, stack: Stack, aws: AwsResources, code: Mapping[str, CodeSource]) -> None:
        self.stack = stack
        self.aws = aws
        self.code = code
        self._api_bodies: dict[str, tuple[str, dict[str, Any]]] = {}
        self._api_stages: dict[str, str] = {}
        self._methods: dict[str, Callable[[str, dict[str, Any]], Emulated]] = {
            "AWS::Lambda::Function": self.function,
            "AWS::Lambda::LayerVersion": self.layer,
            "AWS::Lambda::EventSourceMapping": self.event_source_mapping,
            "AWS::Lambda::Permission": self.permission,
            "AWS::Events::Rule": self.rule,
            "AWS::ApiGateway::RestApi": self.rest_api,
            "AWS::ApiGateway::Deployment": self.deployment,
            "AWS::ApiGateway::Stage": self.stage,
            "AWS::ApiGateway::Account": self.account_settings,
            "AWS::IAM::Role": self.role,
            "AWS::IAM::Policy": self.policy,
            "AWS::IAM::ManagedPolicy": self.policy,
            "AWS::SQS::QueuePolicy": self.policy,
            "AWS::SNS::TopicPolicy": self.policy,
        }

    def handles(self, kind: str) -> bool:
        return kind in self._methods

    def emulate(self, kind: str, logical_id: str, properties: dict[str, Any]) -> Emulated:
        return self._methods[kind](logical_id, properties)

    @property
    def _prefix(self) -> str:
        return f"{self.stack.region}:{self.stack.account_id}"

    # Lambda -----------------------------------------------------------------------------
    def function(self, logical_id: str, p: dict[str, Any]) -> Emulated:
        name = str(p.get("FunctionName") or self.aws.name(logical_id, 64))
        arn = f"arn:aws:lambda:{self._prefix}:function:{name}"
        code = p.get("Code") or {}
        source = (
            self.code.get(code.get("S3Key", ""))
            if code.get("S3Bucket") == LOCAL_CODE_BUCKET
            else None
        )
        variables = (p.get("Environment") or {}).get("Variables") or {}
        environment = {key: _env_text(value) for key, value in variables.items()}
        layers, unresolved = [], []
        for layer_arn in p.get("Layers") or []:
            layer = self.stack.layers.get(str(layer_arn))
            if layer is None:
                unresolved.append(str(layer_arn))
            else:
                layers.append(layer)
        spec = FunctionSpec(
            logical_id=logical_id,
            name=name,
            arn=arn,
            handler=str(p.get("Handler", "")),
            runtime=str(p.get("Runtime", "")),
            code_dir=source.path if source else None,
            environment=environment,
            timeout_s=int(p.get("Timeout", 3)),
            memory_mb=int(p.get("MemorySize", 128)),
            layers=layers,
            unresolved_layers=unresolved,
        )
        self.stack.functions[logical_id] = spec
        notes = [f"handler {spec.handler} in-process", f"timeout {spec.timeout_s}s"]
        if source is None:
            notes.append("no local code: cannot be invoked")
            self.stack.warnings.append(f"{logical_id}: code is not a local directory")
        for value in environment.values():
            if "not available locally>" in value:
                self.stack.warnings.append(f"{logical_id}: environment refers to {value}")
        for layer_arn in unresolved:
            self.stack.warnings.append(
                f"{logical_id}: layer {layer_arn} is not in this template; its packages must be "
                "installed in the local environment"
            )
        if str(p.get("PackageType", "Zip")) == "Image":
            notes.append("container image functions are not run locally")
        return Emulated(name, {"Arn": arn}, "; ".join(notes))

    def layer(self, logical_id: str, p: dict[str, Any]) -> Emulated:
        name = str(p.get("LayerName") or logical_id)
        arn = f"arn:aws:lambda:{self._prefix}:layer:{name}:1"
        content = p.get("Content") or {}
        source = self.code.get(content.get("S3Key", ""))
        if source is None or content.get("S3Bucket") != LOCAL_CODE_BUCKET:
            return Emulated(arn, {"LayerVersionArn": arn}, "content is not a local directory")
        spec = LayerSpec(logical_id, arn, source.path, source.build_method)
        self.stack.layers[arn] = spec
        return Emulated(arn, {"LayerVersionArn": arn}, f"{spec.import_dir} on sys.path")

    def _function_named(self, value: Any) -> FunctionSpec | None:
        return self.stack.function_for_arn(str(value))

    def event_source_mapping(self, logical_id: str, p: dict[str, Any]) -> Emulated:
        uuid = short_id(f"{self.stack.name}/{logical_id}", 32)
        source_arn = str(p.get("EventSourceArn", ""))
        function = self._function_named(p.get("FunctionName"))
        if function is None:
            return Emulated(
                uuid, {}, f"function {p.get('FunctionName')} is not local", supported=False
            )
        if not source_arn.startswith("arn:aws:sqs:"):
            return Emulated(uuid, {}, f"event source {source_arn} is not emulated", supported=False)
        queue_url = self._queue_url(source_arn)
        response_types = [str(item) for item in p.get("FunctionResponseTypes") or []]
        mapping = SqsMapping(
            logical_id=logical_id,
            function=function.logical_id,
            queue_arn=source_arn,
            queue_url=queue_url,
            batch_size=int(p.get("BatchSize", 10)),
            max_batching_window_s=int(p.get("MaximumBatchingWindowInSeconds", 0)),
            report_batch_item_failures="ReportBatchItemFailures" in response_types,
            enabled=_bool(p.get("Enabled", True)),
        )
        self.stack.sqs_mappings.append(mapping)
        self._check_visibility(mapping, function)
        if p.get("FilterCriteria"):
            self.stack.warnings.append(f"{logical_id}: FilterCriteria are not applied locally")
        detail = (
            f"SQS {source_arn.rsplit(':', 1)[-1]} -> {function.logical_id}, "
            f"batch {mapping.batch_size}, window {mapping.max_batching_window_s}s"
            + (", ReportBatchItemFailures" if mapping.report_batch_item_failures else "")
        )
        return Emulated(uuid, {"Id": uuid}, detail)

    def _queue_url(self, queue_arn: str) -> str:
        for resource in self.stack.resources.values():
            if resource.attributes.get("Arn") == queue_arn and "QueueUrl" in resource.attributes:
                return str(resource.attributes["QueueUrl"])
        name = queue_arn.rsplit(":", 1)[-1]
        return str(self.aws.client("sqs").get_queue_url(QueueName=name)["QueueUrl"])

    def _check_visibility(self, mapping: SqsMapping, function: FunctionSpec) -> None:
        # Lambda refuses a mapping whose queue hides messages for less than the function may
        # run ("Queue visibility timeout ... is less than Function timeout").
        attributes = self.aws.client("sqs").get_queue_attributes(
            QueueUrl=mapping.queue_url, AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
        visibility = int(attributes.get("VisibilityTimeout", 30))
        if visibility < function.timeout_s:
            self.stack.warnings.append(
                f"{mapping.logical_id}: queue visibility timeout {visibility}s is less than "
                f"{function.logical_id} timeout {function.timeout_s}s (AWS rejects this mapping)"
            )

    def permission(self, logical_id: str, p: dict[str, Any]) -> Emulated:
        return Emulated(short_id(f"{self.stack.name}/{logical_id}"), {}, _NOT_ENFORCED)

    # EventBridge --------------------------------------------------------------------------
    def rule(self, logical_id: str, p: dict[str, Any]) -> Emulated:
        name = str(p.get("Name") or self.aws.name(logical_id, 64))
        arn = f"arn:aws:events:{self._prefix}:rule/{name}"
        targets = []
        for target in p.get("Targets") or []:
            function = self._function_named(target.get("Arn"))
            if function is None:
                self.stack.warnings.append(f"{logical_id}: target {target.get('Arn')} is not local")
                continue
            if "InputPath" in target or "InputTransformer" in target:
                self.stack.warnings.append(f"{logical_id}: InputPath/InputTransformer ignored")
            raw_input = target.get("Input")
            targets.append(
                ScheduleTarget(function.logical_id, None if raw_input is None else str(raw_input))
            )
        expression = p.get("ScheduleExpression")
        enabled = str(p.get("State", "ENABLED")).upper() == "ENABLED"
        if expression is None:
            self.stack.warnings.append(
                f"{logical_id}: event pattern rules are not delivered locally"
            )
            return Emulated(name, {"Arn": arn}, "event pattern: not delivered locally")
        self.stack.schedules.append(
            Schedule(logical_id, name, arn, str(expression), enabled, tuple(targets))
        )
        names = ", ".join(target.function for target in targets) or "no local target"
        state = "" if enabled else " (disabled)"
        return Emulated(name, {"Arn": arn}, f"{expression} -> {names}{state}")

    # API Gateway ----------------------------------------------------------------------------
    def rest_api(self, logical_id: str, p: dict[str, Any]) -> Emulated:
        api_id = short_id(f"{self.stack.name}/{logical_id}")
        attributes = {"RootResourceId": short_id(f"{api_id}/root")}
        body = p.get("Body")
        if not isinstance(body, dict):
            return Emulated(
                api_id, attributes, "no inline OpenAPI Body: routes unknown", supported=False
            )
        self._api_bodies[logical_id] = (api_id, body)
        return Emulated(api_id, attributes, "served by the local API server", physical_id=api_id)

    def deployment(self, logical_id: str, p: dict[str, Any]) -> Emulated:
        return Emulated(short_id(f"{self.stack.name}/{logical_id}"), {}, "implicit locally")

    def stage(self, logical_id: str, p: dict[str, Any]) -> Emulated:
        name = str(p.get("StageName", ""))
        self._api_stages.setdefault(str(p.get("RestApiId", "")), name)
        if p.get("Variables"):
            self.stack.warnings.append(f"{logical_id}: stage variables are not passed locally")
        return Emulated(name, {}, f"stage {name}")

    def account_settings(self, logical_id: str, p: dict[str, Any]) -> Emulated:
        # API Gateway's region-wide CloudWatch role, for access logs: none are written locally.
        return Emulated(short_id(f"{self.stack.name}/{logical_id}"), {},
                        "recorded; the local API writes no access logs")

    def routes(self) -> list[ApiRoute]:
        """All aws_proxy routes of the inline API bodies (call once every resource exists)."""
        routes: list[ApiRoute] = []
        for logical_id, (api_id, body) in self._api_bodies.items():
            stage = self._api_stages.get(api_id, "Prod")
            schemes = {
                **(body.get("securityDefinitions") or {}),
                **((body.get("components") or {}).get("securitySchemes") or {}),
            }
            key_schemes = {name for name, spec in schemes.items() if spec.get("type") == "apiKey"}
            default_security = body.get("security") or []
            for path, operations in (body.get("paths") or {}).items():
                for key, operation in operations.items():
                    if key == "x-amazon-apigateway-any-method":
                        method = "ANY"
                    elif key in _HTTP_METHODS:
                        method = key.upper()
                    else:
                        continue
                    route = self._route(
                        logical_id,
                        api_id,
                        stage,
                        path,
                        method,
                        operation,
                        key_schemes,
                        default_security,
                    )
                    if route is not None:
                        routes.append(route)
        return routes

    def _route(
        self,
        api: str,
        api_id: str,
        stage: str,
        path: str,
        method: str,
        operation: Mapping[str, Any],
        key_schemes: set[str],
        default_security: list[Any],
    ) -> ApiRoute | None:
        integration = operation.get("x-amazon-apigateway-integration") or {}
        match = _INVOCATION_URI.search(str(integration.get("uri", "")))
        function = self._function_named(match.group(1)) if match else None
        if integration.get("type") != "aws_proxy" or function is None:
            self.stack.warnings.append(
                f"{api}: {method} {path} is not a local aws_proxy route "
                f"(integration {integration.get('type')}); not served"
            )
            return None
        security = operation.get("security", default_security) or []
        key_required = any(set(item) & key_schemes for item in security if isinstance(item, dict))
        return ApiRoute(api, api_id, stage, path, method, function.logical_id, key_required)

    # IAM and policies -----------------------------------------------------------------------
    def role(self, logical_id: str, p: dict[str, Any]) -> Emulated:
        name = str(p.get("RoleName") or self.aws.name(logical_id, 64))
        arn = f"arn:aws:iam::{self.stack.account_id}:role/{name}"
        return Emulated(
            name, {"Arn": arn, "RoleId": "AROA" + short_id(arn, 17).upper()}, _NOT_ENFORCED
        )

    def policy(self, logical_id: str, p: dict[str, Any]) -> Emulated:
        return Emulated(short_id(f"{self.stack.name}/{logical_id}"), {}, _NOT_ENFORCED)

    # SNS subscriptions ----------------------------------------------------------------------
    def subscription(
        self, logical_id: str, topic_arn: str, protocol: str, endpoint: str, p: Mapping[str, Any]
    ) -> tuple[Subscription, str]:
        """Subscribe ``endpoint``; returns the Subscription and a report status.

        lambda: a hidden SQS "tap" queue is subscribed in moto instead (moto would try to run
        the function itself), and the runtime delivers what arrives there to the handler.
        email/sms/remote http: recorded, not deliverable (nothing leaves this machine).
        """
        protocol = protocol.lower()
        if protocol == "lambda":
            function = self._function_named(endpoint)
            if function is None:
                sub = Subscription(
                    logical_id,
                    topic_arn,
                    protocol,
                    endpoint,
                    placeholder(endpoint),
                    deliverable=False,
                )
                return sub, "function is not local: not delivered"
            tap_name = self.aws.name(f"sns-{logical_id}", 80)
            tap_url = self.aws.client("sqs").create_queue(QueueName=tap_name)["QueueUrl"]
            tap_arn = self.aws.client("sqs").get_queue_attributes(
                QueueUrl=tap_url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            tap_sub = self.aws.subscribe(topic_arn, "sqs", tap_arn)
            self._filter(tap_sub, p)
            arn = f"{topic_arn}:{short_id(logical_id + topic_arn, 8)}-local"
            self.stack.sns_taps[logical_id] = tap_url
            sub = Subscription(logical_id, topic_arn, protocol, endpoint, arn, function.logical_id)
            return sub, f"delivered in-process to {function.logical_id} via SQS tap {tap_name}"
        local_http = protocol in ("http", "https") and re.match(
            r"https?://(127\.0\.0\.1|localhost)[:/]", endpoint
        )
        if protocol in ("sqs", "email", "email-json") or local_http:
            arn = self.aws.subscribe(
                topic_arn, protocol, endpoint, raw=_bool(p.get("RawMessageDelivery"))
            )
            self._filter(arn, p)
            deliverable = not protocol.startswith("email")
            note = "created" if deliverable else "email is not deliverable locally"
            return Subscription(
                logical_id, topic_arn, protocol, endpoint, arn, None, deliverable
            ), note
        sub = Subscription(
            logical_id, topic_arn, protocol, endpoint, placeholder(logical_id), deliverable=False
        )
        return sub, f"{protocol} is not deliverable locally"

    def _filter(self, subscription_arn: str, p: Mapping[str, Any]) -> None:
        sns = self.aws.client("sns")
        if p.get("FilterPolicy"):
            policy = p["FilterPolicy"]
            value = policy if isinstance(policy, str) else json.dumps(policy)
            sns.set_subscription_attributes(
                SubscriptionArn=subscription_arn, AttributeName="FilterPolicy", AttributeValue=value
            )
        if p.get("FilterPolicyScope"):
            sns.set_subscription_attributes(
                SubscriptionArn=subscription_arn,
                AttributeName="FilterPolicyScope",
                AttributeValue=str(p["FilterPolicyScope"]),
            )


def _env_text(value: Any) -> str:
    """Lambda environment values are strings; CloudFormation turns numbers and booleans so."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


EMULATED_TYPES = (
    "AWS::Lambda::Function",
    "AWS::Lambda::LayerVersion",
    "AWS::Lambda::EventSourceMapping",
    "AWS::Lambda::Permission",
    "AWS::Events::Rule",
    "AWS::ApiGateway::RestApi",
    "AWS::ApiGateway::Deployment",
    "AWS::ApiGateway::Stage",
    "AWS::ApiGateway::Account",
    "AWS::IAM::Role",
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::SNS::Subscription",
)
