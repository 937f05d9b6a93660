"""The guard's decisions as tables, and its cache and write discipline against a fake client."""

import logging
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import given
from hypothesis import strategies as st

from kisi_gateway.core.breaker import (
    HALF_OPEN_RETRY_S,
    Admit,
    Evidence,
    GuardRules,
    GuardState,
    Pause,
    ReleaseProbe,
    ScopeItem,
    account_scope,
    admit,
    apply_transition,
    evidence,
    next_cooldown,
    parse_scope,
    retry_after,
    route_scope,
    transition,
)
from kisi_gateway.core.outcome import Outcome, Transport, classify_status, classify_transport
from kisi_gateway.stores.guard import DynamoGuard, scope_item

IDENTITY = "id-0a1b2c3d4e5f6a7b"  # one identity's scopes
ACCOUNT = account_scope(IDENTITY)

NOW = 1_700_000_000.0
RULES = GuardRules()  # threshold 5, cooldown 60 s, cap 3600 s, cache 2 s, lease 30 s
ROUTE = route_scope(IDENTITY, "PATCH /users/{id}")
CLOSED, OPEN, HALF_OPEN = GuardState.CLOSED, GuardState.OPEN, GuardState.HALF_OPEN
TIMEOUT = classify_transport(Transport.READ_TIMEOUT)
REFUSED = classify_transport(Transport.CONNECT_ERROR)


def status(code: int) -> Outcome:
    return classify_status(code)


# -- evidence ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "outcome", "expected"),
    [
        (ACCOUNT, status(200), Evidence.GOOD),
        (ACCOUNT, status(204), Evidence.GOOD),
        (ACCOUNT, status(302), Evidence.GOOD),
        (ACCOUNT, status(400), Evidence.GOOD),  # Kisi read the key before rejecting the body
        (ACCOUNT, status(401), Evidence.BAD),
        (ACCOUNT, status(403), Evidence.GOOD),
        (ACCOUNT, status(404), Evidence.GOOD),
        (ACCOUNT, status(422), Evidence.GOOD),
        (ACCOUNT, status(429), Evidence.NEUTRAL),  # Kisi limits unauthenticated callers too
        (ACCOUNT, status(500), Evidence.NEUTRAL),
        (ACCOUNT, status(503), Evidence.NEUTRAL),
        (ACCOUNT, TIMEOUT, Evidence.NEUTRAL),
        (ACCOUNT, REFUSED, Evidence.NEUTRAL),
        (ROUTE, status(200), Evidence.GOOD),
        (ROUTE, status(204), Evidence.GOOD),
        (ROUTE, status(400), Evidence.GOOD),
        (ROUTE, status(409), Evidence.GOOD),  # the id exists
        (ROUTE, status(401), Evidence.NEUTRAL),  # the key's problem: counted on the account
        (ROUTE, status(403), Evidence.BAD),
        (ROUTE, status(404), Evidence.BAD),
        (ROUTE, status(422), Evidence.BAD),
        (ROUTE, status(429), Evidence.NEUTRAL),
        (ROUTE, status(502), Evidence.NEUTRAL),
        (ROUTE, TIMEOUT, Evidence.NEUTRAL),
    ],
)
def test_evidence_table(scope: str, outcome: Outcome, expected: Evidence) -> None:
    assert evidence(scope, outcome) is expected


# -- admission: (state, now) -> send, pause or probe ---------------------------------------------


def item(state: GuardState = CLOSED, scope: str = ACCOUNT, **fields: Any) -> ScopeItem:
    return ScopeItem(scope=scope, state=state, reason="why", **fields)


