"""``python -m kisi_sim``: the simulator alone, in the foreground."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Sequence

from kisi_sim.config import SimConfig, SimConfigError
from kisi_sim.simulator import KisiSimulator

__all__ = ["main"]


def _install_sigterm(stop: threading.Event) -> None:
    """``make run`` stops children with SIGTERM: treat it like Ctrl-C."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kisi_sim``: serve in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="kisi-sim", description="Kisi API simulator")
    parser.add_argument("--host", default=os.environ.get("KISI_SIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=os.environ.get("KISI_SIM_PORT", "8080"))
    parser.add_argument("--verbose", action="store_true", help="log every request line")
    args = parser.parse_args(argv)
    try:
        config = SimConfig.from_env(os.environ)
    except SimConfigError as error:
        print(f"kisi-sim: {error}", file=sys.stderr)
        return 2
    if args.verbose:
        config = dataclasses.replace(config, verbose=True)
    stop = threading.Event()
    _install_sigterm(stop)
    with KisiSimulator(config, host=args.host, port=args.port) as simulator:
        print(f"kisi-sim listening on {simulator.url}", flush=True)
        try:
            while not stop.wait(0.5):  # a timed wait keeps Ctrl-C prompt
                pass
        except KeyboardInterrupt:
            pass
    return 0
