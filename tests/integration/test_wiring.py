"""The composition root on moto: the Kisi key from Secrets Manager, and its rotation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from kisi_gateway.config import ConfigError, Settings
from kisi_gateway.wiring import KeyRing, build_sender, read_api_key
from tests.harness import REGION, aws_env, create_hash_table

pytestmark = pytest.mark.xdist_group("moto")


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    aws_env(monkeypatch)
    parameters.clear_caches()
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)
    parameters.clear_caches()


def settings_for(secret_arn: str, **extra: str) -> Settings:
    return Settings.from_env({"KISI_API_KEY_SECRET": secret_arn, **extra})


@pytest.mark.parametrize(
    ("stored", "key"),
    [("k-plain", "k-plain"), ("  k-padded\n", "k-padded"), ('{"api_key": "k-json"}', "k-json")],
)
def test_the_key_is_read_from_the_secret(secrets, stored: str, key: str) -> None:
    arn = secrets.create_secret(Name="kisi-key", SecretString=stored)["ARN"]
    assert read_api_key(settings_for(arn)) == key


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ("{not json sk-9f3a", "not valid JSON"),
        ('{"key": "sk-9f3a"}', "no api_key field"),
        ('{"api_key": ""} ', "no api_key field"),
    ],
)
def test_a_bad_secret_names_the_problem_without_the_value(secrets, stored, message) -> None:
    arn = secrets.create_secret(Name="kisi-key", SecretString=stored)["ARN"]
    with pytest.raises(ConfigError, match=message) as raised:
        read_api_key(settings_for(arn))
    assert "sk-9f3a" not in str(raised.value)
    assert stored.strip() not in str(raised.value)


def test_a_blank_secret_is_called_empty(secrets) -> None:
    arn = secrets.create_secret(Name="kisi-key", SecretString="   ")["ARN"]
    with pytest.raises(ConfigError, match=r"^the Kisi key secret is empty$"):
        read_api_key(settings_for(arn))


def test_a_missing_secret_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="KISI_API_KEY_SECRET"):
        read_api_key(Settings.from_env({}))


def test_a_rotated_key_is_used_without_a_new_container(secrets, monkeypatch) -> None:
    arn = secrets.create_secret(Name="kisi-key", SecretString="k-old")["ARN"]
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    for table, key in (("budget", "pk"), ("guard", "scope")):
        create_hash_table(dynamodb, table, key)
    sender = build_sender(settings_for(arn, BUDGET_TABLE="budget", GUARD_TABLE="guard"))
    client = sender.kisi
    assert client.headers(False)["Authorization"] == "KISI-LOGIN k-old"
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"api_key": "k-new"}))
    assert client.headers(False)["Authorization"] == "KISI-LOGIN k-old"  # cached (max_age)
    parameters.clear_caches()  # what SECRET_MAX_AGE_S does after five minutes
    assert client.headers(False)["Authorization"] == "KISI-LOGIN k-new"


def test_a_secret_that_cannot_be_read_keeps_the_last_good_key(secrets, caplog) -> None:
    arn = secrets.create_secret(Name="kisi-key", SecretString="k-good")["ARN"]
    keys = KeyRing(settings_for(arn))
    secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    parameters.clear_caches()
    assert keys.current() == "k-good"
    assert "could not re-read the Kisi key" in caplog.text
    assert "k-good" not in caplog.text
