"""Bad ``Authorization`` input, through api_call's whole path (API Gateway event -> handle ->
callers -> forwarder), against the Kisi simulator on 127.0.0.1.

Each case gets a clear, Kisi-shaped 4xx (``{"error", "code"}``), never a 500, and never
reaches Kisi: the simulator counts every request it receives, the gateway's own ``GET /login``
lookups included, and must count none. A credential check (``POST /logins``) is the one
route where a placeholder such as ``KISI-LOGIN null`` means "no credential yet": it goes to
Kisi bare, never with the service key.
"""

from __future__ import annotations

import re

import pytest

from kisi_gateway.core.errors import GatewayErrorCode
from kisi_gateway.core.identity import MAX_AUTHORIZATION
from kisi_sim import DEMO_EMAIL, DEMO_KEY, DEMO_PASSWORD, SimConfig, key_fingerprint
from tests.identity_support import answer_of, api_event, sim_world

OWN_KEY = "own-key-of-caller-a-7d1c"
SIM = SimConfig(keys={DEMO_KEY: 1, OWN_KEY: 2})
LOCKS = ("GET", "/kisi/locks")
UNLOCK = ("POST", "/kisi/locks/3/unlock")
RECORD = ("GET", "/requests/0123456789abcdef0123456789abcdef")
SIGN_IN = ("POST", "/kisi/logins")
INVALID = (400, GatewayErrorCode.INVALID_HEADER)
NO_CREDENTIAL = (401, GatewayErrorCode.CREDENTIAL_REQUIRED)

# id, (method, path), Authorization values (several: the header sent more than once),
# CALLER_CREDENTIALS, expected (status, code)
CASES = [
    ("malformed-space-in-secret", LOCKS, ["KISI-LOGIN abc def"], "allow", INVALID),
    ("malformed-control-char", LOCKS, ["KISI-LOGIN abc\x01def"], "allow", INVALID),
    ("malformed-non-ascii", UNLOCK, ["Bearer t\u00f6ken"], "allow", INVALID),
    ("oversized", LOCKS, ["KISI-LOGIN " + "a" * MAX_AUTHORIZATION], "allow", INVALID),
    ("oversized-placeholder", SIGN_IN, ["KISI-LOGIN null" + " " * MAX_AUTHORIZATION],
     "allow", INVALID),
    ("unknown-scheme-basic", LOCKS, ["Basic Zm9vOmJhcg=="], "allow", INVALID),
    ("unknown-scheme-token", UNLOCK, ["Token abc"], "allow", INVALID),
    ("unknown-scheme-on-sign-in", SIGN_IN, ["Digest abc"], "allow", INVALID),
    ("secret-without-scheme", LOCKS, [OWN_KEY], "allow", INVALID),
    ("unknown-scheme-on-record", RECORD, ["Basic Zm9vOmJhcg=="], "allow", INVALID),
    ("empty-credential-kisi-login", LOCKS, ["KISI-LOGIN"], "allow", NO_CREDENTIAL),
    ("empty-credential-bearer", UNLOCK, ["Bearer   "], "allow", NO_CREDENTIAL),
    ("kisi-login-null-off-sign-in", LOCKS, ["KISI-LOGIN null"], "allow", NO_CREDENTIAL),
    ("bare-null-off-sign-in", UNLOCK, ["null"], "allow", NO_CREDENTIAL),
    ("two-different-headers", LOCKS, [f"KISI-LOGIN {OWN_KEY}", f"KISI-LOGIN {DEMO_KEY}"],
     "allow", INVALID),
    ("two-schemes", UNLOCK, [f"KISI-LOGIN {OWN_KEY}", f"Bearer {OWN_KEY}"], "allow", INVALID),
    ("own-credential-while-forbidden", LOCKS, [f"KISI-LOGIN {OWN_KEY}"], "forbid",
     (403, GatewayErrorCode.CREDENTIALS_FORBIDDEN)),
    ("own-bearer-while-forbidden", UNLOCK, [f"Bearer {OWN_KEY}"], "forbid",
     (403, GatewayErrorCode.CREDENTIALS_FORBIDDEN)),
    ("none-while-required", LOCKS, [], "require", NO_CREDENTIAL),
    ("placeholder-while-required", UNLOCK, ["KISI-LOGIN null"], "require", NO_CREDENTIAL),
]


@pytest.mark.parametrize(("route", "values", "policy", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_authorization_gets_a_kisi_shaped_4xx_and_never_reaches_kisi(
    route: tuple[str, str], values: list[str], policy: str, expected: tuple[int, str]
) -> None:
    method, path = route
    body = {"login": {"type": "device"}, "user": {"email": DEMO_EMAIL, "password": "x"}} \
        if route == SIGN_IN else None
    event = api_event(method, path, multi_headers={"Authorization": values} if values else None,
                      body=body)
    with sim_world({"CALLER_CREDENTIALS": policy}, SIM) as world:
        response = world.handle(event)
        reached = world.kisi_requests()

    answer = answer_of(response)
    assert (response["statusCode"], answer.get("code")) == expected, answer
    assert isinstance(answer["error"], str)
    assert answer["error"]
    assert re.fullmatch(r"[0-9a-f]{6}", answer["code"])
    assert reached == 0  # not the call, not a GET /login lookup
    for value in values:  # the error names the problem, never the value sent
        secret = value.partition(" ")[2].strip()
        if len(secret) > 4:
            assert secret not in response["body"]


@pytest.mark.parametrize("placeholder", ["KISI-LOGIN null", "null", "KISI-LOGIN undefined",
                                         "Bearer None", "kisi-login NULL"])
def test_a_placeholder_on_sign_in_is_no_credential_and_never_the_service_key(
    placeholder: str,
) -> None:
    body = {"login": {"type": "device"},
            "user": {"email": DEMO_EMAIL, "password": DEMO_PASSWORD}}
    wrong = {"login": {"type": "device"}, "user": {"email": DEMO_EMAIL, "password": "wrong"}}
    with sim_world(sim_config=SIM) as world:
        signed_in = world.handle(api_event(*SIGN_IN, headers={"Authorization": placeholder},
                                           body=body))
        refused = world.handle(api_event(*SIGN_IN, headers={"Authorization": placeholder},
                                         body=wrong))
        sent = world.sim.stats()["requests"]

    assert signed_in["statusCode"] == 200, signed_in["body"]
    assert answer_of(signed_in)["secret"]
    # Kisi's own 401 for a wrong password, passed back as Kisi sent it.
    assert refused["statusCode"] == 401
    assert answer_of(refused) == {"error": "Wrong email address or password.", "code": "afc516"}
    # Both reached Kisi bare: no credential, least of all the service key; nothing else went.
    assert [(e["method"], e["path"], e["credential"]) for e in sent] == [
        ("POST", "/logins", None), ("POST", "/logins", None)]
    assert key_fingerprint(DEMO_KEY) not in {e["credential"] for e in sent}


def test_the_same_credential_sent_twice_is_one_credential() -> None:
    """Repeating one header value is not ambiguous: the call goes with that credential."""
    with sim_world(sim_config=SIM) as world:
        response = world.handle(api_event(
            *LOCKS, multi_headers={"Authorization": [f"KISI-LOGIN {OWN_KEY}"] * 2}))
        sent = world.sim.stats()["requests"]
    assert response["statusCode"] == 200, response["body"]
    assert {e["credential"] for e in sent} == {key_fingerprint(OWN_KEY)}
