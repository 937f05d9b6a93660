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
from kisi_gateway.stores.ports import SecretUnavailableError
from kisi_gateway.stores.secrets import SecretFormatError, ServiceKeys, read_api_key
from kisi_gateway.wiring import build_pipeline
from tests.harness import REGION, aws_env

pytestmark = pytest.mark.xdist_group("moto")


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    aws_env(monkeypatch)
    parameters.clear_caches()
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)
    parameters.clear_caches()


@pytest.mark.parametrize(
    ("stored", "key"),
    [("k-plain", "k-plain"), ("  k-padded\n", "k-padded"), ('{"api_key": "k-json"}', "k-json")],
)
def test_the_key_is_read_from_the_secret(secrets, stored: str, key: str) -> None:
    arn = secrets.create_secret(Name="kisi-key", SecretString=stored)["ARN"]
    assert read_api_key(arn) == key


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
    with pytest.raises(SecretFormatError, match=message) as raised:
        read_api_key(arn)
    assert "sk-9f3a" not in str(raised.value)
    assert stored.strip() not in str(raised.value)


def test_a_blank_secret_is_called_empty(secrets) -> None:
    arn = secrets.create_secret(Name="kisi-key", SecretString="   ")["ARN"]
    with pytest.raises(SecretFormatError, match=r"^the Kisi key secret is empty$"):
        read_api_key(arn)


def test_a_missing_secret_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="KISI_API_KEY_SECRET"):
        build_pipeline(Settings.from_env({
            "TENANTS_TABLE": "t", "BUDGET_TABLE": "b", "GUARD_TABLE": "g",
            "REQUESTS_TABLE": "r", "RETRY_QUEUE_URL": "https://sqs.example/q",
            "DLQ_URL": "https://sqs.example/d",
        }), aws=lambda service: None, key=b"k" * 16)


def test_a_rotated_key_is_used_without_a_new_container(secrets) -> None:
    arn = secrets.create_secret(Name="kisi-key", SecretString="k-old")["ARN"]
    keys = ServiceKeys()
    assert keys.current(arn) == "k-old"
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"api_key": "k-new"}))
    assert keys.current(arn) == "k-old"  # cached (max_age)
    parameters.clear_caches()  # what SECRET_MAX_AGE_S does after five minutes
    assert keys.current(arn) == "k-new"


def test_a_paused_key_is_read_again_at_once_but_not_more_than_every_few_seconds(
    secrets,
) -> None:
    arn = secrets.create_secret(Name="kisi-key", SecretString="k-old")["ARN"]
    keys = ServiceKeys()
    assert keys.current(arn) == "k-old"
    secrets.put_secret_value(SecretId=arn, SecretString="k-new")
    assert keys.refresh(arn, now=100.0)  # past the cache: the new key, at once
    assert keys.current(arn) == "k-new"
    secrets.put_secret_value(SecretId=arn, SecretString="k-newer")
    assert not keys.refresh(arn, now=102.0)  # a second forced read waits a few seconds
    assert keys.refresh(arn, now=105.0)
    assert keys.current(arn) == "k-newer"


def test_a_secret_that_cannot_be_read_keeps_the_last_good_key(secrets, caplog) -> None:
    arn = secrets.create_secret(Name="kisi-key", SecretString="k-good")["ARN"]
    keys = ServiceKeys()
    assert keys.current(arn) == "k-good"
    secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    parameters.clear_caches()
    assert keys.current(arn) == "k-good"
    assert "could not re-read a Kisi key" in caplog.text
    assert "k-good" not in caplog.text


def test_a_secret_never_read_is_a_store_failure_naming_no_value(secrets) -> None:
    arn = secrets.create_secret(Name="kisi-key", SecretString="   ")["ARN"]
    with pytest.raises(SecretUnavailableError, match="empty") as raised:
        ServiceKeys().current(arn)
    assert "k-" not in str(raised.value)
