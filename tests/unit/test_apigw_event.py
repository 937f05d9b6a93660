"""The local API Gateway builds the REST API (payload 1.0) proxy event as API Gateway does.

Each table row is one behaviour of a deployed REST API, from AWS's input format documentation
and from events captured on live REST APIs (see local/apigw_event.py).
"""

from __future__ import annotations

import doctest
from datetime import UTC, datetime

import pytest
from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventModel

import local.apigw_event
from local.apigw_event import HttpRequest, event_headers, event_query, match_route, proxy_event
from local.stack import ApiRoute

PROXY = ApiRoute("Api", "abc123", "Prod", "/kisi/{proxy+}", "ANY", "Fn", True)
RECORD = ApiRoute("Api", "abc123", "Prod", "/requests/{id}", "GET", "Fn", True)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(local.apigw_event).failed == 0


@pytest.mark.parametrize(
    ("query", "single", "multi"),
    [
        # a space sent as "+" arrives as a space; an encoded plus as a plus
        ("q=a+b", {"q": "a b"}, {"q": ["a b"]}),
        ("q=a%2Bb", {"q": "a+b"}, {"q": ["a+b"]}),
        ("q=a%20b", {"q": "a b"}, {"q": ["a b"]}),
        ("email=ada%2Btest%40example.com", {"email": "ada+test@example.com"},
         {"email": ["ada+test@example.com"]}),
        # repeated names: the single map keeps the last value, the multi map all, in order
        ("ids[]=1&ids[]=2", {"ids[]": "2"}, {"ids[]": ["1", "2"]}),
        ("ids%5B%5D=1&ids%5B%5D=2", {"ids[]": "2"}, {"ids[]": ["1", "2"]}),
        ("a=1&b=2&a=3", {"a": "3", "b": "2"}, {"a": ["1", "3"], "b": ["2"]}),
        # empty values and bare names
        ("empty=", {"empty": ""}, {"empty": [""]}),
        ("flag", {"flag": ""}, {"flag": [""]}),
        # names are decoded too; "=" inside a value stays
        ("a+b=1", {"a b": "1"}, {"a b": ["1"]}),
        ("f=x=y", {"f": "x=y"}, {"f": ["x=y"]}),
        ("redirect=https%3A%2F%2Fexample.com%2Fa%2Fb", {"redirect": "https://example.com/a/b"},
         {"redirect": ["https://example.com/a/b"]}),
        # stray separators are ignored; nothing at all is null, not {}
        ("&&a=1&", {"a": "1"}, {"a": ["1"]}),
        ("", None, None),
        ("&", None, None),
    ],
)
def test_query_string_parameters(query: str, single: dict | None, multi: dict | None) -> None:
    assert event_query(query) == (single, multi)


def headers_of(pairs, source_ip="203.0.113.9", local_port=0, trace_id="Root=1-x"):
    return event_headers(pairs, source_ip=source_ip, local_port=local_port, trace_id=trace_id)


@pytest.mark.parametrize(
    ("sent", "single", "multi"),
    [
        # names keep the client's case (HTTP/2 clients send lowercase, HTTP/1.1 ones not)
        ([("content-type", "a/b")], {"content-type": "a/b"}, {"content-type": ["a/b"]}),
        ([("Content-Type", "a/b")], {"Content-Type": "a/b"}, {"Content-Type": ["a/b"]}),
        ([("headerName", "v")], {"headerName": "v"}, {"headerName": ["v"]}),
        # ... except the ones API Gateway writes itself
        ([("host", "h")], {"Host": "h"}, {"Host": ["h"]}),
        ([("user-agent", "curl/8")], {"User-Agent": "curl/8"}, {"User-Agent": ["curl/8"]}),
        ([("authorization", "Bearer t")], {"Authorization": "Bearer t"},
         {"Authorization": ["Bearer t"]}),
        # a repeated header: the last value, and all values in order
        ([("x-probe", "first"), ("x-probe", "second")], {"x-probe": "second"},
         {"x-probe": ["first", "second"]}),
        # framing and hop-by-hop headers are not passed
        ([("Content-Length", "3"), ("Connection", "keep-alive"),
          ("Transfer-Encoding", "chunked"), ("Keep-Alive", "5"), ("accept", "*/*")],
         {"accept": "*/*"}, {"accept": ["*/*"]}),
    ],
)
def test_request_headers(sent, single, multi) -> None:
    got_single, got_multi = headers_of(sent)
    own = {"X-Amzn-Trace-Id", "X-Forwarded-For", "X-Forwarded-Proto"}
    assert {k: v for k, v in got_single.items() if k not in own} == single
    assert {k: v for k, v in got_multi.items() if k not in own} == multi


