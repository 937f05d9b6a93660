"""Account safety over the in-memory pipeline: what Kisi would surely refuse stops at the
gateway. Known-bad repeats are answered from memory; undocumented paths and bodies Kisi
documents as invalid are answered locally. A scripted Kisi counts what reaches it."""

from __future__ import annotations

import json

import pytest

from tests.functional.test_pipeline_in_memory import START, World, world_with

BAD_USER = '{"user": {"name": "Ada", "email": "not-an-address"}}'
GOOD_USER = '{"user": {"name": "Ada", "email": "ada@example.com"}}'
REPLAYED = "X-Kisi-Gateway-Replayed"


@pytest.fixture
def world() -> World:
    return world_with({})


def sent(world: World, method: str, path: str) -> int:
    return sum(1 for _, m, p in world.kisi.sent if (m, p) == (method, path))


def prevented(world: World, reason: str) -> float:
    return world.gw.sink.total("PreventedByReason", Reason=reason)


# -- known-bad repeats -----------------------------------------------------------------------


def test_the_same_422_create_sent_50_times_reaches_kisi_once(world: World) -> None:
    world.kisi.answer(422)
    replies = [world.call("POST", "/users", body=BAD_USER) for _ in range(50)]
    assert sent(world, "POST", "/users") <= 2
    assert {r.status for r in replies} == {422}
    assert REPLAYED not in replies[0].headers
    assert all(r.headers[REPLAYED] == "known-bad" for r in replies[1:])
    assert replies[1].body == replies[0].body  # Kisi's own answer, byte for byte
    assert prevented(world, "known_bad") == 49
    assert world.gw.sink.total("Prevented") == 49


def test_a_corrected_create_goes_through_at_once_and_clears_the_path(world: World) -> None:
    world.kisi.answer(422)
    world.call("POST", "/users", body=BAD_USER)
    fixed = world.call("POST", "/users", body=GOOD_USER)
    assert fixed.status == 200
    assert REPLAYED not in fixed.headers
    # The successful write on /users forgot the refusal: the old body reaches Kisi again.
    world.kisi.answer(422)
    again = world.call("POST", "/users", body=BAD_USER)
    assert REPLAYED not in again.headers
    assert sent(world, "POST", "/users") == 3


def test_another_identitys_identical_request_is_not_affected(world: World) -> None:
    world.kisi.answer(403)
    world.call("POST", "/locks/9/unlock")
    mine = world.call("POST", "/locks/9/unlock")
    theirs = world.call("POST", "/locks/9/unlock", authorization="KISI-LOGIN someone-else")
    assert mine.headers.get(REPLAYED) == "known-bad"
    assert mine.status == 403
    assert theirs.status == 200
    assert REPLAYED not in theirs.headers
    assert sent(world, "POST", "/locks/9/unlock") == 2


def test_the_memory_ends_with_its_window(world: World) -> None:
    world.kisi.answer(404)
    world.call("GET", "/locks/404")
    world.clock.advance(59)
    assert world.call("GET", "/locks/404").headers.get(REPLAYED) == "known-bad"
    world.clock.advance(1)
    later = world.call("GET", "/locks/404")
    assert later.status == 200
    assert REPLAYED not in later.headers
    assert sent(world, "GET", "/locks/404") == 2


@pytest.mark.parametrize("status", [401, 429, 500, 405])
def test_answers_that_are_not_final_verdicts_are_not_remembered(world: World,
                                                                 status: int) -> None:
    world.kisi.answer(status)
    world.call("GET", "/locks/1", prefer="respond-async")
    world.call("GET", "/locks/1")
    assert sent(world, "GET", "/locks/1") == 2


def test_a_window_of_zero_turns_the_memory_off() -> None:
    world = world_with({"KNOWN_BAD_WINDOW_S": "0"})
    world.kisi.answer(422, 422)
    world.call("POST", "/users", body=BAD_USER)
    world.call("POST", "/users", body=BAD_USER)
    assert sent(world, "POST", "/users") == 2


# -- preflight from Kisi's documented routes ---------------------------------------------------


@pytest.mark.parametrize("path", ["/zq0001x", "/locks/1/explode", "/users/1/flags", "/kisi"])
def test_a_path_kisi_does_not_document_never_reaches_kisi(world: World, path: str) -> None:
    reply = world.call("GET", path)
    assert reply.status == 404
    assert reply.json() == {"error": "Kisi documents no route for this path; it was not sent",
                            "code": "9e0441"}
    assert world.kisi.sent == []
    assert prevented(world, "undocumented_path") == 1


