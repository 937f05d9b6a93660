"""``python -m scenarios.identity``: identity and tenancy figures, measured through ``make run``.

Starts a fresh local stack (moto, the Kisi simulator as the recording fake Kisi, the gateway)
and measures, from both sides (what callers were answered, what reached the simulator):

(a) wrong passwords  5 sign-ins (``POST /logins``) with a wrong password, then 20 calls of
                     another caller on the service login and 20 with its own key: how many
                     sign-ins reached Kisi, how many 503s the other callers saw (expect 0).
(b) sign-out         ``DELETE /login`` on the service login (refused, never reaches Kisi),
                     then a call on the service key (still works).
(c) one Kisi user    two keys of one Kisi user, 6 closed-loop callers each, for ``--seconds``:
                     the share of 429s among what reached Kisi (target 1 % or less: both keys
                     book in the user's budget).
(d) hygiene          every caller credential used above (keys, password, the sign-in's login
                     secret), in clear and in base64, searched in every table item, queue and
                     DLQ message, the stack's log, metric names and dimensions, and every
                     answer: occurrences (expect 0).

Everything runs on 127.0.0.1, bounded in count and time; the stack is stopped at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import requests

from kisi_sim import DEMO_KEY
from local.stack_process import StackProcess, on_fresh_stack, stack_env

ADA_EMAIL, ADA_PASSWORD, ADA_USER = "ada@example.com", "correct horse battery", 42
OWN_KEY, OWN_USER = "own-key-of-another-caller", 5
USER_KEYS, SHARED_USER = ("first-key-of-one-user", "second-key-of-one-user"), 9
TIMEOUT_S = 30.0


@dataclass
class Figures:
    """What the run measured (printed as JSON)."""

    wrong_signins_sent: int = 0
    wrong_signin_answers: Counter[str] = field(default_factory=Counter)
    wrong_signins_reached_kisi: int = 0
    other_callers_calls: int = 0
    other_callers_503s: int = 0
    service_signout_status: int | None = None
    service_signout_code: str | None = None
    service_signouts_reached_kisi: int = 0
    service_key_works_after: bool = False
    one_user_calls: int = 0
    one_user_answers: dict[str, int] = field(default_factory=dict)
    one_user_kisi_requests: int = 0
    one_user_kisi_429s: int = 0
    one_user_429_at_s: list[float] = field(default_factory=list)  # since the first send
    plaintext_credential_occurrences: int = 0
    places_searched: int = 0


def _call(stack: StackProcess, method: str, path: str, *, key: str | None = None,
          body: Any = None, answers: list[str] | None = None) -> requests.Response:
    headers = {"Authorization": f"KISI-LOGIN {key}"} if key else {}
    reply = stack.request(method, f"/kisi{path}", headers=headers, timeout=TIMEOUT_S,
                          **({"json": body} if body is not None else {}))
    if answers is not None:
        answers.append(reply.text + json.dumps(dict(reply.headers)))
    return reply


def _reached_kisi(stack: StackProcess, method: str | None = None, path: str | None = None
                  ) -> list[dict[str, Any]]:
    """Every request the simulator received, answered or refused (its log)."""
    return [e for e in stack.sim.stats()["requests"]
            if (method is None or e["method"] == method) and (path is None or e["path"] == path)]


def wrong_passwords(stack: StackProcess, figures: Figures, answers: list[str]) -> None:
    before = len(_reached_kisi(stack, "POST", "/logins"))
    for n in range(5):
        reply = _call(stack, "POST", "/logins", answers=answers,
                      body={"login": {"type": "device"},
                            "user": {"email": ADA_EMAIL, "password": f"wrong-{n}"}})
        figures.wrong_signins_sent += 1
        figures.wrong_signin_answers[str(reply.status_code)] += 1
    figures.wrong_signins_reached_kisi = len(_reached_kisi(stack, "POST", "/logins")) - before
    for key in (None, OWN_KEY):
        for n in range(20):
            status = _call(stack, "GET", f"/locks?limit=1&offset={n}", key=key,
                           answers=answers).status_code
            figures.other_callers_calls += 1
            figures.other_callers_503s += status == 503


def service_signout(stack: StackProcess, figures: Figures, answers: list[str]) -> None:
    before = len(_reached_kisi(stack, "DELETE", "/login"))
    refused = _call(stack, "DELETE", "/login", answers=answers)
    figures.service_signout_status = refused.status_code
    figures.service_signout_code = refused.json().get("code")
    figures.service_signouts_reached_kisi = len(_reached_kisi(stack, "DELETE", "/login")) - before
    figures.service_key_works_after = _call(stack, "GET", "/places").status_code == 200


def one_user_at_full_speed(stack: StackProcess, figures: Figures, seconds: float,
                           answers: list[str]) -> None:
    before = len(_reached_kisi(stack))
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def caller(key: str, n: int) -> None:
        for i in range(500):  # bounded in count as well as in time
            if time.monotonic() >= stop_at:
                return
            reply = _call(stack, "GET", f"/groups?limit=1&offset={n * 1000 + i}", key=key)
            with lock:
                statuses[str(reply.status_code)] += 1
                if i == 0:
                    answers.append(reply.text)

    threads = [threading.Thread(target=caller, args=(key, n), daemon=True)
               for n, key in enumerate(USER_KEYS * 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 2 * TIMEOUT_S)
    sent = [e for e in _reached_kisi(stack)[before:] if e["path"] == "/groups"]
    figures.one_user_calls = sum(statuses.values())
    figures.one_user_answers = dict(sorted(statuses.items()))
    figures.one_user_kisi_requests = len(sent)
    figures.one_user_kisi_429s = sum(1 for e in sent if e["status"] == 429)
    first = sent[0]["at"] if sent else 0.0
    figures.one_user_429_at_s = [round(e["at"] - first, 2) for e in sent if e["status"] == 429]


def _forms(secret: str) -> set[str]:
    raw = secret.encode()
    return {secret, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}


def _everything_the_stack_wrote(stack: StackProcess) -> Iterable[str]:
    dynamodb = stack.client("dynamodb")
    for table in dynamodb.list_tables()["TableNames"]:
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            yield from (json.dumps(item) for item in page["Items"])
    sqs = stack.client("sqs")
    for url in sqs.list_queues().get("QueueUrls", []):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                  MessageAttributeNames=["All"], AttributeNames=["All"])
        yield from (json.dumps(m) for m in got.get("Messages", []))
    metrics = stack.client("cloudwatch").get_paginator("list_metrics")
    for page in metrics.paginate():
        yield from (json.dumps(m) for m in page["Metrics"])
    yield stack.log()


def hygiene(stack: StackProcess, figures: Figures, answers: list[str]) -> None:
    secrets = [OWN_KEY, *USER_KEYS, ADA_PASSWORD]
    forms = set().union(*(_forms(s) for s in secrets))
    places = [*_everything_the_stack_wrote(stack), *answers]
    figures.places_searched = len(places)
    figures.plaintext_credential_occurrences = sum(
        text.count(form) for text in places for form in forms)


def run(stack: StackProcess, seconds: float) -> Figures:
    figures = Figures()
    answers: list[str] = []
    wrong_passwords(stack, figures, answers)
    service_signout(stack, figures, answers)
    one_user_at_full_speed(stack, figures, seconds, answers)
    hygiene(stack, figures, answers)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenarios.identity", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="how long the two keys of one user send at full speed [20]")
    args = parser.parse_args(argv)
    env = stack_env(sim_keys={DEMO_KEY: 1, OWN_KEY: OWN_USER,
                              **dict.fromkeys(USER_KEYS, SHARED_USER)})
    env["KISI_SIM_ACCOUNTS"] = json.dumps(
        {ADA_EMAIL: {"password": ADA_PASSWORD, "user_id": ADA_USER}})
    figures = on_fresh_stack("identity", env, lambda stack: run(stack, args.seconds),
                             lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(figures.__dict__, indent=2))
    share = figures.one_user_kisi_429s / max(1, figures.one_user_kisi_requests)
    print(f"429 share for two keys of one user: {share:.2%} "
          f"({figures.one_user_kisi_429s} of {figures.one_user_kisi_requests})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
