"""``make run``: the whole gateway on this machine, no Docker, everything on 127.0.0.1.

Starts moto in server mode (the embedded AWS), the Kisi simulator (unless ``KISI_BASE_URL``
points elsewhere), provisions template.yaml into moto, and serves the gateway API with the
unchanged handlers. Configuration (DESIGN.md "Local stack"; defaults in brackets):

``GATEWAY_PORT`` [3000], ``MOTO_PORT`` [5000], ``KISI_SIM_PORT`` [8080], ``KISI_BASE_URL``
[the simulator; when set, the simulator is not started], ``KISI_API_KEY`` [the simulator's
demo key; required with a real ``KISI_BASE_URL``], ``GATEWAY_API_KEY`` [``local-dev-key``,
sent by callers as ``x-api-key``]. Ctrl-C stops everything it started, by PID.

For tests and experiments: ``STACK_PARAMETERS`` [none: a JSON object of template parameter
overrides, e.g. ``{"BadRequestVolume": 5}``], ``FUNCTION_ENV`` [none: a JSON object of extra
function environment, e.g. ``{"GUARD_COOLDOWN_S": "2"}``], ``ALARM_INTERVAL_S`` [10: how often
the local alarm evaluator runs].
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kisi_sim import DEMO_KEY, KisiSimulator, SimConfig
from local.moto_server import MotoProcess
from local.runtime import LocalRuntime
from ops.stack import LOCAL_OUTPUTS, write_local

ROOT = Path(__file__).resolve().parent.parent
STACK_NAME = "kisi-gateway"


@dataclass(frozen=True)
class RunConfig:
    """The ``make run`` environment, validated."""

    gateway_port: int
    moto_port: int
    sim_port: int
    kisi_base_url: str | None
    kisi_api_key: str | None
    gateway_api_key: str
    stack_parameters: dict[str, Any]
    function_env: dict[str, str]
    alarm_interval_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RunConfig:
        def port(name: str, default: int) -> int:
            raw = environ.get(name, "") or str(default)
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise SystemExit(f"{name} must be a port number (1-65535), not {raw!r}")
            return int(raw)

        base = environ.get("KISI_BASE_URL") or None
        key = environ.get("KISI_API_KEY") or None
        if base and not key:
            raise SystemExit("KISI_API_KEY must be set when KISI_BASE_URL points at Kisi")
        def json_object(name: str) -> dict[str, Any]:
            raw = environ.get(name) or "{}"
            try:
                value = json.loads(raw)
            except ValueError as exc:
                raise SystemExit(f"{name} must be a JSON object: {exc}") from exc
            if not isinstance(value, dict):
                raise SystemExit(f"{name} must be a JSON object")
            return value

        interval = environ.get("ALARM_INTERVAL_S") or "10"
        try:
            alarm_interval_s = float(interval)
        except ValueError:
            raise SystemExit(f"ALARM_INTERVAL_S must be a number, not {interval!r}") from None
        return cls(
            gateway_port=port("GATEWAY_PORT", 3000),
            moto_port=port("MOTO_PORT", 5000),
            sim_port=port("KISI_SIM_PORT", 8080),
            kisi_base_url=base,
            kisi_api_key=key,
            gateway_api_key=environ.get("GATEWAY_API_KEY") or "local-dev-key",
            stack_parameters=json_object("STACK_PARAMETERS"),
            function_env={k: str(v) for k, v in json_object("FUNCTION_ENV").items()},
            alarm_interval_s=alarm_interval_s,
        )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(environ: Mapping[str, str] = os.environ) -> int:
    # A shell starting this in the background leaves SIGINT ignored; Ctrl-C and a test's
    # SIGINT must still stop everything in order, so take both signals back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    config = RunConfig.from_env(environ)
    sim: KisiSimulator | None = None
    moto = MotoProcess(port=config.moto_port)
    runtime: LocalRuntime | None = None
    try:
        base_url = config.kisi_base_url
        api_key = config.kisi_api_key or DEMO_KEY
        if base_url is None:
            sim = KisiSimulator(SimConfig.from_env(environ), port=config.sim_port).start()
            base_url = sim.url
            print(f"kisi-sim: the Kisi simulator on {base_url} (demo key accepted)")
        moto.start()
        print(f"moto: the embedded AWS on {moto.endpoint_url} (pid {moto.pid})")
        runtime = LocalRuntime(
            ROOT / "template.yaml",
            moto.endpoint_url,
            stack_name=STACK_NAME,
            parameters={**config.stack_parameters, "KisiBaseUrl": base_url},
            secret_values={"KisiApiKeySecret": api_key},
            env_overrides={
                "POWERTOOLS_LOG_LEVEL": environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
                **config.function_env,
            },
            api_key=config.gateway_api_key,
            gateway_port=config.gateway_port,
            alarm_interval_s=config.alarm_interval_s,
        )
        runtime.start()
        if runtime.stack is not None:  # for `python -m ops --local tenant|caller ...`
            write_local(LOCAL_OUTPUTS, stack_name=STACK_NAME, outputs=runtime.stack.outputs,
                        endpoint_url=moto.endpoint_url, region=runtime.stack.region)
        print(
            f"kisi-gateway ready on {runtime.gateway_url} "
            f"(send x-api-key: {config.gateway_api_key}; Kisi: {base_url}); Ctrl-C stops",
            flush=True,
        )
        runtime.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if runtime is not None:
            runtime.stop()
        moto.stop()
        if sim is not None:
            sim.stop()
        print("kisi-gateway stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