def test_a_method_kisi_does_not_document_is_answered_405(world: World) -> None:
    reply = world.call("DELETE", "/locks/1/unlock")
    assert reply.status == 405
    assert reply.headers["Allow"] == "POST"
    assert world.kisi.sent == []


def test_put_on_a_documented_patch_path_passes_as_kisis_own_client_sends_it(
        world: World) -> None:
    reply = world.call("PUT", "/users/5", body='{"user": {"name": "Ada"}}')
    assert reply.status == 200
    assert sent(world, "PUT", "/users/5") == 1


@pytest.mark.parametrize(("body", "errors"), [
    ('{"group": {}}', {"name": ["can't be blank"]}),
    (None, {"group": ["can't be blank"]}),
    ('{"group": {"name": 5}}', {"name": ["must be a string"]}),
])
def test_a_body_kisi_would_surely_reject_gets_kisis_422(world: World, body: str | None,
                                                        errors: dict[str, list[str]]) -> None:
    reply = world.call("POST", "/groups", body=body)
    assert reply.status == 422
    assert reply.json() == {"errors": errors}
    assert world.kisi.sent == []
    assert prevented(world, "invalid_body") == 1


def test_a_deployment_extends_and_relaxes_the_table() -> None:
    overrides = {"extra_routes": ["GET /beta_things/{id}"],
                 "pass_unknown": ["POST /locks/{id}/hold"],
                 "skip_body_checks": ["POST /groups"]}
    world = world_with({"KISI_API_OVERRIDES": json.dumps(overrides)})
    assert world.call("GET", "/beta_things/3").status == 200
    assert world.call("POST", "/locks/3/hold").status == 200
    assert world.call("POST", "/groups", body='{"group": {}}').status == 200
    assert len(world.kisi.sent) == 3
    assert world.gw.sink.total("UndocumentedPassed", Route="POST /locks/{id}/hold") == 1
    assert world.gw.sink.total("Prevented") == 0


# -- a bounded send gate -----------------------------------------------------------------------

USER_BUCKET = "user-1"
A_DAY, A_WEEK = "86400", "604800"


@pytest.mark.parametrize("retry_after", [A_DAY, A_WEEK])
def test_a_retry_after_past_the_deadline_ends_the_request_saying_kisi_asked(
        world: World, retry_after: str) -> None:
    world.kisi.answer(429, **{"retry-after": retry_after})
    first = world.call("POST", "/locks/1/unlock")
    # The unlock that got the 429 ends at once with Kisi's own answer and its Retry-After.
    assert first.status == 429
    assert first.headers["Retry-After"] == retry_after
    assert world.gw.sink.total("FinishedByReason", Status="expired",
                               Reason="retry_after_past_deadline") == 1
    # The gate closes for at most MAX_GATE_S (900 s), and hitting the cap is counted.
    assert world.gw.budget.state(USER_BUCKET).gate_until == pytest.approx(START + 900)
    assert world.gw.sink.total("GateCapped") == 1
    # Another unlock meanwhile: never sent, and never "Kisi could not be reached" (9e0508).
    second = world.call("POST", "/locks/2/unlock")
    assert second.status == 504
    assert second.json()["code"] == "9e0509"
    assert "Kisi asked to wait" in second.json()["error"]
    assert len(world.kisi.sent) == 1
    # Once the capped gate has passed, traffic flows again.
    world.clock.advance(900)
    assert world.call("POST", "/locks/3/unlock").status == 200


def test_a_read_with_a_long_deadline_waits_for_the_capped_gate(world: World) -> None:
    world.kisi.answer(429, **{"retry-after": A_DAY})
    world.call("POST", "/locks/1/unlock")
    queued = world.call("GET", "/locks", prefer="respond-async")
    assert queued.status == 202
    assert queued.json()["next_attempt_at"] <= START + 900 + 1


def test_a_retry_after_that_cannot_be_parsed_is_ignored(world: World) -> None:
    world.kisi.answer(429, **{"retry-after": "whenever you like"})
    reply = world.call("GET", "/locks/1")
    assert reply.status == 200  # retried after the backoff's own delay, inline
    assert world.gw.budget.state(USER_BUCKET).gate_until <= world.clock.now()
    assert world.gw.sink.total("GateCapped") == 0
    assert len(world.kisi.sent) == 2