@pytest.mark.parametrize(
    ("stored", "now", "expected"),
    [
        (item(), NOW, Admit.SEND),
        (item(CLOSED, consecutive_401=4), NOW, Admit.SEND),
        (item(OPEN, until=NOW + 60), NOW, Pause(ACCOUNT, "why", 60)),
        (item(OPEN, until=NOW + 60), NOW + 59.5, Pause(ACCOUNT, "why", 1)),
        (item(OPEN, until=NOW + 60.2), NOW, Pause(ACCOUNT, "why", 61)),
        (item(OPEN, until=NOW + 60), NOW + 60, Admit.PROBE_DUE),
        (item(OPEN, until=NOW + 60), NOW + 600, Admit.PROBE_DUE),
        (item(OPEN), NOW, Admit.PROBE_DUE),  # no cooldown recorded: probe rather than stall
        (item(HALF_OPEN, until=NOW - 1, probe_until=NOW + 0.5), NOW, 1),
        (item(HALF_OPEN, until=NOW - 1, probe_until=NOW + 30), NOW, HALF_OPEN_RETRY_S),
        (item(HALF_OPEN, until=NOW - 1, probe_until=NOW), NOW, Admit.PROBE_DUE),  # lapsed
        (item(OPEN, scope=ROUTE, until=NOW + 10), NOW, Pause(ROUTE, "why", 10)),
    ],
)
def test_admission_table(stored: ScopeItem, now: float, expected: Admit | Pause | int) -> None:
    verdict = admit(stored, now)
    if isinstance(expected, int):  # a live probe lease: a short pause naming the probe
        assert isinstance(verdict, Pause)
        assert verdict.retry_after_s == expected
        assert "probe" in verdict.reason
    else:
        assert verdict == expected


# -- transitions: (state, counters, outcome) -> state after -------------------------------------


@pytest.mark.parametrize(
    ("before", "outcome", "holds_probe", "after"),
    [
        # closed account: the streak (already incremented for a 401) decides
        (item(CLOSED, consecutive_401=4), status(401), False, item(CLOSED, consecutive_401=4)),
        (item(CLOSED, consecutive_401=5), status(401), False,
         ScopeItem(ACCOUNT, OPEN, "5 consecutive 401 from Kisi: the key looks expired or revoked",
                   opened_at=NOW, until=NOW + 60, cooldown_s=60, consecutive_401=5,
                   updated_at=NOW)),
        (item(CLOSED, consecutive_401=3), status(200), False,
         item(CLOSED, consecutive_401=0, updated_at=NOW)),
        (item(CLOSED, consecutive_401=3), status(404), False,
         item(CLOSED, consecutive_401=0, updated_at=NOW)),
        (item(CLOSED), status(200), False, item(CLOSED)),  # calm: nothing to write
        (item(CLOSED, consecutive_401=3), status(503), False, item(CLOSED, consecutive_401=3)),
        (item(CLOSED, consecutive_401=3), status(429), False, item(CLOSED, consecutive_401=3)),
        (item(CLOSED, consecutive_401=3), TIMEOUT, False, item(CLOSED, consecutive_401=3)),
        # open: stragglers sent before it opened change nothing
        (item(OPEN, until=NOW + 9), status(200), False, item(OPEN, until=NOW + 9)),
        (item(OPEN, until=NOW + 9, consecutive_401=9), status(401), False,
         item(OPEN, until=NOW + 9, consecutive_401=9)),
        # half-open account: the probe's answer decides
        (item(HALF_OPEN, cooldown_s=60, consecutive_401=6, probe_until=NOW + 30), status(401),
         True,
         ScopeItem(ACCOUNT, OPEN,
                   "probe answered 401 again: the key still looks expired or revoked",
                   opened_at=NOW, until=NOW + 120, cooldown_s=120, consecutive_401=6,
                   updated_at=NOW)),
        (item(HALF_OPEN, cooldown_s=60, consecutive_401=6, probe_until=NOW + 30), status(200),
         True, ScopeItem(ACCOUNT, CLOSED, "probe answered 200: closed", updated_at=NOW)),
        (item(HALF_OPEN, cooldown_s=60, probe_until=NOW + 30), status(403), False,
         ScopeItem(ACCOUNT, CLOSED, "probe answered 403: closed", updated_at=NOW)),
        (item(HALF_OPEN, probe_until=NOW + 30), status(503), True,
         item(HALF_OPEN, probe_until=NOW, updated_at=NOW)),  # lease handed back
        (item(HALF_OPEN, probe_until=NOW + 30), status(503), False,
         item(HALF_OPEN, probe_until=NOW + 30)),  # not ours to hand back
        # routes: never opened by one answer; the probe decides half-open
        (item(CLOSED, ROUTE), status(403), False, item(CLOSED, ROUTE)),
        (item(HALF_OPEN, ROUTE, cooldown_s=300, probe_until=NOW + 30), status(404), True,
         ScopeItem(ROUTE, OPEN,
                   "probe answered 404 again: Kisi still rejects this route "
                   "(a 403 often means an id that does not exist)",
                   opened_at=NOW, until=NOW + 600, cooldown_s=600, updated_at=NOW)),
        (item(HALF_OPEN, ROUTE, cooldown_s=300, probe_until=NOW + 30), status(409), True,
         ScopeItem(ROUTE, CLOSED, "probe answered 409: closed", updated_at=NOW)),
        (item(HALF_OPEN, ROUTE, probe_until=NOW + 30), status(401), True,
         item(HALF_OPEN, ROUTE, probe_until=NOW, updated_at=NOW)),
    ],
)
def test_transition_table(
    before: ScopeItem, outcome: Outcome, holds_probe: bool, after: ScopeItem
) -> None:
    change = transition(before, outcome, RULES, holds_probe=holds_probe)
    assert (apply_transition(before, change, NOW) if change else before) == after


