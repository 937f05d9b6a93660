"""Which x-api-key the local API accepts: enabled keys of the stack's usage plans, looked up
when presented and remembered for a few seconds (a fake API Gateway and a fake clock)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from local.api_keys import KeyLookupError, StaticKeys, UsagePlanKeys

PLAN = "plan1"
RUNTIME_KEY = "local-dev-key"


class FakeApiGateway:
    """The three API Gateway calls the lookup makes, over plain dicts."""

    def __init__(self, page_size: int = 500) -> None:
        self.keys: dict[str, dict[str, Any]] = {}
        self.plan_keys: dict[str, set[str]] = {PLAN: set(), "plan2": set()}
        self.page_size = page_size
        self.down = False
        self.calls = 0

    def add(self, key_id: str, value: str, enabled: bool = True, plan: str | None = PLAN) -> None:
        self.keys[key_id] = {"id": key_id, "value": value, "enabled": enabled}
        if plan:
            self.plan_keys[plan].add(key_id)

    def get_api_keys(self, **request: Any) -> dict:  # boto3's camelCase keywords
        self._called()
        assert request["includeValues"]
        limit, position = request["limit"], request.get("position", "0")
        items = list(self.keys.values())
        start = int(position)
        page = {"items": items[start:start + min(limit, self.page_size)]}
        if start + self.page_size < len(items):
            page["position"] = str(start + self.page_size)
        return page

    def get_usage_plan_key(self, **request: str) -> dict:
        self._called()
        plan_id, key_id = request["usagePlanId"], request["keyId"]
        if key_id not in self.plan_keys.get(plan_id, set()):
            raise ClientError({"Error": {"Code": "NotFoundException", "Message": "no"}},
                              "GetUsagePlanKey")
        return {"id": key_id, "type": "API_KEY"}

    def _called(self) -> None:
        self.calls += 1
        if self.down:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:5000")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def aws() -> FakeApiGateway:
    return FakeApiGateway()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys(aws: FakeApiGateway, clock: Clock) -> UsagePlanKeys:
    check = UsagePlanKeys(aws, ttl_s=3.0, stale_s=60.0, clock=clock)
    check.configure([PLAN], {RUNTIME_KEY: "stackkey"})
    return check


@pytest.mark.parametrize(
    ("setup", "presented", "expected"),
    [
        ({}, RUNTIME_KEY, "stackkey"),  # the runtime's key, without asking AWS
        ({"k1": ("tenant-a-value-000000001", True, PLAN)}, "tenant-a-value-000000001", "k1"),
        ({"k1": ("tenant-a-value-000000001", False, PLAN)}, "tenant-a-value-000000001", None),
        ({"k1": ("tenant-a-value-000000001", True, None)}, "tenant-a-value-000000001", None),
        ({"k1": ("tenant-a-value-000000001", True, "plan2")}, "tenant-a-value-000000001", None),
        ({"k1": ("tenant-a-value-000000001", True, PLAN)}, "tenant-a-value-000000002", None),
        ({}, "", None),
    ],
    ids=["runtime key", "enabled in plan", "disabled", "in no plan", "in another plan",
         "unknown value", "empty"],
)
def test_which_keys_are_accepted(keys, aws, setup, presented, expected) -> None:
    for key_id, (value, enabled, plan) in setup.items():
        aws.add(key_id, value, enabled, plan)
    assert keys.key_id(presented) == expected


def test_the_runtime_key_needs_no_lookup(keys, aws) -> None:
    aws.down = True
    assert keys.key_id(RUNTIME_KEY) == "stackkey"
    assert aws.calls == 0  # nothing was asked


def test_a_key_added_at_run_time_works_once_the_cached_no_expires(keys, aws, clock) -> None:
    value = "tenant-b-value-00000000001"
    assert keys.key_id(value) is None
    aws.add("kb", value)
    clock.now += 2.9
    assert keys.key_id(value) is None  # still the remembered answer
    clock.now += 0.2
    assert keys.key_id(value) == "kb"


@pytest.mark.parametrize("change", ["disable", "delete", "remove from plan"])
def test_a_key_taken_away_stops_working_once_the_cached_yes_expires(keys, aws, clock, change):
    value = "tenant-c-value-00000000001"
    aws.add("kc", value)
    assert keys.key_id(value) == "kc"
    if change == "disable":
        aws.keys["kc"]["enabled"] = False
    elif change == "delete":
        del aws.keys["kc"]
    else:
        aws.plan_keys[PLAN].discard("kc")
    clock.now += 2.9
    assert keys.key_id(value) == "kc"
    clock.now += 0.2
    assert keys.key_id(value) is None


def test_answers_are_remembered_between_lookups(keys, aws, clock) -> None:
    aws.add("kd", "tenant-d-value-00000000001")
    for _ in range(5):
        keys.key_id("tenant-d-value-00000000001")
        keys.key_id("wrong-value-000000000000001")
    assert aws.calls == 3  # one listing and one plan check for the key, one listing for "wrong"


def test_keys_are_found_on_later_pages() -> None:
    aws = FakeApiGateway(page_size=2)
    for index in range(5):
        aws.add(f"k{index}", f"value-{index:020d}")
    check = UsagePlanKeys(aws, clock=Clock())
    check.configure([PLAN], {})
    assert check.key_id(f"value-{4:020d}") == "k4"


@pytest.mark.parametrize(
    ("remembered", "elapsed_s", "outcome"),
    [
        (True, 3.5, "ek"),  # expired, but within the stale window: the last answer
        (True, 63.5, KeyLookupError),  # too old to trust (3 s fresh + 60 s stale)
        (False, 0.0, KeyLookupError),  # never seen
    ],
)
def test_while_aws_is_down(keys, aws, clock, remembered, elapsed_s, outcome) -> None:
    value = "tenant-e-value-00000000001"
    aws.add("ek", value)
    if remembered:
        keys.key_id(value)
    aws.down = True
    clock.now += elapsed_s
    if outcome is KeyLookupError:
        with pytest.raises(KeyLookupError, match="EndpointConnectionError"):
            keys.key_id(value)
    else:
        assert keys.key_id(value) == outcome


def test_errors_never_name_the_key(keys, aws) -> None:
    aws.down = True
    with pytest.raises(KeyLookupError) as raised:
        keys.key_id("secret-tenant-value-000001")
    assert "secret-tenant-value" not in str(raised.value)


def test_configure_replaces_plans_and_forgets_answers(keys, aws, clock) -> None:
    value = "tenant-f-value-00000000001"
    aws.add("kf", value, plan="plan2")
    assert keys.key_id(value) is None
    keys.configure(["plan2"], {})
    assert keys.key_id(value) == "kf"
    assert keys.key_id(RUNTIME_KEY) is None  # no longer a static key


def test_static_keys() -> None:
    assert StaticKeys({"a": "id-a"}).key_id("a") == "id-a"
    assert StaticKeys({"a": "id-a"}).key_id("b") is None
