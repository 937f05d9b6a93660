"""moto's own CloudFormation, type by type: the evidence behind local/provision.py's table.

Each type provisioning lets moto's CloudFormation create (``MOTO_CFN_TYPES``) is created here
through ``create_stack`` with the properties our templates set, and must read back through its
service API exactly as set. Each type provisioning creates with boto3 instead
(``BOTO3_TYPES``) must still be one moto gets wrong: when a moto upgrade fixes it, its test
fails, and the type can move to moto's CloudFormation (table, constants and README).
"""

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

import local.provision
from local.aws_resources import BOTO3_TYPES, MOTO_CFN_TYPES
from local.emulated import EMULATED_TYPES
from local.intrinsics import parameter_values
from local.moto_cfn import CloudFormationError, MotoCloudFormation
from local.moto_server import LOCAL_ACCOUNT_ID, LOCAL_REGION, aws_client
from local.sam import load_template, translate
from tests.fixtures.local_stack.harness import TEMPLATE as FIXTURE_TEMPLATE
from tests.fixtures.local_stack.harness import shared_moto

# What moto says when it skips a type is exactly what some of these tests provoke.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse .* not supported:UserWarning")

ROOT = Path(__file__).resolve().parents[2]
STACK = "fidelity"
FUNCTION_ARN = f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:function:{STACK}-Metrics"
TOPIC_ARN = f"arn:aws:sns:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:{STACK}-Topic"


@pytest.fixture(scope="module")
def endpoint():
    return shared_moto().endpoint_url


@pytest.fixture(scope="module")
def cfn(endpoint):
    return MotoCloudFormation(aws_client("cloudformation", endpoint), STACK)


# -- types moto's CloudFormation creates: every property comes back -------------------------


def test_queues_round_trip(cfn, endpoint):
    sqs = aws_client("sqs", endpoint)
    cfn.deploy(
        "Dlq",
        "AWS::SQS::Queue",
        {"QueueName": "fidelity-Dlq", "MessageRetentionPeriod": 1209600,
         "SqsManagedSseEnabled": True},
    )
    dlq_url = sqs.get_queue_url(QueueName="fidelity-Dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    cfn.deploy(
        "Queue",
        "AWS::SQS::Queue",
        {"QueueName": "fidelity-Queue", "VisibilityTimeout": 180, "DelaySeconds": 0,
         "MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True,
         "RedrivePolicy": {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 15}},
    )
    url = sqs.get_queue_url(QueueName="fidelity-Queue")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert {key: attributes[key] for key in (
        "VisibilityTimeout", "DelaySeconds", "MessageRetentionPeriod", "SqsManagedSseEnabled"
    )} == {"VisibilityTimeout": "180", "DelaySeconds": "0", "MessageRetentionPeriod": "1209600",
           "SqsManagedSseEnabled": "true"}
    redrive = json.loads(attributes["RedrivePolicy"])
    assert (redrive["deadLetterTargetArn"], int(redrive["maxReceiveCount"])) == (dlq_arn, 15)


def test_topic_round_trips(cfn, endpoint):
    cfn.deploy(
        "Topic", "AWS::SNS::Topic", {"TopicName": "fidelity-Topic", "DisplayName": "alarms"}
    )
    attributes = aws_client("sns", endpoint).get_topic_attributes(TopicArn=TOPIC_ARN)[
        "Attributes"]
    assert (attributes["TopicArn"], attributes["DisplayName"]) == (TOPIC_ARN, "alarms")


def test_dashboard_round_trips(cfn, endpoint):
    body = json.dumps({"widgets": [{"type": "metric", "properties": {
        "region": LOCAL_REGION, "metrics": [["KisiGateway", "Attempts", "service", "x"]]}}]})
    cfn.deploy(
        "Dashboard",
        "AWS::CloudWatch::Dashboard",
        {"DashboardName": "fidelity-Dashboard", "DashboardBody": body},
    )
    stored = aws_client("cloudwatch", endpoint).get_dashboard(DashboardName="fidelity-Dashboard")
    assert json.loads(stored["DashboardBody"]) == json.loads(body)


