"""Kisi error bodies are read defensively; the gateway's own errors look like Kisi's."""

import pytest

from kisi_gateway.core.errors import (
    UNKNOWN_CODE,
    GatewayError,
    GatewayErrorCode,
    parse_kisi_error,
)


@pytest.mark.parametrize(
    ("body", "status", "message", "code"),
    [
        (b'{"error": "Wrong email address or password.", "code": "afc516"}', 401,
         "Wrong email address or password.", "afc516"),
        (b'{"errors": {"email": ["can\'t be blank or invalid"]}}', 422,
         "email can't be blank or invalid", UNKNOWN_CODE),
        (b'{"error": "invalid_grant", "error_description": "expired"}', 400,
         "invalid_grant", UNKNOWN_CODE),
        (b"", 503, "HTTP 503", UNKNOWN_CODE),
        (None, None, "no body", UNKNOWN_CODE),
        (b"Too Many Requests", 429, "Too Many Requests", UNKNOWN_CODE),
        (b"<html>502 Bad Gateway</html>", 502, "<html>502 Bad Gateway</html>", UNKNOWN_CODE),
        (b"[1, 2]", 400, "[1, 2]", UNKNOWN_CODE),
        (b'{"error": 5, "code": 7}', 400, '{"error": 5, "code": 7}', UNKNOWN_CODE),
        (b"\xff\xfe not utf-8", 500, "\ufffd\ufffd not utf-8", UNKNOWN_CODE),
        ('{"error": "text input", "code": "fad110"}', 409, "text input", "fad110"),
    ],
)
def test_parse_kisi_error(body, status, message, code) -> None:
    error = parse_kisi_error(body, status)
    assert (error.message, error.code) == (message, code)


def test_field_errors_and_oauth_description_are_kept() -> None:
    error = parse_kisi_error(b'{"errors": {"name": ["too short", "taken"], "x": "bad"}}')
    assert error.field_errors == {"name": ["too short", "taken"], "x": ["bad"]}
    oauth = parse_kisi_error(b'{"error": "invalid_client", "error_description": "nope"}')
    assert oauth.description == "nope"


def test_long_messages_are_truncated() -> None:
    assert len(parse_kisi_error(b"x" * 10_000, 500).message) == 500


def test_gateway_error_body_is_kisi_shaped() -> None:
    error = GatewayError(400, GatewayErrorCode.INVALID_JSON, "body is not valid JSON")
    assert error.body() == {"error": "body is not valid JSON", "code": "9e0400"}


def test_gateway_codes_are_six_hex_like_characters_and_unique() -> None:
    codes = [c.value for c in GatewayErrorCode]
    assert len(set(codes)) == len(codes)
    assert all(len(c) == 6 and all(ch in "0123456789abcdef" for ch in c) for c in codes)
