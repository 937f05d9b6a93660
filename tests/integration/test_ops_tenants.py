"""Tenants and callers added and removed with ``python -m ops`` (moto), then used by the gateway.

One stack serves two Kisi organizations: a caller of each acts with its own tenant's service
login, and neither one's revoked key pauses the other.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from kisi_gateway.core.identity import CallerMode
from kisi_gateway.pipeline.kisi_http import KisiClient, Timeouts
from kisi_gateway.pipeline.telemetry import Telemetry
from kisi_gateway.stores.directory import DynamoDirectory
from kisi_gateway.stores.secrets import key_from_secret
from kisi_gateway.wiring import build_pipeline
from kisi_sim import DEMO_KEY, SimConfig, key_fingerprint
from ops import cli, tenants
from ops.stack import StackError, StackRefs, from_local, write_local
from tests.harness import IDENTITY_KEY, REGION, Gateway, gateway

ACME_KEY = "acme-service-key"
GLOBEX_KEY = "globex-service-key"


@pytest.fixture
def gw(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    config = SimConfig(keys={DEMO_KEY: 1, ACME_KEY: 7, GLOBEX_KEY: 9})
    with gateway(monkeypatch, sim_config=config) as running:
        yield running


@pytest.fixture
def refs(gw: Gateway) -> StackRefs:
    apigateway = boto3.client("apigateway", region_name=REGION)
    plan = apigateway.create_usage_plan(name="kgw-plan")["id"]
    return StackRefs("kgw", {"TenantsTableName": gw.names["tenants"], "UsagePlanId": plan},
                     region=REGION)


def ops(refs: StackRefs, *argv: str, stdin: str = "") -> dict[str, Any]:
    """One operator command, its printed JSON parsed."""
    printed: list[str] = []
    args = cli.parser().parse_args(["--stack", refs.name, *argv])
    tenants.run(args, refs, lambda service: boto3.client(service, region_name=REGION),
                stdin=io.StringIO(stdin), out=printed.append)
    result: dict[str, Any] = json.loads(printed[0])
    return result


def read_secret(secret_id: str, refresh: bool) -> str:
    """What the Lambdas read: the secret's text from (moto's) Secrets Manager."""
    text: str = boto3.client("secretsmanager", region_name=REGION).get_secret_value(
        SecretId=secret_id)["SecretString"]
    return text


def lambda_reading_secrets(gw: Gateway) -> Any:
    """A forwarder that reads tenants' keys from Secrets Manager, as the Lambdas do (the
    harness's own answers the demo key for any secret)."""
    clients = {"dynamodb": gw.dynamodb, "sqs": gw.sqs, "kms": gw.kms}
    return build_pipeline(
        gw.settings, aws=clients.__getitem__,
        kisi=lambda: KisiClient(gw.kisi_url, timeouts=Timeouts(1.0, 2.0)),
        clock=gw.clock, rng=gw.rng.random, telemetry=Telemetry(gw.sink),
        secrets=lambda secret_id, refresh: (
            DEMO_KEY if secret_id == gw.settings.kisi_api_key_secret
            else read_secret(secret_id, refresh)),
        key=IDENTITY_KEY,
    ).forwarder


def credentials_sent(gw: Gateway, path: str) -> list[str | None]:
    return [e["credential"] for e in gw.sim.stats()["requests"] if e["path"] == path]


def test_a_tenant_and_its_caller_are_one_command_each(gw: Gateway, refs: StackRefs) -> None:
    added = ops(refs, "tenant", "add", "acme", stdin=f"{ACME_KEY}\n")
    assert added == {"tenant": "acme", "secret": "kgw/tenants/acme", "result": "added"}
    assert key_from_secret(read_secret("kgw/tenants/acme", False)) == ACME_KEY

    caller = ops(refs, "caller", "add", "--tenant", "acme", "--mode", "client")
    plan_keys = boto3.client("apigateway", region_name=REGION).get_usage_plan_keys(
        usagePlanId=refs.outputs["UsagePlanId"])["items"]
    assert [k["id"] for k in plan_keys] == [caller["api_key_id"]]
    assert caller["x-api-key"]
    assert caller["mode"] == "client"
    stored = DynamoDirectory(gw.dynamodb, gw.names["tenants"]).caller(caller["api_key_id"])
    assert stored is not None
    assert (stored.tenant, stored.mode) == ("acme", CallerMode.CLIENT)

    listing = ops(refs, "tenant", "list")
    assert listing == {"tenants": [{"tenant": "acme", "callers": [
        {"api_key_id": caller["api_key_id"], "mode": "client"}]}]}
    assert ACME_KEY not in json.dumps(listing)


