"""The Kisi client: headers, origin, no redirects, typed results (fake session)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest
import requests

from kisi_gateway.core.identity import Credential
from kisi_gateway.core.outcome import OutcomeClass, Transport
from kisi_gateway.pipeline.kisi_http import (
    KisiCall,
    KisiClient,
    KisiResponse,
    OriginError,
    Timeouts,
    TransportFailure,
)


@dataclass
class FakeSession:
    """Records each request and answers from a script (a response or an exception)."""

    script: list[object]
    calls: list[dict[str, object]] = field(default_factory=list)

    def request(self, method: str, url: str, *, params: Sequence[tuple[str, str]],
                data: bytes | None, headers: Mapping[str, str], timeout: tuple[float, float],
                allow_redirects: bool, stream: bool) -> requests.Response:
        self.calls.append({"method": method, "url": url, "params": params, "data": data,
                           "headers": dict(headers), "timeout": timeout,
                           "allow_redirects": allow_redirects, "stream": stream})
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, requests.Response)
        return item


def response(status: int, body: bytes = b"", headers: dict[str, str] | None = None):
    result = requests.Response()
    result.status_code = status
    result._content = body
    result._content_consumed = True  # iter_content serves _content, as after a real read
    result.headers.update(headers or {})
    return result


KEY = Credential("KISI-LOGIN", "s3cret")


def client(session: FakeSession, **kwargs) -> KisiClient:
    return KisiClient("https://api.kisi.io/", session=session, timeouts=Timeouts(1.0, 2.0),
                      **kwargs)


def test_sends_kisi_headers_and_never_follows_redirects() -> None:
    session = FakeSession([response(200, b"[]", {"X-Collection-Range": "0-9/15"})])
    result = client(session, integration_identifier="acme", integration_contact="ops@acme.test"
                    ).send(KisiCall("GET", "/locks", query=[("limit", "10"), ("offset", "0")],
                                    credential=KEY))
    call = session.calls[0]
    assert call["url"] == "https://api.kisi.io/locks"
    assert call["params"] == [("limit", "10"), ("offset", "0")]
    assert call["allow_redirects"] is False
    assert call["stream"] is True  # read with a cap, never whole into memory first
    assert call["timeout"] == (1.0, 2.0)
    assert call["headers"] == {
        "Authorization": "KISI-LOGIN s3cret",
        "Accept": "application/json",
        "User-Agent": "kisi-gateway/0.1",
        "X-Kisi-Integration-Identifier": "acme",
        "X-Kisi-Integration-Contact": "ops@acme.test",
    }
    assert result.outcome.cls is OutcomeClass.SUCCESS
    assert result.headers["x-collection-range"] == "0-9/15"


def test_json_body_is_sent_with_content_type() -> None:
    session = FakeSession([response(204)])
    client(session).send(KisiCall("POST", "/locks/1/unlock", body=b"{}"))
    assert session.calls[0]["data"] == b"{}"
    assert session.calls[0]["headers"]["Content-Type"] == "application/json"


@pytest.mark.parametrize("path", ["//evil.example/x", "http://evil.example/x", "locks", "@evil"])
def test_refuses_paths_that_leave_the_origin(path: str) -> None:
    session = FakeSession([])
    with pytest.raises(OriginError):
        client(session).send(KisiCall("GET", path))
    assert session.calls == []


def test_origin_check_for_location_rewriting() -> None:
    kisi = client(FakeSession([]))
    assert kisi.is_own_origin("https://API.kisi.io/locks/2")
    assert not kisi.is_own_origin("https://evil.example/locks/2")
    assert not kisi.is_own_origin("http://api.kisi.io/locks/2")


def test_redirect_is_returned_not_followed() -> None:
    session = FakeSession([response(302, b"", {"Location": "https://evil.example/"})])
    result = client(session).send(KisiCall("GET", "/locks"))
    assert result.outcome.cls is OutcomeClass.REDIRECT
    assert len(session.calls) == 1


@pytest.mark.parametrize(
    ("exc", "kind", "sent"),
    [
        (requests.exceptions.ConnectTimeout(), Transport.CONNECT_TIMEOUT, False),
        (requests.exceptions.ReadTimeout(), Transport.READ_TIMEOUT, True),
        (requests.exceptions.ChunkedEncodingError(), Transport.INVALID_RESPONSE, True),
        (requests.exceptions.ConnectionError("aborted"), Transport.CONNECTION_RESET, True),
    ],
)
def test_transport_failures_are_typed(exc: Exception, kind: Transport, sent: bool) -> None:
    result = client(FakeSession([exc])).send(KisiCall("GET", "/locks"))
    assert isinstance(result, TransportFailure)
    assert result.kind is kind
    assert result.outcome.sent is sent
    assert "s3cret" not in result.detail


def test_the_credential_is_not_in_repr() -> None:
    assert "s3cret" not in repr(KisiCall("GET", "/locks", credential=KEY))
    assert "s3cret" not in repr(KEY)


def test_base_url_must_be_absolute() -> None:
    with pytest.raises(OriginError):
        KisiClient("api.kisi.io")


def test_a_call_without_a_credential_sends_no_authorization() -> None:
    session = FakeSession([response(200)])
    client(session).send(KisiCall("POST", "/logins", body=b"{}"))
    assert "Authorization" not in session.calls[0]["headers"]


@pytest.mark.parametrize(
    "scheme", ["KISI-LOGIN", "Bearer", "KISI-ACCESS-KEY", "KISI-GROUP-LINK", "KISI-SERVICE"]
)
def test_each_call_sends_exactly_its_own_credential(scheme: str) -> None:
    session = FakeSession([response(200)])
    client(session).send(KisiCall("GET", "/locks", credential=Credential(scheme, "abc")))
    assert session.calls[0]["headers"]["Authorization"] == f"{scheme} abc"


def test_an_attempt_that_must_end_soon_gets_short_timeouts() -> None:
    session = FakeSession([response(200)])
    client(session).send(KisiCall("GET", "/locks", within_s=1.0))
    assert session.calls[0]["timeout"] == (0.5, 0.5)


@pytest.mark.parametrize(
    ("body", "declared", "too_large"),
    [
        (b"x" * 1000, None, False),  # at the cap: whole
        (b"x" * 1001, None, True),  # one byte over, found while reading
        (b"", "5000000", True),  # declared too large: not read at all
    ],
)
def test_an_answer_over_the_cap_is_never_cut_silently(
    body: bytes, declared: str | None, too_large: bool
) -> None:
    headers = {"Content-Length": declared} if declared else {}
    session = FakeSession([response(200, body, headers)])
    result = client(session, max_answer_bytes=1000).send(KisiCall("GET", "/locks"))
    assert isinstance(result, KisiResponse)
    assert result.too_large is too_large
    assert result.body == (b"" if too_large else body)
