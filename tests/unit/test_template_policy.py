"""template.yaml: least privilege for each function, and the contract with the code.

The template is read as plain YAML, with CloudFormation's short tags (``!Ref``, ``!GetAtt``,
``!Sub``, ``!If`` ...) turned into their long form, so the test needs no AWS and no SAM.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kisi_gateway import wiring
from kisi_gateway.config import Settings
from kisi_gateway.core.decisions import INLINE_LIMIT_S
from kisi_gateway.core.policy import PolicyTable

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
FUNCTIONS = ("api_call", "retry_worker", "metrics")


# --- loading ---------------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that accepts CloudFormation short-form tags."""


def _short_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _short_tag)


def load(text: str) -> dict[str, Any]:
    return yaml.load(text, Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass


def test_loader_turns_short_tags_into_long_form() -> None:
    doc = load("a: !Ref X\nb: !GetAtt T.Arn\nc: !Sub '${X}-y'\n"
               "d: !If [C, !Ref X, !Ref AWS::NoValue]\ne: !Not [!Equals [!Ref P, '']]\n")
    assert doc == {
        "a": {"Ref": "X"},
        "b": {"Fn::GetAtt": ["T", "Arn"]},
        "c": {"Fn::Sub": "${X}-y"},
        "d": {"Fn::If": ["C", {"Ref": "X"}, {"Ref": "AWS::NoValue"}]},
        "e": {"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, ""]}]},
    }


@functools.cache
def template() -> dict[str, Any]:
    return load(TEMPLATE.read_text())


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template()["Resources"].items() if r["Type"] == kind}


def function(module: str) -> dict[str, Any]:
    """The AWS::Serverless::Function whose handler lives in ``module``."""
    found = [r for r in resources("AWS::Serverless::Function").values()
             if r["Properties"]["Handler"].split(".")[0] == module]
    assert len(found) == 1, module
    return found[0]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(module: str) -> list[dict[str, Any]]:
    result = []
    for policy in function(module)["Properties"].get("Policies", []):
        # Only inline statements: a managed policy or a SAM policy template (such as
        # DynamoDBCrudPolicy) grants actions this file cannot see.
        assert isinstance(policy, dict), policy
        assert set(policy) == {"Statement"}, policy
        result += policy["Statement"]
    return result


def all_statements() -> Iterator[tuple[str, dict[str, Any]]]:
    for module in FUNCTIONS:
        for statement in statements(module):
            yield module, statement
    for name, role in resources("AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                yield name, statement
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for name, policy in resources(kind).items():
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                yield name, statement


def target(resource: Any) -> str:
    """The logical id a statement's resource points at (``*`` for everything)."""
    if resource == "*":
        return "*"
    if isinstance(resource, dict) and "Ref" in resource:
        return str(resource["Ref"])
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        return str(resource["Fn::GetAtt"][0])
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        return str(resource["Fn::Sub"])
    raise AssertionError(f"unexpected resource {resource!r}")


def grants(module: str, service: str) -> dict[str, set[str]]:
    """Logical id -> actions of ``service`` that ``module``'s function may perform on it."""
    found: dict[str, set[str]] = {}
    for statement in statements(module):
        assert statement["Effect"] == "Allow"
        actions = {a for a in as_list(statement["Action"]) if a.startswith(f"{service}:")}
        if not actions:
            continue
        for resource in as_list(statement["Resource"]):
            found.setdefault(target(resource), set()).update(actions)
    return found


# --- least privilege -------------------------------------------------------------------------


def test_no_statement_grants_a_wildcard_action() -> None:
    for owner, statement in all_statements():
        assert "NotAction" not in statement, owner
        assert "NotResource" not in statement, owner
        for action in as_list(statement["Action"]):
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), (owner, action)


# Actions that support no resource-level permission: their Resource must be "*"
# (Service Authorization Reference, Amazon CloudWatch). DescribeAlarms lists the alarm
# resource, but AWS answers composite alarms only when it is granted on "*".
STAR_ONLY = {
    "cloudwatch:GetMetricStatistics", "cloudwatch:GetMetricData", "cloudwatch:ListMetrics",
    "cloudwatch:DescribeAlarms", "cloudwatch:PutMetricData",
}


def test_resource_star_only_for_cloudwatch_actions_without_resource_permissions() -> None:
    namespace = template()["Globals"]["Function"]["Environment"]["Variables"][
        "POWERTOOLS_METRICS_NAMESPACE"]
    stars = 0
    for owner, statement in all_statements():
        if "*" not in as_list(statement["Resource"]):
            continue
        stars += 1
        actions = set(as_list(statement["Action"]))
        assert actions <= STAR_ONLY, (owner, actions - STAR_ONLY)
        if "cloudwatch:PutMetricData" in actions:
            condition = statement.get("Condition", {}).get("StringEquals", {})
            assert condition.get("cloudwatch:namespace") == namespace, owner
    assert stars >= 1  # the metrics Lambda reads and publishes metrics


# What the code needs, per function and resource (DESIGN.md: stores take their client).
# api_call: records.py create/get/add_attempt/delete_unsent (PutItem, GetItem, UpdateItem,
# DeleteItem); budget.py GetItem and UpdateItem (TransactWriteItems is authorised by the
# UpdateItem it contains); guard.py BatchGetItem, GetItem (unprocessed keys), UpdateItem.
# retry_worker: records get/claim/add_attempt only. metrics: guard open/close/states.
SENDER_TABLES = {
    "BudgetTable": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
    "GuardTable": {"dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:UpdateItem"},
    # directory.py: callers and tenants (GetItem), the GET /login cache (PutItem).
    "TenantsTable": {"dynamodb:GetItem", "dynamodb:PutItem"},
}
# Service logins: the stack's own (the default tenant), each tenant's under the stack's prefix
# (python -m ops tenant add creates them there), and the identity key.
TENANT_SECRETS = ("arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}"
                  ":secret:${AWS::StackName}/tenants/*")
SENDER_SECRETS = {name: {"secretsmanager:GetSecretValue"}
                  for name in ("KisiApiKeySecret", "IdentitySecret", TENANT_SECRETS)}
NEEDS: dict[str, dict[str, dict[str, set[str]]]] = {
    "api_call": {
        "dynamodb": {"RequestsTable": {"dynamodb:GetItem", "dynamodb:PutItem",
                                       "dynamodb:UpdateItem", "dynamodb:DeleteItem"},
                     **SENDER_TABLES},
        "sqs": {"RetryQueue": {"sqs:SendMessage"}},
        "secretsmanager": SENDER_SECRETS,
        "kms": {"CredentialKey": {"kms:Encrypt"}},  # vault.py seals a caller's credential
    },
    "retry_worker": {
        "dynamodb": {"RequestsTable": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
                     **SENDER_TABLES},
        "sqs": {"RetryQueue": {"sqs:SendMessage", "sqs:ChangeMessageVisibility"},
                "RetryDLQ": {"sqs:SendMessage"}},
        "secretsmanager": SENDER_SECRETS,
        "kms": {"CredentialKey": {"kms:Decrypt"}},  # ...and the worker opens it, only
    },
    "metrics": {
        "dynamodb": {"GuardTable": {"dynamodb:UpdateItem", "dynamodb:Scan"}},
        "sqs": {},
        "secretsmanager": {},
        "kms": {},
    },
}


@pytest.mark.parametrize("module", FUNCTIONS)
@pytest.mark.parametrize("service", ["dynamodb", "sqs", "secretsmanager", "kms"])
def test_each_function_reaches_only_its_own_resources(module: str, service: str) -> None:
    granted = grants(module, service)
    allowed = set(NEEDS[module][service])
    if module == "metrics" and service == "sqs":
        allowed |= {"RetryQueue", "RetryDLQ"}  # queue depth, read-only
        assert set().union(*granted.values()) <= {"sqs:GetQueueAttributes"}
    assert set(granted) <= allowed
    assert set(granted) >= set(NEEDS[module][service])


@pytest.mark.parametrize("module", FUNCTIONS)
@pytest.mark.parametrize("service", ["dynamodb", "sqs", "secretsmanager", "kms"])
def test_each_function_may_do_what_its_code_does(module: str, service: str) -> None:
    granted = grants(module, service)
    for resource, actions in NEEDS[module][service].items():
        assert actions <= granted.get(resource, set()), (resource, actions - granted[resource])


def test_api_call_may_only_send_to_the_retry_queue() -> None:
    assert grants("api_call", "sqs") == {"RetryQueue": {"sqs:SendMessage"}}


def test_only_the_sending_functions_may_read_the_kisi_key() -> None:
    readers = {module for module in FUNCTIONS if grants(module, "secretsmanager")}
    assert readers == {"api_call", "retry_worker"}
    for module in readers:
        assert grants(module, "secretsmanager") == SENDER_SECRETS


@pytest.mark.parametrize("service", ["dynamodb", "sqs", "kms"])
def test_no_function_is_granted_an_action_its_code_never_performs(service: str) -> None:
    extra = {}
    for module in FUNCTIONS:
        for resource, actions in grants(module, service).items():
            unused = actions - NEEDS[module][service].get(resource, set())
            if unused:
                extra[f"{module} {resource}"] = sorted(unused)
    assert extra == {}


# --- the API and the queues ------------------------------------------------------------------


def test_the_api_requires_an_api_key_on_every_route() -> None:
    [(name, api)] = resources("AWS::Serverless::Api").items()
    assert api["Properties"]["Auth"]["ApiKeyRequired"] is True
    for module in FUNCTIONS:
        for event in function(module)["Properties"].get("Events", {}).values():
            if event["Type"] != "Api":
                continue
            # An Api event without RestApiId makes SAM create an implicit API without the key.
            assert event["Properties"]["RestApiId"] == {"Ref": name}
            assert event["Properties"].get("Auth", {}).get("ApiKeyRequired", True) is True


def timeout(module: str) -> float:
    props = function(module)["Properties"]
    return float(props.get("Timeout", template()["Globals"]["Function"]["Timeout"]))


def queue(logical_id: str) -> dict[str, Any]:
    return resources("AWS::SQS::Queue")[logical_id]["Properties"]


def test_retry_queue_visibility_is_six_times_the_worker_timeout() -> None:
    # AWS Lambda developer guide: an SQS event source's visibility timeout should be at least
    # six times the function's timeout, or a message is redelivered while still being handled.
    assert int(queue("RetryQueue")["VisibilityTimeout"]) >= 6 * timeout("retry_worker")


def test_redrive_allows_every_attempt_of_the_longest_policy() -> None:
    redrive = queue("RetryQueue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["RetryDLQ", "Arn"]}
    assert int(redrive["maxReceiveCount"]) >= PolicyTable.default().longest_attempts


def test_queues_keep_messages_longer_than_the_longest_deadline() -> None:
    longest = max(p.deadline_s for p in PolicyTable.default().policies.values())
    for logical_id in ("RetryQueue", "RetryDLQ"):
        assert int(queue(logical_id)["MessageRetentionPeriod"]) >= longest, logical_id
    # A message's age counts from its first enqueue, also in the DLQ (SQS developer guide).
    assert (int(queue("RetryDLQ")["MessageRetentionPeriod"])
            >= int(queue("RetryQueue")["MessageRetentionPeriod"]))


def test_api_call_timeout_covers_the_inline_limit() -> None:
    # The forwarder starts no inline attempt that could end after INLINE_LIMIT_S (it checks
    # connect + read timeout against it), so the function's Timeout only has to cover that,
    # and must stay within API Gateway's 29 s integration limit.
    literal = {k: v for k, v in environment("api_call").items() if isinstance(v, str)}
    settings = Settings.from_env(literal)
    assert settings.connect_timeout_s + settings.read_timeout_s < INLINE_LIMIT_S
    assert INLINE_LIMIT_S < timeout("api_call") <= 29


# --- environment -----------------------------------------------------------------------------


def environment(module: str) -> dict[str, Any]:
    """The variables a function gets: Globals, then its own."""
    env = dict(template()["Globals"]["Function"].get("Environment", {}).get("Variables", {}))
    env.update(function(module)["Properties"].get("Environment", {}).get("Variables", {}))
    return {name: _literal(value) for name, value in env.items()}


def _literal(value: Any) -> Any:
    return str(value) if isinstance(value, int | float | str) else value


def test_only_settings_variables_are_set() -> None:
    known = Settings.variables()
    for module in FUNCTIONS:
        unknown = {name for name in environment(module)
                   if name not in known and not name.startswith("POWERTOOLS_")}
        assert unknown == set(), module


def needed_variables(module: str) -> set[str]:
    """Variables ``Settings.need`` demands on the way from a handler to its wiring."""
    wiring_tree = ast.parse(Path(wiring.__file__).read_text())
    defs = {node.name: node for node in wiring_tree.body
            if isinstance(node, ast.FunctionDef | ast.ClassDef)}  # a class: its methods too

    def reach(name: str, seen: set[str]) -> set[str]:
        if name in seen:
            return set()
        seen.add(name)
        found: set[str] = set()
        for node in ast.walk(defs[name]):
            if not isinstance(node, ast.Call):
                continue
            if (isinstance(node.func, ast.Attribute) and node.func.attr == "need"
                    and isinstance(node.args[1], ast.Constant)):
                found.add(str(node.args[1].value))
            if isinstance(node.func, ast.Name) and node.func.id in defs:
                found |= reach(node.func.id, seen)
        return found

    handler = ast.parse((ROOT / "functions" / module / f"{module}.py").read_text())
    builders = {alias.name for node in ast.walk(handler)
                if isinstance(node, ast.ImportFrom) and node.module == "kisi_gateway.wiring"
                for alias in node.names}
    assert builders, module
    seen: set[str] = set()
    return set().union(*(reach(builder, seen) for builder in builders))


@pytest.mark.parametrize("module", FUNCTIONS)
def test_every_variable_a_function_needs_is_set(module: str) -> None:
    needed = needed_variables(module)
    assert needed  # every function needs at least its table
    env = environment(module)
    for name in needed:
        value = env.get(name)
        assert value is not None, f"{module} needs {name}"
        conditional = isinstance(value, dict) and "Fn::If" in value
        assert not conditional, f"{module} needs {name} set unconditionally"
        if name.endswith("_TABLE"):
            assert target(value) in resources("AWS::DynamoDB::Table"), name
        if name.endswith("_URL"):
            assert target(value) in resources("AWS::SQS::Queue"), name  # Ref gives the URL


def test_needed_variables_are_read_from_the_wiring() -> None:
    assert needed_variables("api_call") == {
        "KISI_API_KEY_SECRET", "BUDGET_TABLE", "GUARD_TABLE", "REQUESTS_TABLE",
        "RETRY_QUEUE_URL", "DLQ_URL", "TENANTS_TABLE", "IDENTITY_SECRET", "CREDENTIAL_KEY_ID"}
    assert needed_variables("metrics") == {"GUARD_TABLE"}
