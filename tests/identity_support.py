"""Shared pieces of the identity and tenancy tests: API Gateway events carrying a caller's own
``Authorization``, and a gateway over the in-memory stores that talks to the Kisi simulator on
127.0.0.1 (real HTTP, real credentials), all on one fake clock.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kisi_gateway.config import Settings
from kisi_gateway.pipeline.forwarding import Forwarder
from kisi_gateway.pipeline.http_api import ProxyResponse, handle
from kisi_gateway.pipeline.kisi_http import KisiClient, Timeouts
from kisi_gateway.wiring import InMemoryGateway, build_in_memory
from kisi_sim import DEMO_KEY, KisiSimulator, SimConfig
from tests.harness import FakeClock

CALLER_A, CALLER_B = "key-id-caller-a", "key-id-caller-b"  # API Gateway API key ids


def api_event(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    multi_headers: dict[str, list[str]] | None = None,
    api_key_id: str = CALLER_A,
    body: Any = None,
) -> dict[str, Any]:
    """A REST API proxy event (payload 1.0) for ``method path`` on stage ``Prod``, as API
    Gateway sends it: single-value headers are the last of each name's values."""
    many = {name: [value] for name, value in (headers or {}).items()}
    many.update(multi_headers or {})
    single = {name: values[-1] for name, values in many.items() if values}
    raw = body if isinstance(body, str) or body is None else json.dumps(body)
    if raw is not None:
        single.setdefault("Content-Type", "application/json")
        many.setdefault("Content-Type", ["application/json"])
    return {
        "resource": "/kisi/{proxy+}" if path.startswith("/kisi/") else "/requests/{id}",
        "path": path,
        "httpMethod": method,
        "headers": single,
        "multiValueHeaders": many,
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": ({"proxy": path.removeprefix("/kisi/")}
                           if path.startswith("/kisi/") else {"id": path.rsplit("/", 1)[-1]}),
        "stageVariables": None,
        "requestContext": {
            "path": "/Prod" + path, "stage": "Prod", "httpMethod": method,
            "identity": {"apiKeyId": api_key_id, "sourceIp": "203.0.113.10"},
        },
        "body": raw,
        "isBase64Encoded": False,
    }


def answer_of(response: ProxyResponse) -> dict[str, Any]:
    """The JSON body of a gateway answer."""
    body: dict[str, Any] = json.loads(response["body"])
    return body


@dataclass
class SimWorld:
    """The in-memory gateway sending to the simulator; ``handle`` is api_call's path."""

    clock: FakeClock
    sim: KisiSimulator
    gw: InMemoryGateway
    settings: Settings

    def handle(self, event: dict[str, Any]) -> ProxyResponse:
        forwarder: Forwarder = self.gw.forwarder
        return handle(event, lambda: forwarder, self.settings)

    def kisi_requests(self) -> int:
        """How many requests reached the simulator, answered or not."""
        return int(self.sim.stats()["total"])


@contextmanager
def sim_world(
    env: dict[str, str] | None = None, sim_config: SimConfig | None = None, seed: int = 12
) -> Iterator[SimWorld]:
    """The simulator on loopback and the in-memory gateway, both on one fake clock."""
    clock = FakeClock()
    settings = Settings.from_env({"READ_TIMEOUT_S": "2", **(env or {})})
    with KisiSimulator(sim_config, clock=clock.now, wall_clock=clock.now,
                       rng=random.Random(seed)) as sim:
        kisi = KisiClient(sim.url, timeouts=Timeouts(settings.connect_timeout_s,
                                                     settings.read_timeout_s))
        gw = build_in_memory(settings, kisi, clock, random.Random(seed).random,
                             service_key=DEMO_KEY)
        yield SimWorld(clock, sim, gw, settings)