def test_log_group_round_trips(cfn, endpoint):
    cfn.deploy(
        "Logs",
        "AWS::Logs::LogGroup",
        {"LogGroupName": "/aws/lambda/fidelity-Api", "RetentionInDays": 7},
    )
    groups = aws_client("logs", endpoint).describe_log_groups(
        logGroupNamePrefix="/aws/lambda/fidelity-Api"
    )["logGroups"]
    assert [(g["logGroupName"], g["retentionInDays"]) for g in groups] == [
        ("/aws/lambda/fidelity-Api", 7)
    ]


@pytest.mark.parametrize(
    ("state", "expected"), [(None, "ENABLED"), ("ENABLED", "ENABLED"), ("DISABLED", "DISABLED")]
)
def test_schedule_rule_round_trips(cfn, endpoint, state, expected):
    name = f"fidelity-Rule-{state}"
    properties = {
        "Name": name,
        "Description": "Bad-request rates and alarm reconciliation",
        "ScheduleExpression": "rate(1 minute)",
        "Targets": [{"Arn": FUNCTION_ARN, "Id": "Tick", "Input": '{"source": "test"}'}],
    }
    if state is not None:
        properties["State"] = state
    cfn.deploy(f"Rule{state}", "AWS::Events::Rule", properties)
    events = aws_client("events", endpoint)
    rule = events.describe_rule(Name=name)
    assert (rule["ScheduleExpression"], rule["State"], rule["Description"]) == (
        "rate(1 minute)", expected, "Bad-request rates and alarm reconciliation"
    )
    targets = events.list_targets_by_rule(Rule=name)["Targets"]
    assert [(t["Id"], t["Arn"], t.get("Input")) for t in targets] == [
        ("Tick", FUNCTION_ARN, '{"source": "test"}')
    ]


def test_a_second_deploy_updates_or_leaves_the_stack(cfn, endpoint):
    properties = {"QueueName": "fidelity-Redeploy", "VisibilityTimeout": 30}
    assert cfn.deploy("Redeploy", "AWS::SQS::Queue", properties).action == "created"
    assert cfn.deploy("Redeploy", "AWS::SQS::Queue", properties).action == "unchanged"
    changed = {**properties, "VisibilityTimeout": 60}
    assert cfn.deploy("Redeploy", "AWS::SQS::Queue", changed).action == "updated"
    sqs = aws_client("sqs", endpoint)
    url = sqs.get_queue_url(QueueName="fidelity-Redeploy")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert attributes["Attributes"]["VisibilityTimeout"] == "60"


# -- types created with boto3: what moto's CloudFormation still gets wrong -----------------


def test_table_settings_are_dropped(cfn, endpoint):
    """Keys and indexes come back; TTL, point-in-time recovery and SSE do not."""
    cfn.deploy(
        "Table",
        "AWS::DynamoDB::Table",
        {
            "TableName": "fidelity-Table",
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "request_id", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "request_id", "KeyType": "HASH"}],
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
        },
    )
    ddb = aws_client("dynamodb", endpoint)
    table = ddb.describe_table(TableName="fidelity-Table")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "request_id", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = ddb.describe_time_to_live(TableName="fidelity-Table")["TimeToLiveDescription"]
    backups = ddb.describe_continuous_backups(TableName="fidelity-Table")[
        "ContinuousBackupsDescription"]
    dropped = {
        "TTL": ttl["TimeToLiveStatus"],
        "PITR": backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"],
        "SSE": table.get("SSEDescription", {}).get("Status"),
    }
    assert dropped == {"TTL": "DISABLED", "PITR": "DISABLED", "SSE": None}, (
        "moto's CloudFormation now applies table settings: reconsider BOTO3_TYPES"
    )


def test_secret_is_skipped(cfn, endpoint):
    with pytest.raises(CloudFormationError, match="did not create"):
        cfn.deploy(
            "Secret",
            "AWS::SecretsManager::Secret",
            {"Name": "fidelity-Secret", "SecretString": "value"},
        )
    listed = aws_client("secretsmanager", endpoint).list_secrets()["SecretList"]
    assert "fidelity-Secret" not in [secret["Name"] for secret in listed]


