"""Create template resources in the embedded AWS through boto3, and read each one back.

moto's own CloudFormation reports CREATE_COMPLETE while silently skipping alarms,
subscriptions, secrets and TTL settings, so each supported type is created here with the
service API instead, and verified by reading it back: a setting that did not stick fails
provisioning rather than surfacing later as a confusing local behaviour.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from local.moto_server import aws_client

__all__ = ["AwsResources", "Outcome", "VerificationError"]


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
    """Creates and verifies the resource types moto can hold, one method per type."""

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
        self._creators: dict[str, Callable[[str, dict[str, Any]], Outcome]] = {
            "AWS::SQS::Queue": self.queue,
            "AWS::DynamoDB::Table": self.table,
            "AWS::SNS::Topic": self.topic,
            "AWS::SecretsManager::Secret": self.secret,
            "AWS::CloudWatch::Alarm": self.alarm,
            "AWS::CloudWatch::Dashboard": self.dashboard,
            "AWS::Logs::LogGroup": self.log_group,
        }

    # plumbing ---------------------------------------------------------------------------
    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = aws_client(service, self.endpoint_url)
        return self._clients[service]

    def handles(self, kind: str) -> bool:
        return kind in self._creators

    def create(self, kind: str, logical_id: str, properties: dict[str, Any]) -> Outcome:
        return self._creators[kind](logical_id, properties)

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
    def queue(self, logical_id: str, p: dict[str, Any]) -> Outcome:
        fifo = _bool(p.get("FifoQueue"))
        name = str(p.get("QueueName") or self.name(logical_id, 80, ".fifo" if fifo else ""))
        attributes = {key: _text(p[key]) for key in _QUEUE_ATTRIBUTES if key in p}
        if not fifo:
            attributes.pop("FifoQueue", None)
        tags = {tag["Key"]: tag["Value"] for tag in _tags(p)}
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=name, Attributes=attributes, tags=tags)["QueueUrl"]
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
        request = _table_request(name, p)
        try:
            ddb.create_table(**request)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceInUseException":
                raise
        checked = []
        ttl = p.get("TimeToLiveSpecification")
        if ttl and _bool(ttl.get("Enabled")):
            # moto's CloudFormation skips this setting; the API call does not.
            spec = {"AttributeName": ttl["AttributeName"], "Enabled": True}
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=spec)
        pitr = p.get("PointInTimeRecoverySpecification")
        if pitr and _bool(pitr.get("PointInTimeRecoveryEnabled")):
            ddb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
            checked.append("point-in-time recovery on")

        table = ddb.describe_table(TableName=name)["Table"]
        if table["KeySchema"] != p["KeySchema"]:
            raise VerificationError(f"table {name}: key schema is {table['KeySchema']}")
        wanted_indexes = {index["IndexName"] for index in p.get("GlobalSecondaryIndexes") or []}
        actual_indexes = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}
        if wanted_indexes != actual_indexes:
            raise VerificationError(f"table {name}: indexes are {sorted(actual_indexes)}")
        if wanted_indexes:
            checked.append("GSI " + ", ".join(sorted(wanted_indexes)))
        if ttl and _bool(ttl.get("Enabled")):
            described = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if (
                described.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING")
                or described.get("AttributeName") != ttl["AttributeName"]
            ):
                raise VerificationError(f"table {name}: TTL is {described}")
            checked.append(f"TTL on {ttl['AttributeName']} (expired items are not deleted locally)")
        attributes = {"Arn": table["TableArn"]}
        if table.get("LatestStreamArn"):
            attributes["StreamArn"] = table["LatestStreamArn"]
        detail = "verified: " + "; ".join(["keys", *checked])
        return Outcome(name, name, attributes, detail, _unknown(p, _TABLE_KEYS))

    # SNS ----------------------------------------------------------------------------------
    def topic(self, logical_id: str, p: dict[str, Any]) -> Outcome:
        fifo = _bool(p.get("FifoTopic"))
        name = str(p.get("TopicName") or self.name(logical_id, 256, ".fifo" if fifo else ""))
        attributes = {key: _text(p[key]) for key in _TOPIC_ATTRIBUTES if key in p}
        if not fifo:
            attributes.pop("FifoTopic", None)
        sns = self.client("sns")
        request: dict[str, Any] = {"Name": name, "Attributes": attributes}
        if p.get("Tags"):
            request["Tags"] = _tags(p)
        arn = sns.create_topic(**request)["TopicArn"]
        actual = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
        if actual.get("TopicArn") != arn:
            raise VerificationError(f"topic {name} not found after creation")
        known = _TOPIC_ATTRIBUTES | {"TopicName", "Tags", "Subscription"}
        return Outcome(
            arn, arn, {"TopicArn": arn, "TopicName": name}, "verified", _unknown(p, known)
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

    def dashboard(self, logical_id: str, p: dict[str, Any]) -> Outcome:
        name = str(p.get("DashboardName") or self.name(logical_id, 255))
        body = p["DashboardBody"]
        body = body if isinstance(body, str) else json.dumps(body)
        cloudwatch = self.client("cloudwatch")
        cloudwatch.put_dashboard(DashboardName=name, DashboardBody=body)
        stored = cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"]
        if json.loads(stored) != json.loads(body):
            raise VerificationError(f"dashboard {name}: stored body differs")
        return Outcome(name, name, {}, "verified", _unknown(p, {"DashboardName", "DashboardBody"}))

    # CloudWatch Logs ------------------------------------------------------------------------
    def log_group(self, logical_id: str, p: dict[str, Any]) -> Outcome:
        name = str(p.get("LogGroupName") or self.name(logical_id, 512))
        logs = self.client("logs")
        try:
            logs.create_log_group(logGroupName=name)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
        detail = "verified"
        if "RetentionInDays" in p:
            days = int(p["RetentionInDays"])
            logs.put_retention_policy(logGroupName=name, retentionInDays=days)
            detail += f"; retention {days} days"
        groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        group = next((item for item in groups if item["logGroupName"] == name), None)
        if group is None or ("RetentionInDays" in p and group.get("retentionInDays") != days):
            raise VerificationError(f"log group {name} not stored as defined")
        arn = f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{name}:*"
        known = {"LogGroupName", "RetentionInDays", "Tags"}
        return Outcome(name, name, {"Arn": arn}, detail, _unknown(p, known))


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
