"""Provisioning the fixture SAM template into moto: created, verified, emulated, reported."""

import json

import pytest

from local.aws_resources import BOTO3, MOTO_CFN
from local.intrinsics import IntrinsicError, Resolver, creation_order
from local.moto_server import ProvisionMarker, aws_client
from local.provision import provision
from local.sam import TemplateError, load_template
from tests.fixtures.local_stack.harness import TEMPLATE, shared_moto

STACK = "prov"


@pytest.fixture(scope="module")
def endpoint():
    return shared_moto().endpoint_url


@pytest.fixture(scope="module")
def stack(endpoint):
    return provision(
        TEMPLATE, endpoint, stack_name=STACK, secret_values={"KisiSecret": "kisi-key-from-env"}
    )


def test_every_resource_gets_a_report_line(stack):
    report = stack.report()
    assert "unsupported: Workflow AWS::StepFunctions::StateMachine" in report
    logical_ids = [
        line.split(": ", 1)[1].split()[0] for line in report if not line.startswith("warning")
    ]
    assert sorted(logical_ids) == sorted(stack.resources)
    assert stack.summary() == "created 15, emulated 18, unsupported 1"
    assert stack.resources["WorkQueue"].status == "created"
    assert stack.resources["ApiFunction"].status == "emulated"
    assert stack.resources["Api"].status == "emulated"
    assert stack.resources["AlarmEmailSubscription"].detail == "email is not deliverable locally"


def test_the_report_says_who_created_each_resource(stack):
    by_moto = {"WorkQueue", "WorkDeadLetterQueue", "AlarmTopic", "ApiLogGroup", "Dashboard",
               "MetricsFunctionTick"}
    by_boto3 = {"RecordsTable", "KisiSecret", "ErrorsAlarm", "AlarmEmailSubscription",
                "ApiApiKey", "ApiUsagePlan", "ApiUsagePlanKey"}
    for logical_id in by_moto:
        resource = stack.resources[logical_id]
        assert resource.created_by == f"{MOTO_CFN}, stack {STACK}-{logical_id}", logical_id
        assert f"(by {MOTO_CFN}, stack {STACK}-{logical_id}; verified" in resource.report_line()
    for logical_id in by_boto3:
        assert stack.resources[logical_id].created_by == BOTO3, logical_id
        assert f"(by {BOTO3}; " in stack.resources[logical_id].report_line()
    created = {lid for lid, r in stack.resources.items() if r.status == "created"}
    assert created == by_moto | by_boto3 | {"BadRequestRateAlarm", "DeadLetterDepthAlarm"}
    assert all(not r.created_by for r in stack.resources.values() if r.status != "created")
    rule = stack.resources["MetricsFunctionTick"]
    assert "fired locally: rate(1 minute) -> MetricsFunction" in rule.detail


def test_queue_redrive_and_attributes_are_set(stack, endpoint):
    sqs = aws_client("sqs", endpoint)
    attributes = sqs.get_queue_attributes(
        QueueUrl=stack.physical_id("WorkQueue"), AttributeNames=["All"]
    )["Attributes"]
    assert attributes["VisibilityTimeout"] == "1"
    assert attributes["MessageRetentionPeriod"] == "3600"
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == stack.attribute("WorkDeadLetterQueue", "Arn")
    assert int(redrive["maxReceiveCount"]) == 2


