"""moto's own CloudFormation as a creator of single resources, checked rather than trusted.

Provisioning resolves every intrinsic itself (:mod:`local.intrinsics`), so each resource moto's
CloudFormation creates faithfully goes in as a one-resource stack, ``<stack>-<LogicalId>``,
whose properties are plain values. Running provisioning again updates that stack (as a second
``sam deploy`` would) or leaves it alone when nothing changed.

moto answers ``CREATE_COMPLETE`` even for resource types it does not implement (it logs a
warning and skips them), so :meth:`MotoCloudFormation.deploy` also checks that the stack lists
the resource with a physical id; the caller then reads the resource back through its service
API (see :mod:`local.aws_resources`).

    cfn = MotoCloudFormation(aws_client("cloudformation", endpoint), "kisi-gateway")
    cfn.deploy("RetryQueue", "AWS::SQS::Queue", {"QueueName": "kisi-gateway-RetryQueue"})
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

__all__ = ["CloudFormationError", "Deployment", "MotoCloudFormation"]

# CloudFormation's limit on stack names (letters, digits and hyphens, starting with a letter).
_STACK_NAME_LIMIT = 128
_DONE = ("CREATE_COMPLETE", "UPDATE_COMPLETE")


class CloudFormationError(RuntimeError):
    """moto's CloudFormation did not create the resource, whatever its stack status said."""


@dataclass(frozen=True)
class Deployment:
    """Which stack holds a resource, its physical id, and what this deploy did to it."""

    stack_name: str
    physical_id: str
    action: Literal["created", "updated", "unchanged"]


class MotoCloudFormation:
    """Deploys one resource per stack through moto's CloudFormation API (``create_stack``)."""

    def __init__(self, client: Any, stack_prefix: str) -> None:
        self._cfn = client
        self.stack_prefix = stack_prefix

    def stack_name(self, logical_id: str) -> str:
        """``<prefix>-<LogicalId>``, shortened with a hash past CloudFormation's limit."""
        name = f"{self.stack_prefix}-{logical_id}"
        if len(name) > _STACK_NAME_LIMIT:
            digest = hashlib.sha256(name.encode()).hexdigest()[:8]
            name = f"{name[: _STACK_NAME_LIMIT - 9]}-{digest}"
        return name

    def deploy(self, logical_id: str, kind: str, properties: Mapping[str, Any]) -> Deployment:
        """Create (or update) the resource's stack; fail unless the resource really exists."""
        stack_name = self.stack_name(logical_id)
        body = json.dumps(
            {
                "AWSTemplateFormatVersion": "2010-09-09",
                "Description": f"{logical_id} of local stack {self.stack_prefix}",
                "Resources": {logical_id: {"Type": kind, "Properties": dict(properties)}},
            },
            sort_keys=True,
        )
        action: Literal["created", "updated", "unchanged"] = "created"
        try:
            self._cfn.create_stack(StackName=stack_name, TemplateBody=body)
        except ClientError as error:
            if error.response["Error"]["Code"] != "AlreadyExistsException":
                raise
            action = self._update(stack_name, body)
        status = self._cfn.describe_stacks(StackName=stack_name)["Stacks"][0]["StackStatus"]
        if status not in _DONE:
            raise CloudFormationError(f"stack {stack_name} is {status}")
        listed = self._cfn.describe_stack_resources(StackName=stack_name)["StackResources"]
        mine = [r for r in listed if r.get("LogicalResourceId") == logical_id]
        if not mine or not mine[0].get("PhysicalResourceId"):
            raise CloudFormationError(
                f"stack {stack_name} is {status} but moto's CloudFormation did not create "
                f"{kind} {logical_id}"
            )
        return Deployment(stack_name, str(mine[0]["PhysicalResourceId"]), action)

    def _update(self, stack_name: str, body: str) -> Literal["updated", "unchanged"]:
        # CloudFormation refuses an update that changes nothing; moto would replace some
        # resources anyway (a topic is deleted and created again, losing its subscriptions).
        current = self._cfn.get_template(StackName=stack_name)["TemplateBody"]
        if _same_template(current, body):
            return "unchanged"
        self._cfn.update_stack(StackName=stack_name, TemplateBody=body)
        return "updated"


def _same_template(current: Any, body: str) -> bool:
    document = json.loads(current) if isinstance(current, str) else current
    return bool(document == json.loads(body))