neutral_outcomes = st.one_of(
    st.sampled_from([status(429), TIMEOUT, REFUSED]),
    st.integers(500, 599).map(status),
)


@given(
    state=st.sampled_from(list(GuardState)),
    scope=st.sampled_from([ACCOUNT, ROUTE]),
    streak=st.integers(0, 50),
    outcome=neutral_outcomes,
    holds=st.booleans(),
)
def test_neutral_answers_never_open_or_close(
    state: GuardState, scope: str, streak: int, outcome: Outcome, holds: bool
) -> None:
    before = item(state, scope, consecutive_401=streak, probe_until=NOW + 5)
    change = transition(before, outcome, RULES, holds_probe=holds)
    assert change is None or isinstance(change, ReleaseProbe)


# -- cooldowns and Retry-After ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "expected"),
    [(None, 120), (60, 120), (120, 240), (1000, 2000), (2000, 3600), (3600, 3600),
     (7200, 7200)],  # an operator's explicit cooldown above the cap is never shortened
)
def test_cooldown_doubles_up_to_the_cap(previous: float | None, expected: float) -> None:
    assert next_cooldown(previous, RULES) == expected


@given(st.floats(1, 100_000), st.floats(1, 3600))
def test_cooldown_never_shrinks_and_never_passes_the_cap(previous: float, base: float) -> None:
    rules = GuardRules(cooldown_s=base, max_cooldown_s=3600)
    after = next_cooldown(previous, rules)
    assert previous <= after <= max(previous, 3600)


@given(st.floats(0, 1e6), st.floats(0, 1e6))
def test_retry_after_is_whole_seconds_at_least_one_never_early(until: float, now: float) -> None:
    seconds = retry_after(until, now)
    assert isinstance(seconds, int)
    assert seconds >= 1
    assert seconds >= until - now


def test_a_pause_of_zero_seconds_cannot_exist() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Pause(ACCOUNT, "why", 0)


@pytest.mark.parametrize(
    "bad",
    [
        {"consecutive_401_threshold": 0},
        {"cooldown_s": 0},
        {"probe_lease_s": -1},
        {"cooldown_s": 100, "max_cooldown_s": 50},
        {"cache_s": -0.1},
    ],
)
def test_rules_reject_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        GuardRules(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "scope"),
    [
        (IDENTITY, ACCOUNT),
        (f"{IDENTITY}|PATCH /users/{{id}}", route_scope(IDENTITY, "PATCH /users/{id}")),
        (f"{IDENTITY}|POST /locks/{{id}}/unlock", route_scope(IDENTITY, "POST /locks/{id}/unlock")),
    ],
)
def test_parse_scope(text: str, scope: str) -> None:
    assert parse_scope(text) == scope