def test_each_tenants_callers_act_with_its_own_service_login(
        gw: Gateway, refs: StackRefs) -> None:
    ops(refs, "tenant", "add", "acme", stdin=ACME_KEY)
    ops(refs, "tenant", "add", "globex", stdin=json.dumps({"api_key": GLOBEX_KEY}))
    acme = ops(refs, "caller", "add", "--tenant", "acme")["api_key_id"]
    globex = ops(refs, "caller", "add", "--tenant", "globex")["api_key_id"]
    forwarder = lambda_reading_secrets(gw)
    gw.forwarder = forwarder

    assert gw.call("GET", "/places", scope=acme).status == 200
    assert gw.call("GET", "/locks", scope=globex).status == 200
    assert gw.call("GET", "/groups").status == 200  # no directory entry: the default tenant
    assert credentials_sent(gw, "/places")[-1] == key_fingerprint(ACME_KEY)
    assert credentials_sent(gw, "/locks")[-1] == key_fingerprint(GLOBEX_KEY)
    assert credentials_sent(gw, "/groups")[-1] == key_fingerprint(DEMO_KEY)


def test_one_tenants_revoked_key_never_pauses_another(gw: Gateway, refs: StackRefs) -> None:
    ops(refs, "tenant", "add", "acme", stdin=ACME_KEY)
    ops(refs, "tenant", "add", "globex", stdin=GLOBEX_KEY)
    acme = ops(refs, "caller", "add", "--tenant", "acme")["api_key_id"]
    globex = ops(refs, "caller", "add", "--tenant", "globex")["api_key_id"]
    gw.forwarder = lambda_reading_secrets(gw)
    gw.sim.update_faults({"revoked_keys": [ACME_KEY]})

    for _ in range(8):  # far past the account guard's threshold
        assert gw.call("GET", "/places", scope=acme).status in {401, 503}
    assert gw.call("GET", "/places", scope=acme).status == 503  # acme's identity is paused
    assert [gw.call("GET", "/places", scope=globex).status for _ in range(5)] == [200] * 5


def test_removing_needs_the_callers_gone_first(gw: Gateway, refs: StackRefs) -> None:
    ops(refs, "tenant", "add", "acme", stdin=ACME_KEY)
    caller = ops(refs, "caller", "add", "--tenant", "acme")["api_key_id"]
    with pytest.raises(tenants.OperatorError, match="still has callers"):
        ops(refs, "tenant", "remove", "acme")
    assert ops(refs, "caller", "remove", caller) == {"api_key_id": caller, "result": "removed"}
    assert ops(refs, "tenant", "remove", "acme", "--delete-now")["result"] == "removed"
    assert ops(refs, "tenant", "list") == {"tenants": []}
    secrets = boto3.client("secretsmanager", region_name=REGION)
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.get_secret_value(SecretId="kgw/tenants/acme")
    with pytest.raises(tenants.OperatorError, match="no caller"):
        ops(refs, "caller", "remove", caller)


def test_adding_a_tenant_again_rotates_its_key(gw: Gateway, refs: StackRefs) -> None:
    ops(refs, "tenant", "add", "acme", stdin="old-key")
    assert ops(refs, "tenant", "add", "acme", stdin=ACME_KEY)["result"] == "key replaced"
    assert key_from_secret(read_secret("kgw/tenants/acme", False)) == ACME_KEY


@pytest.mark.parametrize(("argv", "stdin", "problem"), [
    (("tenant", "add", "acme"), "", "no Kisi key on stdin"),
    (("tenant", "add", "acme"), "x" * 5000, "too long"),
    (("tenant", "add", "acme"), '{"key": "x"}', "no Kisi key on stdin"),
    (("tenant", "add", "default"), "k", "KisiApiKeySecret"),
    (("tenant", "remove", "default"), "", "cannot be removed"),
    (("tenant", "remove", "nobody"), "", "no tenant"),
    (("caller", "add", "--tenant", "nobody"), "", "add it first"),
])
def test_commands_that_cannot_be_done_say_why(
        gw: Gateway, refs: StackRefs, argv: tuple[str, ...], stdin: str, problem: str) -> None:
    with pytest.raises(tenants.OperatorError, match=problem):
        ops(refs, *argv, stdin=stdin)


def test_a_bad_tenant_name_is_refused_by_the_command_line() -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--stack", "s", "tenant", "add", "Not A Name"])


def test_without_a_stack_the_command_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tenant", "list"]) == 2
    assert "--stack NAME or --local" in capsys.readouterr().err


def test_make_runs_outputs_find_the_local_stack(tmp_path: Any) -> None:
    path = tmp_path / "stack-outputs.json"
    write_local(path, stack_name="kisi-gateway", outputs={"UsagePlanId": "abc", "N": 3},
                endpoint_url="http://127.0.0.1:5000", region=REGION)
    found = from_local(path)
    assert (found.name, found.endpoint_url, found.output("UsagePlanId")) == (
        "kisi-gateway", "http://127.0.0.1:5000", "abc")
    assert found.tenant_secret_name("acme") == "kisi-gateway/tenants/acme"
    with pytest.raises(StackError, match="no output"):
        found.output("Missing")
    with pytest.raises(StackError, match="make run"):
        from_local(tmp_path / "absent.json")
