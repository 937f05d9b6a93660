"""Create template resources in the embedded AWS, and read each one back.

Two ways in, chosen per type by what moto's own CloudFormation does with it (the evidence is
the table in :mod:`local.provision`, pinned by ``tests/integration/test_local_moto_cfn.py``):

- :data:`MOTO_CFN_TYPES`: moto's CloudFormation creates them with every property our
  templates set, so they go through ``create_stack`` (:mod:`local.moto_cfn`);
- :data:`BOTO3_TYPES`: moto's CloudFormation skips them, or drops settings, while reporting
  ``CREATE_COMPLETE``; they are created here with the service API.

Either way each resource is then read back through its service API and compared with the
template: a setting that did not stick fails provisioning rather than surfacing later as a
confusing local behaviour.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from botocore.exceptions import ClientError

from local.moto_cfn import MotoCloudFormation
from local.moto_server import aws_client

__all__ = [
    "BOTO3",
    "BOTO3_TYPES",
    "MOTO_CFN",
    "MOTO_CFN_TYPES",
    "AwsResources",
    "Outcome",
    "VerificationError",
]

# Who created a resource, as the provisioning report says it.
MOTO_CFN: Final = "moto CloudFormation"
BOTO3: Final = "our boto3 code"

# Types moto's CloudFormation creates faithfully -> the property that names them (given
# explicitly, so names stay <stack>-<LogicalId> across re-provisioning).
MOTO_CFN_TYPES: Final[Mapping[str, str]] = {
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::CloudWatch::Dashboard": "DashboardName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::Events::Rule": "Name",
}
# Types created with the service API -> what moto's CloudFormation does wrong with them.
BOTO3_TYPES: Final[Mapping[str, str]] = {
    "AWS::DynamoDB::Table": "drops TimeToLiveSpecification, PointInTimeRecoverySpecification "
    "and SSESpecification",
    "AWS::SecretsManager::Secret": "not implemented: skipped",
    "AWS::CloudWatch::Alarm": "not implemented: skipped",
    "AWS::SNS::Subscription": "not implemented: skipped",
    "AWS::KMS::Key": "keeps KeyPolicy as an object: DescribeKey on the key then fails (500)",
}


class VerificationError(RuntimeError):
    """A created resource, read back, does not match what the template asked for."""


@dataclass(frozen=True)
class Outcome:
    """What a created resource is: its physical id, its ``Ref`` and its ``Fn::GetAtt`` values."""

    physical_id: str
    ref: Any
    attributes: dict[str, Any]
    detail: str = ""
    ignored: tuple[str, ...] = field(default=())
    created_by: str = ""


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _text(value: Any) -> str:
    """A queue/topic attribute as the API wants it: a string (JSON for policies)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _tags(properties: Mapping[str, Any]) -> list[dict[str, str]]:
    tags = properties.get("Tags") or []
    if isinstance(tags, dict):  # some types take a map
        return [{"Key": str(k), "Value": str(v)} for k, v in tags.items()]
    return [{"Key": str(tag["Key"]), "Value": str(tag["Value"])} for tag in tags]


def _unknown(properties: Mapping[str, Any], known: set[str]) -> tuple[str, ...]:
    return tuple(sorted(key for key in properties if key not in known))


_QUEUE_ATTRIBUTES = {
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
}
_TOPIC_ATTRIBUTES = {
    "ContentBasedDeduplication",
    "DisplayName",
    "FifoTopic",
    "KmsMasterKeyId",
    "SignatureVersion",
    "TracingConfig",
}
_ALARM_INTS = ("Period", "EvaluationPeriods", "DatapointsToAlarm")
_ALARM_KEYS = {
    "ActionsEnabled",
    "AlarmActions",
    "AlarmDescription",
    "AlarmName",
    "ComparisonOperator",
    "DatapointsToAlarm",
    "Dimensions",
    "EvaluateLowSampleCountPercentile",
    "EvaluationPeriods",
    "ExtendedStatistic",
    "InsufficientDataActions",
    "MetricName",
    "Metrics",
    "Namespace",
    "OKActions",
    "Period",
    "Statistic",
    "Tags",
    "Threshold",
    "ThresholdMetricId",
    "TreatMissingData",
    "Unit",
}
_PASSWORD_OPTIONS = (
    "ExcludeCharacters",
    "ExcludeLowercase",
    "ExcludeNumbers",
    "ExcludePunctuation",
    "ExcludeUppercase",
    "IncludeSpace",
    "PasswordLength",
    "RequireEachIncludedType",
)