def test_table_has_ttl_index_and_billing_mode(stack, endpoint):
    ddb = aws_client("dynamodb", endpoint)
    name = stack.physical_id("RecordsTable")
    ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    table = ddb.describe_table(TableName=name)["Table"]
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == ["by-status"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_secret_takes_the_supplied_value(stack, endpoint):
    secrets = aws_client("secretsmanager", endpoint)
    value = secrets.get_secret_value(SecretId=stack.physical_id("KisiSecret"))["SecretString"]
    assert value == "kisi-key-from-env"
    assert "value supplied by the runtime" in stack.resources["KisiSecret"].detail


def test_alarms_are_stored_including_metric_math(stack, endpoint):
    cloudwatch = aws_client("cloudwatch", endpoint)
    alarms = {a["AlarmName"]: a for a in cloudwatch.describe_alarms()["MetricAlarms"]}
    math = alarms[f"{STACK}-bad-request-rate"]
    assert [query["Id"] for query in math["Metrics"]] == ["bad", "total", "rate"]
    assert math["AlarmActions"] == [stack.physical_id("AlarmTopic")]
    plain = alarms[stack.physical_id("ErrorsAlarm")]
    assert plain["MetricName"] == "Errors"
    assert plain["Dimensions"] == [{"Name": "service", "Value": "fixture"}]
    assert sorted(stack.alarms) == sorted(
        [f"{STACK}-bad-request-rate", f"{STACK}-ErrorsAlarm", f"{STACK}-DeadLetterDepthAlarm"]
    )


def test_functions_get_resolved_environment_and_layers(stack):
    api = stack.functions["ApiFunction"]
    assert api.handler == "fixture_api.handler"
    assert (api.timeout_s, api.memory_mb) == (5, 256)
    assert api.environment == {
        "POWERTOOLS_SERVICE_NAME": "fixture",
        "POWERTOOLS_METRICS_NAMESPACE": "Fixture",
        "RECORDS_TABLE": f"{STACK}-RecordsTable",
        "WORK_QUEUE_URL": stack.physical_id("WorkQueue"),
        "KISI_SECRET_ARN": stack.physical_id("KisiSecret"),
        "STAGE_LABEL": "v1-us-east-1",
        "QUEUE_ARN": f"arn:aws:sqs:us-east-1:123456789012:{STACK}-WorkQueue",
    }
    assert api.code_dir == TEMPLATE.parent / "functions" / "api_fn"
    [layer] = api.layers
    assert layer.build_method == "makefile"
    assert (layer.import_dir / "fixture_shared" / "__init__.py").is_file()


def test_triggers_are_read_from_the_template(stack):
    [mapping] = stack.sqs_mappings
    assert (mapping.function, mapping.batch_size, mapping.report_batch_item_failures) == (
        "WorkerFunction",
        5,
        True,
    )
    [schedule] = stack.schedules
    assert (schedule.expression, schedule.targets[0].function) == (
        "rate(1 minute)",
        "MetricsFunction",
    )
    routes = {(route.method, route.resource): route for route in stack.routes}
    assert set(routes) == {("ANY", "/kisi/{proxy+}"), ("GET", "/requests/{id}"), ("GET", "/health")}
    assert routes[("ANY", "/kisi/{proxy+}")].api_key_required
    assert not routes[("GET", "/health")].api_key_required
    assert {route.stage for route in stack.routes} == {"v1"}
    lambda_subscriptions = [s for s in stack.subscriptions if s.protocol == "lambda"]
    assert [s.function for s in lambda_subscriptions] == ["MetricsFunction"]


def test_parameters_and_conditions_change_the_result(endpoint):
    stack = provision(TEMPLATE, endpoint, stack_name="prov-prod", parameters={"StageName": "prod"})
    assert stack.functions["ApiFunction"].environment["STAGE_LABEL"] == "production"
    assert {route.stage for route in stack.routes} == {"prod"}


def test_marker_notices_a_missing_stack(endpoint):
    marker = ProvisionMarker(endpoint, "marker-test")
    assert not marker.is_present()
    marker.mark()
    assert marker.is_present()
    aws_client("ssm", endpoint).delete_parameter(Name=marker.name)
    assert not marker.is_present()


def test_short_form_tags_become_long_form(tmp_path):
    path = tmp_path / "template.yaml"
    path.write_text(
        "A: !Ref X\nB: !GetAtt Q.Arn\nC: !Sub '${AWS::Region}'\nD: !If [Cond, 1, 2]\n"
        "E: !Select [0, !Split [',', 'a,b']]\nF: !Join ['-', [a, b]]\n"
        "AWSTemplateFormatVersion: 2010-09-09\n"
    )
    template = load_template(path)
    assert template == {
        "A": {"Ref": "X"},
        "B": {"Fn::GetAtt": ["Q", "Arn"]},
        "C": {"Fn::Sub": "${AWS::Region}"},
        "D": {"Fn::If": ["Cond", 1, 2]},
        "E": {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]},
        "F": {"Fn::Join": ["-", ["a", "b"]]},
        "AWSTemplateFormatVersion": "2010-09-09",
    }
    # Plain types, as samtranslator and json.dumps expect (no parser node subclasses).
    assert type(template["B"]) is dict
    assert type(template["B"]["Fn::GetAtt"]) is list
    assert type(template["A"]["Ref"]) is str


