"""The demo's and the soak's figures, from synthetic simulator logs, replies and records.

Pure: no stack, no network. The scripts themselves (``make demo``, ``make soak``) run the
real thing; these tests pin down what their numbers mean: a double send, a late unlock, a
lost request, a 5xx of the gateway itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from kisi_gateway.pipeline.monitoring import AlarmChange, Failing, compose_notification
from scenarios.caller import Reply
from scenarios.demo import (
    Phase,
    Spread,
    alarm_transitions,
    guard_actions,
    per_second,
    plot_timeline,
    render_summary,
    reply_label,
    retry_figures,
    summarize,
    terminal_states,
)
from scenarios.figures import kisi_outcomes, outcome_class, percentile
from scenarios.soak import (
    Planned,
    Tracked,
    entry_marker,
    final_state,
    plan_requests,
    render_figures,
    soak_figures,
)

T0 = 1_700_000_000.0


def reply(status: int | None, *, code: str | None = None, sent: float = T0,
          answered: float = T0 + 0.5, location: str | None = None,
          deadline: float | None = None, attempts: int | None = 1) -> Reply:
    return Reply("test", "GET", "/kisi/x", sent, answered, status, request_id="r1",
                 location=location, code=code, deadline=deadline, attempts=attempts)


def entry(at: float, status: int, *, method: str = "GET", path: str = "/locks",
          query: str = "", body: bytes | None = None, processed: bool | None = None,
          ) -> dict[str, Any]:
    return {
        "at": at, "method": method, "path": path, "query": query, "status": status,
        "user_id": 1, "route": path,
        "body_sha256": hashlib.sha256(body).hexdigest() if body else None,
        "processed": 200 <= status < 300 if processed is None else processed,
    }


def record(status: str, attempts: list[tuple[str, int | None, int | None]], *,
           deadline: float = T0 + 600, reason: str | None = None) -> dict[str, Any]:
    return {
        "status": status, "deadline": deadline, "reason": reason, "_seen_at": T0 + 100,
        "attempts": [{"at": T0 + n, "class": cls, "status": code, "delay_s": delay}
                     for n, (cls, code, delay) in enumerate(attempts)],
    }


# --------------------------------------------------------------------------- the demo


@pytest.mark.parametrize(
    ("status", "cls"),
    [(200, "success"), (204, "success"), (302, "redirect"), (401, "client_error"),
     (403, "client_error"), (429, "rate_limited"), (500, "server_error"),
     (503, "server_error"), (None, "network_error")],
)
def test_statuses_fall_into_the_gateways_outcome_classes(status: int | None, cls: str) -> None:
    assert outcome_class(status) == cls


def test_kisi_outcomes_count_the_simulator_log_by_class() -> None:
    log = [entry(T0, 200), entry(T0, 200), entry(T0, 429), entry(T0, 503), entry(T0, 401)]
    assert kisi_outcomes(log) == {"success": 2, "rate_limited": 1, "server_error": 1,
                                  "client_error": 1}


@pytest.mark.parametrize(
    ("answer", "label"),
    [(reply(200), "200"),
     (reply(503, code="9e0503"), "503 (guard pause)"),
     (reply(504, code="9e0504"), "504 (unknown outcome)"),
     (reply(503, code="fbc000"), "503"),  # Kisi's own 503, passed through
     (reply(503, code="9e0530"), "503 (gateway error 9e0530)"),
     (reply(None), "no answer (error)")],
)
def test_caller_answers_are_labelled_by_what_the_gateway_meant(answer: Reply, label: str) -> None:
    assert reply_label(answer) == label


def test_retry_figures_count_attempts_and_delays_from_records() -> None:
    records = [
        record("succeeded", [("server_error", 503, 1), ("server_error", 503, 3),
                             ("success", 200, None)]),
        record("succeeded", [("success", 200, None)]),
        record("expired", [("server_error", 503, 2), ("server_error", 503, None)]),
    ]
    figures = retry_figures(records)
    assert figures.requests == 3
    assert figures.attempts_per_request == {1: 1, 2: 1, 3: 1}
    assert figures.retries == 3
    assert figures.delays == Spread(3, 1.0, 2.0, 3.0)
    assert figures.attempt_classes == {"server_error": 4, "success": 2}


def test_a_missing_or_queued_record_is_unfinished() -> None:
    states = terminal_states([record("succeeded", []), record("queued", []), None,
                              record("expired", [])])
    assert states == {"succeeded": 1, "expired": 1, "unfinished": 2}


def test_guard_lines_are_read_from_the_metrics_lambdas_own_notification() -> None:
    change = AlarmChange("kisi-gateway-bad-request-volume", "ALARM", "OK", "5 >= 5", None)
    _, text = compose_notification(change, Failing([], {}, []), "paused the account: 5 of 5",
                                   [])
    assert guard_actions([text, "unrelated"]) == [
        "kisi-gateway-bad-request-volume OK->ALARM: Guard: paused the account: 5 of 5"
    ]


def test_alarm_transitions_come_from_cloudwatch_alarm_messages() -> None:
    message = json.dumps({"AlarmName": "kisi-gateway-kisi-429", "OldStateValue": "OK",
                          "NewStateValue": "ALARM"})
    assert alarm_transitions([message, "not json", "{}"]) == ["kisi-gateway-kisi-429: OK -> ALARM"]


def test_per_second_bins_by_class_and_drops_what_is_outside() -> None:
    log = [entry(T0 + 0.1, 200), entry(T0 + 0.9, 503), entry(T0 + 1.5, 200),
           entry(T0 - 1, 200), entry(T0 + 9, 200)]
    bins = per_second(log, T0, 3)
    assert bins["success"] == [1, 1, 0]
    assert bins["server_error"] == [1, 0, 0]


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [([], 50, None), ([5.0], 95, 5.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
     ([float(n) for n in range(1, 101)], 95, 95.0)],
)
def test_percentile_is_nearest_rank(values: list[float], pct: float,
                                    expected: float | None) -> None:
    assert percentile(values, pct) == expected


def test_summary_adds_gateway_side_timeouts_and_counts_guard_pauses() -> None:
    deferred = reply(202, location="/Prod/requests/a")
    replies = [reply(200), deferred, reply(503, code="9e0503"), reply(503, code="9e0503")]
    records = {"/Prod/requests/a": record("succeeded", [("network_error", None, 1),
                                                        ("success", 200, None)])}
    summary = summarize([entry(T0, 200), entry(T0, 429)], replies, records,
                        alarms_now=["a"], alarm_history=[], notifications=[])
    assert summary.kisi == {"success": 1, "rate_limited": 1, "network_error": 1}
    assert (summary.inline, summary.deferred, summary.paused_503) == (3, 1, 2)
    assert summary.rate_limited == 1
    assert summary.terminal == {"succeeded": 1}
    text = render_summary(summary)
    assert "429s Kisi sent  1" in text
    assert "503 (guard pause)                 2" in text


def test_the_timeline_plot_is_written(tmp_path: Path) -> None:
    log = [entry(T0 + n / 5, 200 if n % 7 else 503) for n in range(50)]
    path = plot_timeline(log, [reply(200), reply(202, location="/x")],
                         [Phase("(a)", T0, T0 + 5), Phase("(b)", T0 + 5, T0 + 10)], T0,
                         tmp_path / "docs" / "timeline.png", [Phase("outage", T0 + 5, T0 + 7)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- the soak


def unlock(index: int = 1, **changes: Any) -> Planned:
    body = json.dumps({"context": {"soak": index}}).encode()
    fields = {"index": index, "kind": "unlock", "method": "POST",
              "path": f"/locks/{index}/unlock", "query": "", "body": body,
              "respond_async": False, "idempotency_key": None, **changes}
    return Planned(**fields)


def create(index: int = 2) -> Planned:
    body = json.dumps({"group": {"name": f"soak {index}"}}).encode()
    return Planned(index, "create", "POST", "/groups", "", body, False, None)


def processed(planned: Planned, at: float = T0 + 1) -> dict[str, Any]:
    return entry(at, 200, method=planned.method, path=planned.path, query=planned.query,
                 body=planned.body)


def test_the_plan_is_deterministic_and_every_request_is_identifiable() -> None:
    plan = plan_requests(200, seed=3, run_id="r")
    assert plan == plan_requests(200, seed=3, run_id="r")
    assert len({p.marker for p in plan}) == 200
    kinds = {p.kind for p in plan}
    assert kinds == {"unlock", "read", "create"}
    assert any(p.respond_async for p in plan)
    assert any(p.idempotency_key for p in plan)
    read = next(p for p in plan if p.kind == "read" and "limit" in p.query)
    reordered = entry(T0, 200, path=read.path, query="&".join(reversed(read.query.split("&"))))
    assert entry_marker(reordered) == read.marker


def test_a_clean_run_has_no_violations() -> None:
    a, b = unlock(1), create(2)
    tracked = [Tracked(a, reply(200)), Tracked(b, reply(200))]
    figures = soak_figures(tracked, [processed(a), processed(b)])
    assert figures.violations() == []
    assert figures.states == {"succeeded": 2}
    assert figures.p50_s == 0.5
    assert "must be 0)" in render_figures(figures, minutes=1, rate=4)


def test_a_create_processed_twice_is_a_double_send() -> None:
    b = create(2)
    figures = soak_figures([Tracked(b, reply(200, attempts=2))],
                           [processed(b), processed(b, T0 + 2)])
    assert len(figures.double_sends) == 1
    assert figures.violations() == ["1 double send(s)"]


def test_an_unlock_repeated_after_an_unknown_outcome_is_allowed() -> None:
    a = unlock(1, respond_async=True)
    deferred = Tracked(a, reply(202, location="/requests/a"),
                       record=record("succeeded", [("network_error", None, 1),
                                                   ("success", 200, None)],
                                     deadline=T0 + 30))
    figures = soak_figures([deferred], [processed(a), processed(a, T0 + 2)])
    assert figures.double_sends == []
    assert figures.repeats_after_unknown == {"unlock": 1}


def test_an_unlock_processed_more_often_than_it_was_sent_is_a_double_send() -> None:
    a = unlock(1)
    figures = soak_figures([Tracked(a, reply(200, attempts=1))],
                           [processed(a), processed(a, T0 + 2)])
    assert len(figures.double_sends) == 1


def test_an_unlock_reaching_kisi_after_its_deadline_is_late() -> None:
    a = unlock(1, respond_async=True)
    deferred = Tracked(a, reply(202, location="/requests/a", deadline=T0 + 30),
                       record=record("succeeded", [("server_error", 503, 8),
                                                   ("success", 200, None)],
                                     deadline=T0 + 30))
    log = [entry(T0 + 1, 503, method="POST", path=a.path, body=a.body), processed(a, T0 + 31)]
    figures = soak_figures([deferred], log)
    assert len(figures.late_unlocks) == 1
    assert "1.00 s after its deadline" in figures.late_unlocks[0]
    assert "1 unlock attempt(s) reached Kisi late" in figures.violations()


def test_an_unlock_without_a_record_is_late_30_s_after_it_was_sent() -> None:
    a = unlock(1)
    on_time = soak_figures([Tracked(a, reply(200))], [processed(a, T0 + 29.9)])
    late = soak_figures([Tracked(a, reply(200))], [processed(a, T0 + 30.1)])
    assert (len(on_time.late_unlocks), len(late.late_unlocks)) == (0, 1)


def test_requests_that_never_end_are_lost() -> None:
    no_answer = Tracked(unlock(1), reply(None))
    still_queued = Tracked(unlock(2), reply(202, location="/requests/b"),
                           record=record("queued", []))
    never_read = Tracked(unlock(3), reply(202, location="/requests/c"))
    expired = Tracked(unlock(4), reply(202, location="/requests/d"),
                      record=record("expired", [("server_error", 503, None)],
                                    reason="attempts_exhausted"))
    figures = soak_figures([no_answer, still_queued, never_read, expired], [])
    assert figures.lost == 3
    assert figures.not_succeeded == {"unlock lost: no answer": 1,
                                     "unlock lost: answered 202": 2,
                                     "unlock expired: attempts_exhausted": 1}
    assert figures.violations() == ["3 request(s) never ended (lost)"]


@pytest.mark.parametrize(
    ("answer", "state"),
    [(reply(200), "succeeded"), (reply(302), "succeeded"), (reply(422), "failed"),
     (reply(504, code="9e0504"), "failed"), (reply(504, code="9e0508"), "expired"),
     (reply(503, code="fbc000"), "expired"), (reply(429, code=None), "expired"),
     (reply(503, code="9e0503"), "paused"), (reply(503, code="9e0530"), "gateway_error"),
     (reply(502, code=None), "gateway_error"), (reply(None), "lost")],
)
def test_final_state_of_an_inline_answer(answer: Reply, state: str) -> None:
    assert final_state(Tracked(unlock(1), answer)) == state


def test_only_the_gateways_own_5xx_must_be_zero() -> None:
    answers = [reply(503, code="fbc000"),  # Kisi's 503 passed through
               reply(504, code="9e0504"),  # documented end: unknown outcome
               reply(503, code="9e0530"),  # the gateway could not reach its store
               reply(500, code=None)]  # the API layer failed
    tracked = [Tracked(unlock(n), answer) for n, answer in enumerate(answers)]
    figures = soak_figures(tracked, [], poll_statuses={"200": 5, "503": 1})
    assert figures.ended_504 == {"504 9e0504": 1}
    assert figures.gateway_5xx == {"503 9e0530": 1, "500 no code": 1,
                                   "503 (GET /requests/{id})": 1}


def test_an_idempotency_key_repeat_must_answer_like_the_first_final_answer() -> None:
    keyed = unlock(1, idempotency_key="k")
    same = Tracked(keyed, reply(200), replay=reply(200))
    queued_then_done = Tracked(unlock(2), reply(202, location="/r"), replay=reply(200),
                               record=record("succeeded", [("success", 200, None)]))
    different = Tracked(unlock(3), reply(200), replay=reply(409, code="9e0490"))
    figures = soak_figures([same, queued_then_done, different], [])
    assert figures.replays == 3
    assert len(figures.replay_mismatches) == 1
    assert figures.replay_mismatches[0].startswith("#3: first 200, repeat 409")