def test_a_key_policy_breaks_the_key(cfn, endpoint):
    deployment = cfn.deploy(
        "Key", "AWS::KMS::Key",
        {"Description": "fidelity", "KeyPolicy": {"Version": "2012-10-17", "Statement": []}},
    )
    kms = aws_client("kms", endpoint)
    with pytest.raises(ClientError):
        kms.describe_key(KeyId=deployment.physical_id)


def test_alarm_is_skipped(cfn, endpoint):
    with pytest.raises(CloudFormationError, match="did not create"):
        cfn.deploy(
            "Alarm",
            "AWS::CloudWatch::Alarm",
            {"AlarmName": "fidelity-Alarm", "Namespace": "KisiGateway", "MetricName": "Finished",
             "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1, "Threshold": 0,
             "ComparisonOperator": "GreaterThanThreshold", "AlarmActions": [TOPIC_ARN]},
        )
    alarms = aws_client("cloudwatch", endpoint).describe_alarms(AlarmNames=["fidelity-Alarm"])
    assert alarms["MetricAlarms"] == []


def test_subscription_is_skipped(cfn, endpoint):
    cfn.deploy("SubTopic", "AWS::SNS::Topic", {"TopicName": "fidelity-SubTopic"})
    topic_arn = f"arn:aws:sns:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:fidelity-SubTopic"
    with pytest.raises(CloudFormationError, match="did not create"):
        cfn.deploy(
            "Subscription",
            "AWS::SNS::Subscription",
            {"TopicArn": topic_arn, "Protocol": "email", "Endpoint": "ops@example.com"},
        )
    sns = aws_client("sns", endpoint)
    assert sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"] == []


def test_policies_and_usage_plans_are_skipped(cfn, endpoint):
    """Emulated types the table calls "not implemented" (recorded locally, not enforced)."""
    sqs = aws_client("sqs", endpoint)
    url = sqs.create_queue(QueueName="fidelity-Policied")["QueueUrl"]
    statement = {"Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage",
                 "Resource": "*"}
    skipped = {
        "QueuePolicy": ("AWS::SQS::QueuePolicy", {
            "Queues": [url], "PolicyDocument": {"Version": "2012-10-17",
                                                "Statement": [statement]}}),
        "TopicPolicy": ("AWS::SNS::TopicPolicy", {
            "Topics": [TOPIC_ARN], "PolicyDocument": {"Version": "2012-10-17",
                                                      "Statement": [statement]}}),
        "ApiKey": ("AWS::ApiGateway::ApiKey", {"Enabled": True}),
        "UsagePlan": ("AWS::ApiGateway::UsagePlan", {"Throttle": {"RateLimit": 10}}),
    }
    for logical_id, (kind, properties) in skipped.items():
        with pytest.raises(CloudFormationError, match="did not create"):
            cfn.deploy(logical_id, kind, properties)
    assert "Policy" not in sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get(
        "Attributes", {})


# -- the table itself ------------------------------------------------------------------------


@pytest.mark.parametrize("template", [ROOT / "template.yaml", FIXTURE_TEMPLATE])
def test_every_type_of_the_templates_has_a_decided_creator(template):
    source = load_template(template)
    translated = translate(source, template.parent, parameter_values(source), LOCAL_REGION)
    kinds = {resource["Type"] for resource in translated.template["Resources"].values()}
    decided = set(MOTO_CFN_TYPES) | set(BOTO3_TYPES) | set(EMULATED_TYPES)
    # The fixture's state machine is there to be reported unsupported.
    assert kinds - decided <= {"AWS::StepFunctions::StateMachine"}


def test_the_provisioning_docstring_states_the_same_table():
    rows = {}
    for line in (local.provision.__doc__ or "").splitlines():
        if line.startswith("AWS::"):
            kind, _, rest = line.partition(" ")
            rows[kind.rstrip(",")] = rest
    for kind in MOTO_CFN_TYPES:
        assert "moto CloudFormation" in rows[kind], kind
    for kind in BOTO3_TYPES:
        assert "our boto3 code" in rows[kind], kind
