"""Where a deployed (or local) stack keeps what the operator commands change.

A deployed stack is found by name through CloudFormation's outputs; ``make run`` writes the
same outputs, with the embedded AWS's endpoint, to ``.local-state/stack-outputs.json``, so
``--local`` finds the local stack the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_OUTPUTS = Path(__file__).resolve().parent.parent / ".local-state" / "stack-outputs.json"


class StackError(Exception):
    """The stack, or one of its outputs, could not be found."""


@dataclass(frozen=True, slots=True)
class StackRefs:
    """The names and ids of one stack's resources that operators touch."""

    name: str
    outputs: Mapping[str, str]
    endpoint_url: str | None = None  # the embedded AWS of ``make run``; None on AWS
    region: str | None = None

    def output(self, key: str) -> str:
        """One output by its key in template.yaml (``TenantsTableName``, ``UsagePlanId``...)."""
        value = self.outputs.get(key)
        if not value or value.startswith("<unresolved"):
            raise StackError(f"stack {self.name!r} has no output {key!r}")
        return value

    def tenant_secret_name(self, tenant: str) -> str:
        """A tenant's service login secret: under ``<stack>/tenants/``, where the template's
        IAM lets the Lambdas read and nothing else of the account."""
        return f"{self.name}/tenants/{tenant}"


def from_cloudformation(name: str, cloudformation: Any) -> StackRefs:
    """A deployed stack, by name."""
    try:
        stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except Exception as exc:  # botocore's ClientError, or no credentials/network
        raise StackError(f"stack {name!r} could not be read: {exc}") from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    return StackRefs(name, outputs)


def from_local(path: Path = LOCAL_OUTPUTS) -> StackRefs:
    """The stack ``make run`` is running (or last ran)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StackError(f"no local stack outputs at {path}: start `make run` first") from exc
    return StackRefs(doc["stack_name"], doc["outputs"], doc.get("endpoint_url"),
                     doc.get("region"))


def write_local(path: Path, *, stack_name: str, outputs: Mapping[str, Any], endpoint_url: str,
                region: str) -> None:
    """Record the local stack's outputs for ``python -m ops --local`` (written by make run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"stack_name": stack_name, "endpoint_url": endpoint_url, "region": region,
           "outputs": {k: str(v) for k, v in outputs.items()}}
    path.write_text(json.dumps(doc, indent=2) + "\n")


ClientFactory = Callable[[str], Any]


def clients_for(refs: StackRefs) -> ClientFactory:
    """boto3 clients for the stack's account: the embedded AWS's endpoint for a local one."""
    import boto3  # noqa: PLC0415 - only when a command runs

    endpoint_url = refs.endpoint_url
    if endpoint_url is not None:
        from local.moto_server import aws_client  # noqa: PLC0415 - the local stack only

        return lambda service: aws_client(service, endpoint_url)
    region = refs.region
    return lambda service: boto3.client(service, region_name=region)  # type: ignore[call-overload]