class AwsResources:
    """Creates the resource types moto can hold, and verifies each by reading it back."""

    def __init__(
        self,
        endpoint_url: str,
        stack_name: str,
        region: str,
        account_id: str,
        secret_values: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.stack_name = stack_name
        self.region = region
        self.account_id = account_id
        self._secret_values = dict(secret_values or {})
        self._clients: dict[str, Any] = {}
        self.cloudformation = MotoCloudFormation(self.client("cloudformation"), stack_name)
        # After moto's CloudFormation created it: (logical id, physical name, properties).
        self._readers: dict[str, Callable[[str, str, dict[str, Any]], Outcome]] = {
            "AWS::SQS::Queue": self.read_queue,
            "AWS::SNS::Topic": self.read_topic,
            "AWS::CloudWatch::Dashboard": self.read_dashboard,
            "AWS::Logs::LogGroup": self.read_log_group,
            "AWS::Events::Rule": self.read_rule,
        }
        # Created here, through the service API: (logical id, properties).
        self._creators: dict[str, Callable[[str, dict[str, Any]], Outcome]] = {
            "AWS::DynamoDB::Table": self.table,
            "AWS::SecretsManager::Secret": self.secret,
            "AWS::CloudWatch::Alarm": self.alarm,
            "AWS::KMS::Key": self.kms_key,
        }

    # plumbing ---------------------------------------------------------------------------
    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = aws_client(service, self.endpoint_url)
        return self._clients[service]

    def handles(self, kind: str) -> bool:
        return kind in self._readers or kind in self._creators

    def create(self, kind: str, logical_id: str, properties: dict[str, Any]) -> Outcome:
        """Create one resource (through moto's CloudFormation where it is faithful), verified."""
        if kind in self._readers:
            name_key = MOTO_CFN_TYPES[kind]
            name = str(properties.get(name_key) or self._default_name(kind, logical_id, properties))
            # An inline subscription list stays with the subscription emulation (moto would
            # subscribe a lambda endpoint itself and try to run it).
            sent = {k: v for k, v in properties.items() if k != "Subscription"}
            deployment = self.cloudformation.deploy(logical_id, kind, {**sent, name_key: name})
            outcome = self._readers[kind](logical_id, name, properties)
            creator = f"{MOTO_CFN}, stack {deployment.stack_name}"
            return dataclasses.replace(outcome, created_by=creator)
        return dataclasses.replace(self._creators[kind](logical_id, properties), created_by=BOTO3)

    def _default_name(self, kind: str, logical_id: str, p: Mapping[str, Any]) -> str:
        """The name CloudFormation would generate, made stable: ``<stack>-<LogicalId>``."""
        if kind == "AWS::SQS::Queue":
            return self.name(logical_id, 80, ".fifo" if _bool(p.get("FifoQueue")) else "")
        if kind == "AWS::SNS::Topic":
            return self.name(logical_id, 256, ".fifo" if _bool(p.get("FifoTopic")) else "")
        if kind == "AWS::Events::Rule":
            return self.name(logical_id, 64)
        return self.name(logical_id, 512 if kind == "AWS::Logs::LogGroup" else 255)

    def name(self, logical_id: str, limit: int, suffix: str = "") -> str:
        """A stable physical name, ``<stack>-<LogicalId>``, shortened with a hash when long.

        Stable names let a re-provisioning (after moto restarts) give every function the same
        environment it had.
        """
        name = f"{self.stack_name}-{logical_id}"
        if len(name) + len(suffix) > limit:
            digest = hashlib.sha256(name.encode()).hexdigest()[:8]
            name = f"{name[: limit - len(suffix) - 9]}-{digest}"
        return name + suffix

    # SQS --------------------------------------------------------------------------------
    def read_queue(self, logical_id: str, name: str, p: dict[str, Any]) -> Outcome:
        attributes = {key: _text(p[key]) for key in _QUEUE_ATTRIBUTES if key in p}
        if not _bool(p.get("FifoQueue")):
            attributes.pop("FifoQueue", None)
        sqs = self.client("sqs")
        # The URL on this endpoint (CloudFormation's Ref names the public SQS host).
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        actual = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        for key, wanted in attributes.items():
            if key in ("RedrivePolicy", "RedriveAllowPolicy"):
                same = _same_policy(wanted, actual.get(key))
            else:
                same = str(actual.get(key, "")).lower() == wanted.lower()
            if not same:
                raise VerificationError(f"queue {name}: {key} is {actual.get(key)!r}, not {wanted}")
        checked = [f"{key}={attributes[key]}" for key in sorted(attributes) if "Policy" not in key]
        if "RedrivePolicy" in attributes:
            policy = json.loads(attributes["RedrivePolicy"])
            target = str(policy["deadLetterTargetArn"]).rsplit(":", 1)[-1]
            checked.append(f"RedrivePolicy -> {target} after {policy['maxReceiveCount']}")
        return Outcome(
            url,
            url,
            {"Arn": actual["QueueArn"], "QueueName": name, "QueueUrl": url},
            "verified: " + ", ".join(checked) if checked else "verified",
            _unknown(p, _QUEUE_ATTRIBUTES | {"QueueName", "Tags"}),
        )

    # DynamoDB -----------------------------------------------------------------------------
    def table(self, logical_id: str, p: dict[str, Any]) -> Outcome:
        name = str(p.get("TableName") or self.name(logical_id, 255))
        ddb = self.client("dynamodb")
        try:
            ddb.create_table(**_table_request(name, p))
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceInUseException":
                raise
        ttl = p.get("TimeToLiveSpecification")
        if ttl and _bool(ttl.get("Enabled")):
            # Both settings need their own API call (CreateTable has no field for them).
            spec = {"AttributeName": ttl["AttributeName"], "Enabled": True}
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=spec)
        pitr = p.get("PointInTimeRecoverySpecification")
        if pitr and _bool(pitr.get("PointInTimeRecoveryEnabled")):
            ddb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
        table = ddb.describe_table(TableName=name)["Table"]
        checked = ["keys", *self._verify_table(name, table, p)]
        attributes = {"Arn": table["TableArn"]}
        if table.get("LatestStreamArn"):
            attributes["StreamArn"] = table["LatestStreamArn"]
        detail = "verified: " + "; ".join(checked)
        return Outcome(name, name, attributes, detail, _unknown(p, _TABLE_KEYS))

    def _verify_table(self, name: str, table: Mapping[str, Any], p: Mapping[str, Any]) -> list[str]:
        """Compare a described table with its properties; returns what was checked."""
        ddb = self.client("dynamodb")
        checked = []
        if table["KeySchema"] != p["KeySchema"]:
            raise VerificationError(f"table {name}: key schema is {table['KeySchema']}")
        wanted_indexes = {index["IndexName"] for index in p.get("GlobalSecondaryIndexes") or []}
        actual_indexes = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}
        if wanted_indexes != actual_indexes:
            raise VerificationError(f"table {name}: indexes are {sorted(actual_indexes)}")
        if wanted_indexes:
            checked.append("GSI " + ", ".join(sorted(wanted_indexes)))
        sse = p.get("SSESpecification")
        if sse and _bool(sse.get("SSEEnabled")):
            described_sse = table.get("SSEDescription") or {}
            if described_sse.get("Status") not in ("ENABLED", "ENABLING"):
                raise VerificationError(f"table {name}: encryption is {described_sse}")
            checked.append("SSE on")
        pitr = p.get("PointInTimeRecoverySpecification")
        if pitr and _bool(pitr.get("PointInTimeRecoveryEnabled")):
            backups = ddb.describe_continuous_backups(TableName=name)
            recovery = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
            if recovery.get("PointInTimeRecoveryStatus") != "ENABLED":
                raise VerificationError(f"table {name}: point-in-time recovery is {recovery}")
            checked.append("point-in-time recovery on")
        ttl = p.get("TimeToLiveSpecification")
        if ttl and _bool(ttl.get("Enabled")):
            described = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if (
                described.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING")
                or described.get("AttributeName") != ttl["AttributeName"]
            ):
                raise VerificationError(f"table {name}: TTL is {described}")
            checked.append(f"TTL on {ttl['AttributeName']} (expired items are not deleted locally)")
        return checked

    # SNS ----------------------------------------------------------------------------------
    def read_topic(self, logical_id: str, name: str, p: dict[str, Any]) -> Outcome:
        attributes = {key: _text(p[key]) for key in _TOPIC_ATTRIBUTES if key in p}
        if not _bool(p.get("FifoTopic")):
            attributes.pop("FifoTopic", None)
        arn = f"arn:aws:sns:{self.region}:{self.account_id}:{name}"
        try:
            actual = self.client("sns").get_topic_attributes(TopicArn=arn)["Attributes"]
        except ClientError as error:
            raise VerificationError(f"topic {name} not found after creation") from error
        for key, wanted in attributes.items():
            if str(actual.get(key, "")).lower() != wanted.lower():
                raise VerificationError(f"topic {name}: {key} is {actual.get(key)!r}, not {wanted}")
        checked = ", ".join(f"{key}={attributes[key]}" for key in sorted(attributes))
        known = _TOPIC_ATTRIBUTES | {"TopicName", "Tags", "Subscription"}
        return Outcome(
            arn,
            arn,
            {"TopicArn": arn, "TopicName": name},
            f"verified: {checked}" if checked else "verified",
            _unknown(p, known),
        )

    def subscribe(self, topic_arn: str, protocol: str, endpoint: str, raw: bool = False) -> str:
        """Subscribe in moto and check the subscription is listed; returns its ARN."""
        sns = self.client("sns")
        attributes = {"RawMessageDelivery": "true"} if raw else {}
        arn = str(
            sns.subscribe(
                TopicArn=topic_arn,
                Protocol=protocol,
                Endpoint=endpoint,
                Attributes=attributes,
                ReturnSubscriptionArn=True,
            )["SubscriptionArn"]
        )
        listed = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
        if not any(item["SubscriptionArn"] == arn for item in listed):
            raise VerificationError(f"subscription {protocol}:{endpoint} not listed on {topic_arn}")
        return arn

    # Secrets Manager ----------------------------------------------------------------------
    def secret(self, logical_id: str, p: dict[str, Any]) -> Outcome:
        name = str(p.get("Name") or self.name(logical_id, 512))
        sm = self.client("secretsmanager")
        override = self._secret_values.get(logical_id, self._secret_values.get(name))
        if override is not None:
            value, origin = override, "value supplied by the runtime"
        elif "SecretString" in p:
            value, origin = str(p["SecretString"]), "value from the template"
        else:
            value, origin = self._generate_secret(p.get("GenerateSecretString") or {}), "generated"
        request: dict[str, Any] = {"Name": name, "SecretString": value}
        if p.get("Description"):
            request["Description"] = p["Description"]
        if p.get("Tags"):
            request["Tags"] = _tags(p)
        try:
            arn = sm.create_secret(**request)["ARN"]
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceExistsException":
                raise
            if origin == "generated":
                # Provisioning again (moto restarted): a generated secret keeps its value, as
                # CloudFormation keeps it across stack updates.
                current = sm.get_secret_value(SecretId=name)
                arn, value = current["ARN"], current["SecretString"]
            else:
                arn = sm.put_secret_value(SecretId=name, SecretString=value)["ARN"]
        if sm.get_secret_value(SecretId=arn)["SecretString"] != value:
            raise VerificationError(f"secret {name}: stored value differs")
        known = {"Description", "GenerateSecretString", "KmsKeyId", "Name", "SecretString", "Tags"}
        return Outcome(arn, arn, {"Id": arn}, f"verified; {origin}", _unknown(p, known))

    def _generate_secret(self, spec: Mapping[str, Any]) -> str:
        options = {key: spec[key] for key in _PASSWORD_OPTIONS if key in spec}
        if "PasswordLength" in options:
            options["PasswordLength"] = int(options["PasswordLength"])
        for key, value in options.items():
            if key.startswith(("Exclude", "Include", "Require")) and key != "ExcludeCharacters":
                options[key] = _bool(value)
        password = str(
            self.client("secretsmanager").get_random_password(**options)["RandomPassword"]
        )
        if spec.get("SecretStringTemplate") and spec.get("GenerateStringKey"):
            document = json.loads(spec["SecretStringTemplate"])
            document[spec["GenerateStringKey"]] = password
            return json.dumps(document)
        return password

    # KMS ----------------------------------------------------------------------------------
    def kms_key(self, logical_id: str, p: dict[str, Any]) -> Outcome:
        """A symmetric key, found again by an alias of its own on a later provisioning."""
        kms = self.client("kms")
        alias = f"alias/{self.name(logical_id, 200)}"
        try:
            key_id = kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"]
        except ClientError as error:
            if error.response["Error"]["Code"] != "NotFoundException":
                raise
            request: dict[str, Any] = {"KeyUsage": "ENCRYPT_DECRYPT"}
            if p.get("Description"):
                request["Description"] = p["Description"]
            if p.get("KeyPolicy"):
                request["Policy"] = json.dumps(p["KeyPolicy"])
            key_id = kms.create_key(**request)["KeyMetadata"]["KeyId"]
            kms.create_alias(AliasName=alias, TargetKeyId=key_id)
        metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
        if not metadata.get("Enabled") or metadata.get("KeyUsage") != "ENCRYPT_DECRYPT":
            raise VerificationError(f"KMS key {logical_id}: not an enabled encryption key")
        if _bool(p.get("EnableKeyRotation")):
            kms.enable_key_rotation(KeyId=key_id)
        known = {"Description", "KeyPolicy", "EnableKeyRotation", "KeyUsage", "KeySpec", "Tags"}
        return Outcome(key_id, key_id, {"Arn": metadata["Arn"], "KeyId": key_id},
                       "verified", _unknown(p, known))

    # CloudWatch -----------------------------------------------------------------------------
    def alarm(self, logical_id: str, p: dict[str, Any]) -> Outcome:
        name = str(p.get("AlarmName") or self.name(logical_id, 255))
        request: dict[str, Any] = {key: p[key] for key in _ALARM_KEYS if key in p}
        request["AlarmName"] = name
        for key in _ALARM_INTS:
            if key in request:
                request[key] = int(request[key])
        if "Threshold" in request:
            request["Threshold"] = float(request["Threshold"])
        if "ActionsEnabled" in request:
            request["ActionsEnabled"] = _bool(request["ActionsEnabled"])
        if "Metrics" in request:
            request["Metrics"] = [_metric_query(query) for query in request["Metrics"]]
        if "Tags" in request:
            request["Tags"] = _tags(p)
        cloudwatch = self.client("cloudwatch")
        cloudwatch.put_metric_alarm(**request)
        found = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]
        if len(found) != 1 or found[0]["ComparisonOperator"] != request["ComparisonOperator"]:
            raise VerificationError(f"alarm {name} not stored as defined")
        wanted_ids = [query["Id"] for query in request.get("Metrics", [])]
        if [query["Id"] for query in found[0].get("Metrics", [])] != wanted_ids:
            raise VerificationError(f"alarm {name}: metric queries were not stored")
        kind = "metric math " + "/".join(wanted_ids) if wanted_ids else "metric " + p["MetricName"]
        return Outcome(
            name,
            name,
            {"Arn": found[0]["AlarmArn"]},
            f"verified; {kind}; evaluated by the local alarm evaluator",
            _unknown(p, _ALARM_KEYS),
        )

    def read_dashboard(self, logical_id: str, name: str, p: dict[str, Any]) -> Outcome:
        body = p["DashboardBody"]
        body = body if isinstance(body, str) else json.dumps(body)
        stored = self.client("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"]
        if json.loads(stored) != json.loads(body):
            raise VerificationError(f"dashboard {name}: stored body differs")
        return Outcome(
            name, name, {}, "verified: body", _unknown(p, {"DashboardName", "DashboardBody"})
        )

    # CloudWatch Logs ------------------------------------------------------------------------
    def read_log_group(self, logical_id: str, name: str, p: dict[str, Any]) -> Outcome:
        groups = self.client("logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        group = next((item for item in groups if item["logGroupName"] == name), None)
        if group is None:
            raise VerificationError(f"log group {name} not found after creation")
        detail = "verified"
        if "RetentionInDays" in p:
            days = int(p["RetentionInDays"])
            if group.get("retentionInDays") != days:
                raise VerificationError(
                    f"log group {name}: retention is {group.get('retentionInDays')}, not {days}"
                )
            detail += f"; retention {days} days"
        # AWS's Fn::GetAtt Arn ends in ":*" (moto's own GetAtt leaves it out; this is AWS's).
        arn = f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{name}:*"
        known = {"LogGroupName", "RetentionInDays", "Tags"}
        return Outcome(name, name, {"Arn": arn}, detail, _unknown(p, known))

    # EventBridge ----------------------------------------------------------------------------
    def read_rule(self, logical_id: str, name: str, p: dict[str, Any]) -> Outcome:
        events = self.client("events")
        try:
            rule = events.describe_rule(Name=name)
        except ClientError as error:
            raise VerificationError(f"rule {name} not found after creation") from error
        wanted_state = str(p.get("State", "ENABLED")).upper()
        checks = {
            "ScheduleExpression": (p.get("ScheduleExpression"), rule.get("ScheduleExpression")),
            "State": (wanted_state, rule.get("State")),
            "Description": (p.get("Description"), rule.get("Description")),
        }
        if "EventPattern" in p:
            pattern = p["EventPattern"]
            wanted_pattern = json.loads(pattern) if isinstance(pattern, str) else pattern
            checks["EventPattern"] = (wanted_pattern, json.loads(rule.get("EventPattern", "null")))
        for key, (wanted, actual) in checks.items():
            if wanted is not None and wanted != actual:
                raise VerificationError(f"rule {name}: {key} is {actual!r}, not {wanted!r}")
        stored = events.list_targets_by_rule(Rule=name)["Targets"]
        wanted_targets = sorted(_target(target) for target in p.get("Targets") or [])
        if sorted(_target(target) for target in stored) != wanted_targets:
            raise VerificationError(f"rule {name}: targets are {stored}")
        known = {"Description", "EventPattern", "Name", "ScheduleExpression", "State", "Targets"}
        return Outcome(
            name,
            name,
            {"Arn": rule["Arn"]},
            f"verified: {wanted_state}, {len(wanted_targets)} target(s)",
            _unknown(p, known),
        )


def _target(target: Mapping[str, Any]) -> tuple[str, str, str]:
    """A rule target as compared after creation: id, ARN and constant input."""
    return (str(target.get("Id")), str(target.get("Arn")), str(target.get("Input", "")))


_TABLE_KEYS = {
    "AttributeDefinitions",
    "BillingMode",
    "GlobalSecondaryIndexes",
    "KeySchema",
    "LocalSecondaryIndexes",
    "PointInTimeRecoverySpecification",
    "ProvisionedThroughput",
    "SSESpecification",
    "StreamSpecification",
    "TableClass",
    "TableName",
    "Tags",
    "TimeToLiveSpecification",
}


def _table_request(name: str, p: Mapping[str, Any]) -> dict[str, Any]:
    """CreateTable arguments from AWS::DynamoDB::Table properties."""
    request: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": p["AttributeDefinitions"],
        "KeySchema": p["KeySchema"],
        "BillingMode": p.get("BillingMode", "PROVISIONED"),
    }
    if "ProvisionedThroughput" in p:
        request["ProvisionedThroughput"] = _throughput(p["ProvisionedThroughput"])
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if p.get(key):
            request[key] = [_index(index) for index in p[key]]
    if p.get("StreamSpecification"):
        view = p["StreamSpecification"]["StreamViewType"]
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view}
    if p.get("SSESpecification"):
        request["SSESpecification"] = {"Enabled": _bool(p["SSESpecification"]["SSEEnabled"])}
    if p.get("Tags"):
        request["Tags"] = _tags(p)
    if p.get("TableClass"):
        request["TableClass"] = p["TableClass"]
    return request


def _same_policy(wanted: str, actual: str | None) -> bool:
    if actual is None:
        return False
    left, right = json.loads(wanted), json.loads(actual)
    return {k: str(v) for k, v in left.items()} == {k: str(v) for k, v in right.items()}


def _throughput(value: Mapping[str, Any]) -> dict[str, int]:
    return {key: int(value[key]) for key in ("ReadCapacityUnits", "WriteCapacityUnits")}


def _index(index: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")
    result = {key: index[key] for key in keep if key in index}
    if "ProvisionedThroughput" in result:
        result["ProvisionedThroughput"] = _throughput(result["ProvisionedThroughput"])
    return result


def _metric_query(query: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(query)
    if "ReturnData" in result:
        result["ReturnData"] = _bool(result["ReturnData"])
    if "Period" in result:
        result["Period"] = int(result["Period"])
    if "MetricStat" in result:
        stat = dict(result["MetricStat"])
        stat["Period"] = int(stat["Period"])
        result["MetricStat"] = stat
    return result