@pytest.mark.parametrize(
    ("sent", "forwarded_for"),
    [
        ([], "203.0.113.9"),
        ([("X-Forwarded-For", "198.51.100.1")], "198.51.100.1, 203.0.113.9"),
        ([("x-forwarded-for", "198.51.100.1, 192.0.2.7")],
         "198.51.100.1, 192.0.2.7, 203.0.113.9"),
    ],
)
def test_the_client_address_is_appended_to_x_forwarded_for(sent, forwarded_for) -> None:
    single, multi = headers_of(sent)
    assert single["X-Forwarded-For"] == forwarded_for
    assert multi["X-Forwarded-For"] == [forwarded_for]


@pytest.mark.parametrize(
    ("sent", "local_port", "expected"),
    [
        ([], 3000, {"X-Forwarded-Port": "3000", "X-Forwarded-Proto": "http",
                    "X-Amzn-Trace-Id": "Root=1-x"}),
        # a client's own claims about the connection are replaced; its trace is continued
        ([("X-Forwarded-Port", "1"), ("x-forwarded-proto", "gopher"),
          ("x-amzn-trace-id", "Root=1-mine")], 3000,
         {"X-Forwarded-Port": "3000", "X-Forwarded-Proto": "http",
          "X-Amzn-Trace-Id": "Root=1-mine"}),
    ],
)
def test_connection_headers_are_api_gateways_own(sent, local_port, expected) -> None:
    single, _ = headers_of(sent, local_port=local_port)
    assert {k: single[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("route", "path", "parameters"),
    [
        # path parameters keep the client's percent-encoding, as a REST API passes them
        (PROXY, "/kisi/users/42", {"proxy": "users/42"}),
        (PROXY, "/kisi/capture/space%20value", {"proxy": "capture/space%20value"}),
        (PROXY, "/kisi/a+b", {"proxy": "a+b"}),
        (PROXY, "/kisi/unicode-%CE%BB", {"proxy": "unicode-%CE%BB"}),
        # an encoded slash is not a separator: it stays inside one segment
        (PROXY, "/kisi/slash%2Fvalue", {"proxy": "slash%2Fvalue"}),
        (RECORD, "/requests/a%2Fb", {"id": "a%2Fb"}),
        (RECORD, "/requests/a%40b", {"id": "a%40b"}),
    ],
)
def test_path_parameters_stay_percent_encoded(route, path, parameters) -> None:
    found = match_route([route], "GET", path)
    assert found is not None
    assert found[1] == parameters


def test_an_encoded_slash_does_not_make_a_deeper_path() -> None:
    assert match_route([RECORD], "GET", "/requests/a%2Fb") is not None
    assert match_route([RECORD], "GET", "/requests/a/b") is None


def event_for(path: str, query: str = "", headers=()) -> dict:
    request = HttpRequest("GET", path, query, list(headers), b"", "192.0.2.1", local_port=3000)
    found = match_route([PROXY, RECORD], "GET", path)
    assert found is not None
    return proxy_event(
        request, found[0], found[1], account_id="123456789012", api_key="k" * 20,
        api_key_id="keyid", request_id="rid", now=NOW, domain_name="127.0.0.1:3000",
    )


def test_the_event_keeps_the_path_as_sent_and_validates_against_the_model() -> None:
    event = event_for(
        "/kisi/capture/space%20value", "literal=a+b&encoded=a%2Bb&repeat=one&repeat=two",
        [("accept", "*/*"), ("x-probe", "first"), ("x-probe", "second"), ("Content-Length", "0")],
    )
    APIGatewayProxyEventModel.model_validate(event)
    assert event["path"] == "/kisi/capture/space%20value"
    assert event["requestContext"]["path"] == "/Prod/kisi/capture/space%20value"
    assert event["pathParameters"] == {"proxy": "capture/space%20value"}
    assert event["queryStringParameters"] == {"literal": "a b", "encoded": "a+b", "repeat": "two"}
    assert event["multiValueQueryStringParameters"]["repeat"] == ["one", "two"]
    assert event["headers"]["x-probe"] == "second"
    assert event["multiValueHeaders"]["x-probe"] == ["first", "second"]
    assert "Content-Length" not in event["headers"]
    assert event["requestContext"]["identity"]["apiKeyId"] == "keyid"
    assert event["requestContext"]["identity"]["sourceIp"] == "192.0.2.1"


def test_user_agent_in_the_identity_whatever_case_it_was_sent_in() -> None:
    event = event_for("/kisi/locks", headers=[("user-agent", "curl/8.7.1")])
    assert event["headers"]["User-Agent"] == "curl/8.7.1"
    assert event["requestContext"]["identity"]["userAgent"] == "curl/8.7.1"
