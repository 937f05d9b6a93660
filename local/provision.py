"""Provision a SAM template into the embedded AWS, driven only by the template.

Steps: read the template (short-form tags included), translate SAM to plain CloudFormation
with samtranslator, order the resources by their references, then for each one resolve its
intrinsics and either create it in moto (and read it back), emulate it, or report it as
unsupported. Nothing is skipped silently: every resource gets one report line, which says
who created it: moto's own CloudFormation or our boto3 code.

    stack = provision("template.yaml", "http://127.0.0.1:5000", stack_name="kisi-local")
    print("\\n".join(stack.report()))

Who creates what. Each type of template.yaml's translation (and of the test fixture) was
created through moto 5.2.5's CloudFormation (``create_stack`` on the moto server) and read
back through its service API. moto's CloudFormation is used where every property our
templates set came back as set; our boto3 code where it skips the type or drops a setting
while reporting ``CREATE_COMPLETE``; the rest is emulated by the local runtime.
``tests/integration/test_local_moto_cfn.py`` pins the first two groups, so a moto upgrade
that changes them fails a test.

==============================  =====================  ==========================================
type                            created by             evidence (moto 5.2.5 CloudFormation)
==============================  =====================  ==========================================
AWS::SQS::Queue                 moto CloudFormation    QueueName, VisibilityTimeout,
                                                       MessageRetentionPeriod, DelaySeconds,
                                                       SqsManagedSseEnabled and RedrivePolicy
                                                       read back as set
AWS::SNS::Topic                 moto CloudFormation    TopicName, DisplayName read back as set;
                                                       an inline ``Subscription`` list is left
                                                       to our code (moto would subscribe a
                                                       lambda endpoint and try to run it)
AWS::CloudWatch::Dashboard      moto CloudFormation    DashboardName, DashboardBody read back
AWS::Logs::LogGroup             moto CloudFormation    LogGroupName, RetentionInDays read back
                                                       (moto's GetAtt Arn lacks AWS's ``:*``;
                                                       the Arn given to templates is AWS's)
AWS::Events::Rule               moto CloudFormation,   Name, ScheduleExpression, State,
                                fired by the local     Description and Targets (Id, Arn, Input)
                                scheduler              read back; moto never fires a schedule
AWS::DynamoDB::Table            our boto3 code         keys, attributes, GSIs and billing mode
                                                       read back, but TTL stays DISABLED,
                                                       point-in-time recovery DISABLED and
                                                       SSESpecification is dropped
AWS::SecretsManager::Secret     our boto3 code         not implemented: skipped, stack
                                                       CREATE_COMPLETE, no secret
AWS::CloudWatch::Alarm          our boto3 code         not implemented: skipped (and a GetAtt on
                                                       one fails create_stack with a 500)
AWS::SNS::Subscription          our boto3 code; lambda not implemented: skipped; a lambda
                                endpoints emulated     endpoint gets an SQS tap and in-process
                                                       delivery either way
AWS::KMS::Key                   our boto3 code         keeps KeyPolicy as an object: DescribeKey
                                                       on the key then fails (500); ours is found
                                                       again by an alias after a restart
AWS::SQS::QueuePolicy,          emulated: recorded,    not implemented: skipped (the queue has no
AWS::SNS::TopicPolicy           not enforced           Policy, the topic keeps its default one)
AWS::IAM::Role                  emulated: recorded,    created, but ManagedPolicyArns are not
                                not enforced           attached (moto holds no AWS managed
                                                       policies) and the name is random
AWS::Lambda::Function           emulated: in-process   needs its code in S3 (a local CodeUri is
                                                       NoSuchBucket) and Docker to run it
AWS::Lambda::LayerVersion       emulated: on sys.path  needs S3 content; LayerName is replaced
                                                       by a generated name
AWS::Lambda::Permission,        emulated               created only for a function moto holds;
AWS::Lambda::EventSourceMapping                        an SQS mapping in moto would have moto
                                                       invoke the function itself on each send
AWS::ApiGateway::RestApi        emulated: local API    SAM's RestApi (Body, no Name) fails
                                server                 create_stack with a 500; with a Name the
                                                       Body's paths are ignored
AWS::ApiGateway::Deployment,    emulated               the Deployment fails: "The REST API
AWS::ApiGateway::Stage                                 doesn't contain any methods"
AWS::ApiGateway::ApiKey,        emulated (the key is   not implemented: skipped
UsagePlan, UsagePlanKey         checked)
any other type                  unsupported, reported
==============================  =====================  ==========================================
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from local.aws_resources import BOTO3, MOTO_CFN, AwsResources, VerificationError
from local.emulated import Emulator
from local.intrinsics import IntrinsicError, Resolver, creation_order, parameter_values
from local.moto_cfn import CloudFormationError
from local.moto_server import LOCAL_ACCOUNT_ID, LOCAL_REGION
from local.sam import load_template, translate
from local.stack import Resource, Stack, Status, Subscription

__all__ = ["ProvisioningError", "provision"]


class ProvisioningError(RuntimeError):
    """Some resources could not be created or verified; ``stack.report()`` says which."""

    def __init__(self, stack: Stack) -> None:
        failed = [line for line in stack.report() if line.startswith("failed:")]
        super().__init__("provisioning failed:\n" + "\n".join(failed))
        self.stack = stack


def provision(
    template_path: str | Path,
    endpoint_url: str,
    *,
    stack_name: str = "local",
    parameters: Mapping[str, Any] | None = None,
    secret_values: Mapping[str, str] | None = None,
    region: str = LOCAL_REGION,
    account_id: str = LOCAL_ACCOUNT_ID,
    strict: bool = True,
) -> Stack:
    """Create the template's resources in moto at ``endpoint_url`` and describe the rest.

    ``parameters`` override template parameter defaults; ``secret_values`` give the
    SecretString of ``AWS::SecretsManager::Secret`` resources by logical id or name (for
    example a Kisi key from the environment). With ``strict`` a failed resource raises
    :class:`ProvisioningError` once every resource has been tried.
    """
    path = Path(template_path)
    source = load_template(path)
    values = parameter_values(source, parameters)
    translation = translate(source, path.parent, values, region)
    template = translation.template

    stack = Stack(stack_name, region, account_id, endpoint_url)
    resolver = Resolver(
        parameters=values,
        region=region,
        account_id=account_id,
        stack_name=stack_name,
        conditions=template.get("Conditions") or {},
        mappings=template.get("Mappings") or {},
    )
    aws = AwsResources(endpoint_url, stack_name, region, account_id, secret_values)
    emulator = Emulator(stack, aws, translation.code)
    resources: dict[str, dict[str, Any]] = template.get("Resources") or {}

    for logical_id in creation_order(resources):
        definition = resources[logical_id]
        kind = str(definition.get("Type"))
        stack.resources[logical_id] = _provision_one(
            logical_id, kind, definition, resolver, aws, emulator, stack
        )

    stack.routes = emulator.routes()
    stack.alarms = [
        r.physical_id
        for r in stack.resources.values()
        if r.type == "AWS::CloudWatch::Alarm" and r.status == "created"
    ]
    stack.outputs = _outputs(template, resolver)
    if strict and any(r.status == "failed" for r in stack.resources.values()):
        raise ProvisioningError(stack)
    return stack


def _provision_one(
    logical_id: str,
    kind: str,
    definition: Mapping[str, Any],
    resolver: Resolver,
    aws: AwsResources,
    emulator: Emulator,
    stack: Stack,
) -> Resource:
    condition = definition.get("Condition")
    if condition is not None and not resolver.condition(str(condition)):
        resolver.unavailable.add(logical_id)
        return Resource(logical_id, kind, "skipped", detail=f"condition {condition} is false")
    if not (aws.handles(kind) or emulator.handles(kind) or kind == "AWS::SNS::Subscription"):
        resolver.unavailable.add(logical_id)
        return Resource(logical_id, kind, "unsupported")
    try:
        properties = resolver.resolve(definition.get("Properties") or {})
        if kind == "AWS::SNS::Subscription":
            return _subscription(logical_id, properties, resolver, emulator, stack)
        if aws.handles(kind):
            outcome = aws.create(kind, logical_id, properties)
            resolver.add_resource(logical_id, outcome.ref, outcome.attributes)
            detail = outcome.detail
            if outcome.ignored:
                # moto's CloudFormation received them; our own code never sends them.
                verb = "verified" if outcome.created_by.startswith(MOTO_CFN) else "applied"
                detail += f"; not {verb} locally: " + ", ".join(outcome.ignored)
            if emulator.handles(kind):  # a schedule: moto stores the rule, never fires it
                fired = emulator.emulate(kind, logical_id, properties)
                detail += f"; fired locally: {fired.detail}"
            resource = Resource(
                logical_id,
                kind,
                "created",
                outcome.physical_id,
                outcome.attributes,
                detail,
                outcome.created_by,
            )
            if kind == "AWS::SNS::Topic":
                _inline_subscriptions(logical_id, properties, outcome.ref, emulator, stack)
            return resource
        emulated = emulator.emulate(kind, logical_id, properties)
        resolver.add_resource(logical_id, emulated.ref, emulated.attributes)
        status: Status = "emulated" if emulated.supported else "unsupported"
        return Resource(
            logical_id,
            kind,
            status,
            emulated.physical_id or str(emulated.ref),
            emulated.attributes,
            emulated.detail,
        )
    except (
        IntrinsicError,
        VerificationError,
        CloudFormationError,
        ClientError,
        BotoCoreError,
        KeyError,
        ValueError,
        TypeError,
    ) as error:
        resolver.unavailable.add(logical_id)
        return Resource(logical_id, kind, "failed", detail=f"{type(error).__name__}: {error}")


def _subscription(
    logical_id: str,
    p: Mapping[str, Any],
    resolver: Resolver,
    emulator: Emulator,
    stack: Stack,
) -> Resource:
    subscription, note = emulator.subscription(
        logical_id, str(p["TopicArn"]), str(p["Protocol"]), str(p["Endpoint"]), p
    )
    stack.subscriptions.append(subscription)
    resolver.add_resource(logical_id, subscription.arn, {})
    return _subscription_resource(subscription, note)


def _inline_subscriptions(
    topic_id: str, p: Mapping[str, Any], topic_arn: str, emulator: Emulator, stack: Stack
) -> None:
    for index, item in enumerate(p.get("Subscription") or []):
        logical_id = f"{topic_id}.Subscription[{index}]"
        subscription, note = emulator.subscription(
            logical_id, topic_arn, str(item["Protocol"]), str(item["Endpoint"]), {}
        )
        stack.subscriptions.append(subscription)
        stack.resources[logical_id] = _subscription_resource(subscription, note)


def _subscription_resource(subscription: Subscription, note: str) -> Resource:
    if subscription.function is not None:
        status: Status = "emulated"
    elif subscription.arn.startswith("arn:"):
        status = "created"
    else:
        status = "unsupported"
    return Resource(
        subscription.logical_id,
        "AWS::SNS::Subscription",
        status,
        subscription.arn,
        {},
        note,
        BOTO3 if status == "created" else "",
    )


def _outputs(template: Mapping[str, Any], resolver: Resolver) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    for name, output in (template.get("Outputs") or {}).items():
        condition = output.get("Condition")
        if condition is not None and not resolver.condition(str(condition)):
            continue
        try:
            outputs[name] = resolver.resolve(output.get("Value"))
        except IntrinsicError as error:
            outputs[name] = f"<unresolved: {error}>"
    return outputs