@pytest.mark.parametrize(
    "text", ["", "account", "users", "PATCH /users/{id}", f"{IDENTITY}|", f"{IDENTITY}|GET users",
             "ID-0A1B2C3D", "id-0a1b|GET /locks"],
)
def test_parse_scope_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not an identity"):
        parse_scope(text)


def test_item_parses_every_field_and_reads_an_unknown_state_as_closed() -> None:
    raw = {
        "scope": {"S": ROUTE}, "state": {"S": "half_open"}, "reason": {"S": "alarm"},
        "opened_at": {"N": "1700000000"}, "until": {"N": "1700000060.5"},
        "cooldown_s": {"N": "60"}, "consecutive_401": {"N": "0"},
        "probe_until": {"N": "1700000090"}, "updated_at": {"N": "1700000060"},
    }
    assert scope_item(raw) == ScopeItem(
        ROUTE, HALF_OPEN, "alarm", NOW, NOW + 60.5, 60, 0, NOW + 90, NOW + 60
    )
    assert scope_item({"scope": {"S": ACCOUNT}, "state": {"S": "ajar"}}).state is CLOSED


# -- the adapter against a fake client: cache, write discipline, failing open --------------------


def raw(scope: str, state: str = "closed", **numbers: float) -> dict[str, Any]:
    row: dict[str, Any] = {"scope": {"S": scope}, "state": {"S": state}, "reason": {"S": "why"}}
    row.update({name: {"N": repr(value)} for name, value in numbers.items()})
    return row


class FakeDynamo:
    """Reads serve stored items; writes are recorded and answered with the stored item."""

    def __init__(self, *items: dict[str, Any]) -> None:
        self.items = {row["scope"]["S"]: row for row in items}
        self.reads: list[list[str]] = []
        self.writes: list[dict[str, Any]] = []
        self.error: Exception | None = None

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        if self.error:
            raise self.error
        ((table, request),) = RequestItems.items()
        scopes = [key["scope"]["S"] for key in request["Keys"]]
        self.reads.append(scopes)
        return {"Responses": {table: [self.items[s] for s in scopes if s in self.items]}}

    def update_item(self, **request: Any) -> dict[str, Any]:
        if self.error:
            raise self.error
        self.writes.append(request)
        scope = request["Key"]["scope"]["S"]
        return {"Attributes": self.items.get(scope, {"scope": {"S": scope}})}


def guard_over(fake: FakeDynamo, **kwargs: Any) -> DynamoGuard:
    return DynamoGuard(fake, "guard", **kwargs)  # type: ignore[arg-type]


UNLOCK = "POST /locks/{id}/unlock"
R_UNLOCK = route_scope(IDENTITY, UNLOCK)
R_LOCKS = route_scope(IDENTITY, "GET /locks")


def test_a_calm_closed_scope_is_read_once_per_cache_window() -> None:
    fake = FakeDynamo()
    guard = guard_over(fake, cache_s=2.0)
    assert guard.check(IDENTITY, UNLOCK, NOW) is None
    assert guard.check(IDENTITY, UNLOCK, NOW + 1.9) is None
    assert len(fake.reads) == 1
    assert guard.check(IDENTITY, UNLOCK, NOW + 2.0) is None
    assert len(fake.reads) == 2
    assert fake.reads[0] == [ACCOUNT, R_UNLOCK]  # one round trip for both scopes


def test_only_the_scopes_not_cached_are_read() -> None:
    fake = FakeDynamo()
    guard = guard_over(fake)
    guard.check(IDENTITY, UNLOCK, NOW)
    guard.check(IDENTITY, "GET /locks", NOW + 1)
    assert fake.reads == [[ACCOUNT, R_UNLOCK], [R_LOCKS]]


