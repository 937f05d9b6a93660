"""Settings: defaults, parsing, and errors that name the variable."""

import pytest

from kisi_gateway.config import ConfigError, Settings


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.kisi_base_url == "https://api.kisi.io"
    assert settings.send_rate == 5.0
    assert settings.rates() == {"POST /event_sets": 1.0, "POST /signed_upload_urls": 0.1}
    assert settings.policies.by_name("unlock").deadline_s == 30.0


def test_values_are_parsed() -> None:
    settings = Settings.from_env({
        "KISI_BASE_URL": "http://127.0.0.1:8080/",
        "SEND_RATE": "2.5",
        "ROUTE_RATES": '{"POST /event_sets": 0.5}',
        "ROUTE_POLICIES": '{"policies": {"unlock": {"deadline_s": 10}}}',
        "MAX_BODY_BYTES": "1000",
    })
    assert settings.kisi_base_url == "http://127.0.0.1:8080"
    assert settings.send_rate == 2.5
    assert settings.rates()["POST /event_sets"] == 0.5
    assert settings.policies.by_name("unlock").deadline_s == 10.0
    assert settings.max_body_bytes == 1000


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KISI_BASE_URL", "api.kisi.io"),
        ("KISI_BASE_URL", "ftp://api.kisi.io"),
        ("SEND_RATE", "fast"),
        ("SEND_RATE", "-1"),
        ("MAX_BODY_BYTES", "1.5"),
        ("ROUTE_RATES", '{"POST /event_sets": 0}'),
        ("ROUTE_RATES", '{"event_sets": 1}'),
        ("ROUTE_RATES", "[]"),
        ("ROUTE_POLICIES", '{"policies": {"unlock": {"max_attempts": -1}}}'),
        ("RETRY_QUEUE_URL", "not a url"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_wait_bounds_are_consistent() -> None:
    with pytest.raises(ConfigError, match="DEFAULT_WAIT_S"):
        Settings.from_env({"DEFAULT_WAIT_S": "30", "MAX_WAIT_S": "25"})


def test_need_names_a_missing_variable() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ConfigError, match="REQUESTS_TABLE"):
        settings.need(settings.requests_table, "REQUESTS_TABLE")
