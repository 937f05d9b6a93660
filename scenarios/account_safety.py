"""Account safety, measured through ``make run`` against the recording Kisi simulator.

    python -m scenarios.account_safety

Starts a fresh local stack (moto, the Kisi simulator, the gateway; default guard settings)
and measures, from the simulator's own request log (what reached Kisi) and the replies:

1. invented paths: 40 ``GET /kisi/zq0001x``-style calls; how many reached Kisi;
2. known-bad repeats: the same invalid create (``POST /users`` with an e-mail Kisi refuses)
   sent 50 times; how many reached Kisi; then the corrected create, and whether it went
   through at once;
3. a hostile 403 storm: 60 unlocks of locks that do not exist, sent with one caller's own
   key, interleaved with 60 unlocks of real locks by another caller (the service login); how
   many 503s the other caller got;
4. a replaced key: the service key is revoked (401s until the guard pauses it), then a new
   working key is put into its secret; seconds until a call is answered 200 again.

Everything is on 127.0.0.1, every loop is bounded in count and time, and the stack is stopped
at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from kisi_sim import DEMO_KEY
from local.stack_process import StackProcess, on_fresh_stack, stack_env
from scenarios.caller import Reply, send

HOSTILE_KEY = "hostile-caller-key"
ROTATED_KEY = "rotated-service-key"
INVENTED = 40
REPEATS = 50
STORM = 60
RESUME_BOUND_S = 60.0  # give up measuring the key change after this long
BAD_USER = {"user": {"name": "Ada", "email": "not-an-address"}}
GOOD_USER = {"user": {"name": "Ada", "email": "ada@example.com"}}


def log(text: str) -> None:
    print(f"[account-safety] {text}", file=sys.stderr, flush=True)


def reached_kisi(stack: StackProcess, match: Callable[[dict[str, Any]], bool]) -> int:
    """Requests in the simulator's log (processed or not) that ``match``."""
    return sum(1 for entry in stack.sim.stats()["requests"] if match(entry))


def body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def invented_paths(stack: StackProcess) -> dict[str, Any]:
    replies = [send(stack, "invented", "GET", f"/kisi/zq{n:04d}x") for n in range(1, INVENTED + 1)]
    reached = reached_kisi(stack, lambda e: str(e["path"]).startswith("/zq"))
    return {"sent": INVENTED, "reached_kisi": reached,
            "answers": dict(Counter(f"{r.status} {r.code}" for r in replies))}


def known_bad(stack: StackProcess) -> dict[str, Any]:
    before = reached_kisi(stack, lambda e: (e["method"], e["path"]) == ("POST", "/users"))
    replies = [send(stack, "known-bad", "POST", "/kisi/users", body=body(BAD_USER))
               for _ in range(REPEATS)]
    bad = reached_kisi(stack, lambda e: (e["method"], e["path"]) == ("POST", "/users")) - before
    fixed = send(stack, "corrected", "POST", "/kisi/users", body=body(GOOD_USER))
    after = reached_kisi(stack, lambda e: (e["method"], e["path"]) == ("POST", "/users"))
    return {"sent": REPEATS, "reached_kisi": bad,
            "answers": dict(Counter(str(r.status) for r in replies)),
            "corrected_status": fixed.status,
            "corrected_reached_kisi": after - before - bad,
            "corrected_seconds": round(fixed.answered_at - fixed.sent_at, 3)}


def hostile_storm(stack: StackProcess) -> dict[str, Any]:
    hostile: list[Reply] = []
    other: list[Reply] = []
    for n in range(STORM):
        hostile.append(send(stack, "hostile", "POST", f"/kisi/locks/{900_000 + n}/unlock",
                            headers={"Authorization": f"KISI-LOGIN {HOSTILE_KEY}"}))
        other.append(send(stack, "other", "POST", f"/kisi/locks/{1 + n % 5}/unlock"))
    return {"hostile_answers": dict(Counter(str(r.status) for r in hostile)),
            "other_answers": dict(Counter(str(r.status) for r in other)),
            "other_503": sum(1 for r in other if r.status == 503)}


def replaced_key(stack: StackProcess) -> dict[str, Any]:
    stack.sim.update_faults({"revoked_keys": [DEMO_KEY]})
    statuses = []
    for n in range(1, 11):  # the guard pauses the key after 5 consecutive 401s
        statuses.append(send(stack, "revoked", "GET", f"/kisi/locks/{n}").status)
        if statuses[-1] == 503:
            break
    secrets = stack.client("secretsmanager")
    names = [s["Name"] for s in secrets.list_secrets()["SecretList"]
             if "KisiApiKeySecret" in s["Name"]]
    if len(names) != 1:
        raise RuntimeError(f"cannot tell the service key's secret among {names}")
    secrets.put_secret_value(SecretId=names[0], SecretString=ROTATED_KEY)
    replaced_at = time.monotonic()
    after: list[int | None] = []
    while time.monotonic() - replaced_at < RESUME_BOUND_S:
        reply = send(stack, "rotated", "GET", "/kisi/locks/1")
        after.append(reply.status)
        if reply.status == 200:
            break
        time.sleep(0.25)
    resumed = after[-1] == 200
    return {"before_pause": statuses, "calls_after_the_new_key": len(after),
            "statuses_after": dict(Counter(str(s) for s in after)),
            "seconds_to_resumed_traffic":
                round(time.monotonic() - replaced_at, 2) if resumed else None}


def run(stack: StackProcess) -> dict[str, Any]:
    figures = {}
    for name, part in (("invented_paths", invented_paths), ("known_bad_creates", known_bad),
                       ("hostile_403_storm", hostile_storm), ("replaced_key", replaced_key)):
        log(f"measuring {name}")
        figures[name] = part(stack)
    return figures


def main() -> int:
    env = stack_env(sim_keys={DEMO_KEY: 1, HOSTILE_KEY: 2, ROTATED_KEY: 1})
    try:
        figures = on_fresh_stack("account-safety", env, run, log)
    except KeyboardInterrupt:
        log("interrupted: the stack is stopped")
        return 130
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