@pytest.mark.parametrize(
    "stored",
    [
        raw(ACCOUNT, "open", until=NOW + 60),  # re-read so the probe is elected on time
        raw(ACCOUNT, "half_open", until=NOW - 1, probe_until=NOW + 30),
        raw(ACCOUNT, "closed", consecutive_401=2),  # a storm may be underway elsewhere
    ],
)
def test_an_open_half_open_or_counting_scope_bypasses_the_cache(stored: dict[str, Any]) -> None:
    fake = FakeDynamo(stored)
    guard = guard_over(fake, cache_s=60.0)
    first = guard.check(IDENTITY, UNLOCK, NOW)
    guard.check(IDENTITY, UNLOCK, NOW + 0.5)
    assert [scopes[0] for scopes in fake.reads] == [ACCOUNT, ACCOUNT]
    if stored["state"]["S"] != "closed":
        assert isinstance(first, Pause)


def test_an_open_scope_pauses_with_retry_after_to_the_end_of_its_cooldown() -> None:
    fake = FakeDynamo(raw(R_UNLOCK, "open", until=NOW + 42.5))
    assert guard_over(fake).check(IDENTITY, UNLOCK, NOW) == Pause(R_UNLOCK, "why", 43)
    assert guard_over(fake).check(IDENTITY, "GET /locks", NOW) is None


def test_a_clock_that_goes_back_does_not_serve_the_cache() -> None:
    fake = FakeDynamo()
    guard = guard_over(fake)
    guard.check(IDENTITY, UNLOCK, NOW)
    guard.check(IDENTITY, UNLOCK, NOW - 5)
    assert len(fake.reads) == 2


@pytest.mark.parametrize(
    "outcome", [status(200), status(204), status(302), status(403), status(404), status(422),
                status(429), status(503), TIMEOUT],
)
def test_the_healthy_path_writes_nothing(outcome: Outcome) -> None:
    fake = FakeDynamo()
    guard = guard_over(fake)
    guard.check(IDENTITY, UNLOCK, NOW)
    guard.observe(IDENTITY, UNLOCK, outcome, NOW + 0.1)
    assert fake.writes == []


def test_an_answer_never_checked_writes_nothing() -> None:
    fake = FakeDynamo(raw(ACCOUNT, "closed", consecutive_401=3))
    guard_over(fake).observe(IDENTITY, UNLOCK, status(200), NOW)
    assert fake.writes == []


def test_a_success_resets_a_streak_this_lambda_has_seen() -> None:
    fake = FakeDynamo(raw(ACCOUNT, "closed", consecutive_401=3))
    guard = guard_over(fake)
    guard.check(IDENTITY, UNLOCK, NOW)
    guard.observe(IDENTITY, UNLOCK, status(200), NOW + 1)
    (write,) = fake.writes
    assert write["Key"] == {"scope": {"S": ACCOUNT}}
    assert "#consecutive_401 = :consecutive_401" in write["UpdateExpression"]
    assert write["ExpressionAttributeValues"][":consecutive_401"] == {"N": "0"}
    assert "#consecutive_401 > :zero" in write["ConditionExpression"]


def test_a_401_is_one_atomic_add_on_the_account() -> None:
    fake = FakeDynamo()
    guard_over(fake).observe(IDENTITY, UNLOCK, status(401), NOW)
    (write,) = fake.writes
    assert write["Key"] == {"scope": {"S": ACCOUNT}}
    assert "ADD #consecutive_401 :one" in write["UpdateExpression"]
    assert write["ReturnValues"] == "ALL_NEW"
    assert "ConditionExpression" not in write


@pytest.mark.parametrize(
    "error",
    [
        ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                               "Message": "slow down"}}, "BatchGetItem"),
        EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com"),
        RuntimeError("anything else"),
    ],
)
def test_check_fails_open_and_says_so(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeDynamo(raw(ACCOUNT, "open", until=NOW + 600))
    fake.error = error
    guard = guard_over(fake)
    with caplog.at_level(logging.WARNING, logger="kisi_gateway.stores.guard"):
        assert guard.check(IDENTITY, UNLOCK, NOW) is None
        guard.observe(IDENTITY, UNLOCK, status(401), NOW)  # never raises either
    assert "failing open" in caplog.text
    assert f"could not record 401 for {ACCOUNT}" in caplog.text
    fake.error = None
    assert isinstance(guard.check(IDENTITY, UNLOCK, NOW + 1), Pause)  # the failure was not cached