def test_template_loading_keeps_json_and_refuses_bad_documents(tmp_path):
    json_path = tmp_path / "template.json"
    json_path.write_text('{"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}, "Codes": {"200": 1}}')
    assert load_template(json_path) == {
        "Resources": {"Q": {"Type": "AWS::SQS::Queue"}},
        "Codes": {"200": 1},
    }
    yaml_path = tmp_path / "codes.yaml"
    yaml_path.write_text("responses:\n  200: {description: ok}\n")
    assert load_template(yaml_path) == {"responses": {200: {"description": "ok"}}}
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text("A: 1\nA: 2\n")
    with pytest.raises(TemplateError, match="Duplicate"):
        load_template(duplicate)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(TemplateError, match="mapping"):
        load_template(listing)


def test_resolver_follows_cloudformation_rules():
    resolver = Resolver(
        parameters={"Env": "dev", "Names": ["a", "b"]},
        region="us-east-1",
        account_id="123456789012",
        stack_name="s",
        conditions={
            "IsDev": {"Fn::Equals": [{"Ref": "Env"}, "dev"]},
            "NotDev": {"Fn::Not": [{"Condition": "IsDev"}]},
            "Either": {"Fn::Or": [{"Condition": "IsDev"}, {"Condition": "NotDev"}]},
        },
    )
    resolver.add_resource("Queue", "https://q", {"Arn": "arn:q"})
    value = {
        "sub": {"Fn::Sub": "${Queue.Arn}/${AWS::AccountId}/${Env}/${!Literal}"},
        "join": {"Fn::Join": [",", {"Ref": "Names"}]},
        "select": {"Fn::Select": [1, {"Fn::Split": ["/", "x/y/z"]}]},
        "if": {"Fn::If": ["NotDev", "prod", {"Ref": "AWS::NoValue"}]},
        "either": {"Fn::If": ["Either", "yes", "no"]},
        "list": ["keep", {"Ref": "AWS::NoValue"}],
    }
    assert resolver.resolve(value) == {
        "sub": "arn:q/123456789012/dev/${Literal}",
        "join": "a,b",
        "select": "y",
        "either": "yes",
        "list": ["keep"],
    }
    with pytest.raises(IntrinsicError):
        resolver.resolve({"Ref": "Nothing"})


def test_creation_order_puts_dependencies_first():
    resources = {
        "Fn": {"Properties": {"Q": {"Ref": "Queue"}}},
        "Queue": {"Properties": {"R": {"Fn::GetAtt": "Dlq.Arn"}}},
        "Dlq": {},
        "Alarm": {"DependsOn": "Fn"},
    }
    assert creation_order(resources) == ["Dlq", "Queue", "Fn", "Alarm"]
    with pytest.raises(IntrinsicError, match="circular"):
        creation_order(
            {"A": {"Properties": {"x": {"Ref": "B"}}}, "B": {"Properties": {"x": {"Ref": "A"}}}}
        )
