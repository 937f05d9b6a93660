"""LocalRuntime: a SAM application on one machine, no Docker, driven by its template.

It provisions the template into the embedded AWS (moto), prepares this process the way
Lambda prepares a function's (environment, sys.path with code and layers), and runs the
emulators: the API server, one SQS poller per mapping, the scheduler, SNS delivery, the alarm
evaluator, and a watchdog that starts moto again if it died (when the runtime was given the
process, ``aws=``), hands back the messages the SQS pollers held when it died, and provisions
again if moto lost the stack (a reset, or a restart without saved state).

    with LocalRuntime("template.yaml", moto.endpoint_url, api_key="local-dev-key") as rt:
        print(rt.gateway_url)

All functions share this process, so their environments are merged; a variable two
functions set differently is reported (the first value wins).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from local.alarms import AlarmEvaluator
from local.api_keys import DEFAULT_TTL_S, UsagePlanKeys
from local.apigw import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    ApiGateway,
    ApiServer,
)
from local.emf import EmfTee
from local.event_sources import Scheduler, SnsDelivery, SqsPoller
from local.lambda_invoke import FunctionInvoker
from local.moto_server import ProvisionMarker, aws_client
from local.provision import provision
from local.stack import Stack

__all__ = [
    "DEFAULT_API_KEY",
    "LocalRuntime",
    "RestartableAws",
    "format_report",
    "merged_environment",
]

DEFAULT_API_KEY = "local-dev-key"
_REPORT_ORDER = ("created", "emulated", "skipped", "unsupported", "failed")


class RestartableAws(Protocol):
    """The embedded AWS as a process the watchdog can check and start again."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exit_code(self) -> int | None: ...

    def alive(self) -> bool: ...

    def restart(self) -> None: ...


def merged_environment(stack: Stack) -> tuple[dict[str, str], list[str]]:
    """All functions' variables in one mapping, plus a line per conflicting variable."""
    merged: dict[str, str] = {}
    owner: dict[str, str] = {}
    conflicts = []
    for spec in stack.functions.values():
        for name, value in spec.environment.items():
            if name in merged and merged[name] != value:
                conflicts.append(
                    f"environment {name}: {owner[name]} sets {merged[name]!r}, "
                    f"{spec.logical_id} sets {value!r}; one process can hold one value "
                    f"({owner[name]}'s is used)"
                )
                continue
            merged.setdefault(name, value)
            owner.setdefault(name, spec.logical_id)
    return merged, conflicts


def format_report(stack: Stack, template: str | Path = "") -> str:
    """The provisioning report: a header, then one line per resource grouped by status."""
    source = f" from {template}" if template else ""
    lines = [f"stack {stack.name}{source} in {stack.endpoint_url}: {stack.summary()}"]
    for status in _REPORT_ORDER:
        lines.extend(f"  {r.report_line()}" for r in stack.resources.values() if r.status == status)
    lines.extend(f"  warning: {text}" for text in stack.warnings)
    return "\n".join(lines)


class LocalRuntime:
    """Provision, then run every emulator in daemon threads until :meth:`stop`."""

    def __init__(
        self,
        template: str | Path,
        endpoint_url: str,
        *,
        stack_name: str = "local",
        parameters: Mapping[str, Any] | None = None,
        secret_values: Mapping[str, str] | None = None,
        env_overrides: Mapping[str, str] | None = None,
        api_key: str = DEFAULT_API_KEY,
        api_key_cache_s: float = DEFAULT_TTL_S,
        gateway_host: str = "127.0.0.1",
        gateway_port: int = 3000,
        alarm_interval_s: float = 10.0,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
        watchdog_interval_s: float = 5.0,
        aws: RestartableAws | None = None,
        aws_check_s: float = 1.0,
        sqs_wait_time_s: int = 1,
        run_threads: bool = True,
        echo_emf: bool = False,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        log: Callable[[str], None] = print,
    ) -> None:
        self.template = Path(template)
        self.endpoint_url = endpoint_url
        self.stack_name = stack_name
        self._parameters = dict(parameters or {})
        self._secret_values = dict(secret_values or {})
        self._env_overrides = dict(env_overrides or {})
        self.api_key = api_key
        self._gateway_address = (gateway_host, gateway_port)
        self._alarm_interval_s = alarm_interval_s
        self._read_timeouts = (header_timeout_s, body_timeout_s)
        self._watchdog_interval_s = watchdog_interval_s
        self._aws = aws
        self._aws_check_s = aws_check_s
        self._sqs_wait_time_s = sqs_wait_time_s
        self._run_threads = run_threads
        self._echo_emf = echo_emf
        self._now = now
        self._log = log

        self.stack: Stack | None = None
        self.invoker: FunctionInvoker | None = None
        self.gateway: ApiGateway | None = None
        self.server: ApiServer | None = None
        self.pollers: list[SqsPoller] = []
        self.scheduler: Scheduler | None = None
        self.sns: SnsDelivery | None = None
        self.alarms: AlarmEvaluator | None = None
        self.emf: EmfTee | None = None
        self._marker = ProvisionMarker(endpoint_url, stack_name)
        # Keys of the stack's usage plans, looked up in moto's API Gateway when presented.
        self.api_key_check = UsagePlanKeys(
            aws_client("apigateway", endpoint_url), ttl_s=api_key_cache_s
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._saved_env: dict[str, str | None] = {}
        self._added_paths: list[str] = []
        self._started = False
        self._lock = threading.Lock()
        # Set while the stack is provisioned again: the API answers 503 meanwhile, rather than
        # serve callers from a half-built stack (or under a key id about to change).
        self._reprovisioning = threading.Event()

    # provisioning -------------------------------------------------------------------------
    def provision(self) -> Stack:
        """Create the stack in moto, then set up environment and sys.path; prints the report."""
        stack = provision(
            self.template,
            self.endpoint_url,
            stack_name=self.stack_name,
            parameters=self._parameters,
            secret_values=self._secret_values,
            api_key_value=self.api_key or None,
        )
        self._marker.mark()
        self.stack = stack
        self.api_key_check.configure(stack.usage_plans, self._static_keys(stack))
        self._prepare_process(stack)
        self._log(format_report(stack, self.template))
        return stack

    def ensure_provisioned(self) -> bool:
        """Provision again if the embedded AWS lost the stack; True when it did."""
        with self._lock:
            if self._marker.is_present():
                return False
            self._log(
                f"embedded AWS at {self.endpoint_url} lost stack {self.stack_name}: "
                "provisioning again (handlers keep configuration they cached)"
            )
            self._reprovisioning.set()
            try:
                self.provision()
            finally:
                self._reprovisioning.clear()
            return True

    def _set_env(self, name: str, value: str) -> None:
        if name not in self._saved_env:
            self._saved_env[name] = os.environ.get(name)
        os.environ[name] = value

    def _prepare_process(self, stack: Stack) -> None:
        environment, conflicts = merged_environment(stack)
        stack.warnings.extend(conflicts)
        for name, value in environment.items():
            if name in self._env_overrides and self._env_overrides[name] != value:
                stack.warnings.append(f"environment {name}: template value replaced by the runtime")
            self._set_env(name, value)
        aws = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": stack.region,
            "AWS_REGION": stack.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        for name, value in {**aws, **self._env_overrides}.items():
            self._set_env(name, value)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ.pop("AWS_PROFILE", None)
        self._extend_sys_path(stack)

    def _extend_sys_path(self, stack: Stack) -> None:
        # Lambda's order: the function's code first, then the layers (/opt/python).
        wanted: list[str] = []
        modules: dict[str, str] = {}
        for spec in stack.functions.values():
            if spec.code_dir is not None:
                wanted.append(str(spec.code_dir))
            module = spec.handler.rpartition(".")[0].replace("/", ".").split(".")[0]
            if module in modules and modules[module] != str(spec.code_dir):
                stack.warnings.append(
                    f"{spec.logical_id}: module {module} also names {modules[module]}; "
                    "handler modules need unique names to share one process"
                )
            modules.setdefault(module, str(spec.code_dir))
        for spec in stack.functions.values():
            wanted.extend(str(layer.import_dir) for layer in spec.layers)
        for path in reversed(list(dict.fromkeys(wanted))):
            if path not in sys.path:
                sys.path.insert(0, path)
                self._added_paths.append(path)

    # running ------------------------------------------------------------------------------
    def start(self) -> LocalRuntime:
        """Provision (once) and start the API server and emulator threads."""
        if self._started:
            return self
        stack = self.stack or self.provision()
        self._stop.clear()
        self.emf = EmfTee(
            aws_client("cloudwatch", self.endpoint_url), echo_emf=self._echo_emf
        ).install()
        self.invoker = FunctionInvoker(stack.functions, log=self._log)
        self.gateway = ApiGateway(
            stack.routes,
            self.invoker,
            api_keys=self.api_key_check,
            account_id=stack.account_id,
            now=self._now,
            log=self._log,
            unavailable=self._unavailable,
        )
        if stack.routes:
            header_timeout_s, body_timeout_s = self._read_timeouts
            self.server = ApiServer(
                self.gateway,
                *self._gateway_address,
                header_timeout_s=header_timeout_s,
                body_timeout_s=body_timeout_s,
            )
            self.server.start()
        sqs = aws_client("sqs", self.endpoint_url)
        self.pollers = [
            SqsPoller(
                mapping,
                self.invoker,
                aws_client("sqs", self.endpoint_url),
                stack.region,
                log=self._log,
                wait_time_s=self._sqs_wait_time_s,
            )
            for mapping in stack.sqs_mappings
        ]
        self.scheduler = Scheduler(
            stack.schedules,
            self.invoker,
            stack.account_id,
            stack.region,
            now=self._now,
            log=self._log,
        )
        self.sns = SnsDelivery(
            stack.subscriptions, stack.sns_taps, self.invoker, sqs, log=self._log, now=self._now
        )
        self.alarms = AlarmEvaluator(
            aws_client("cloudwatch", self.endpoint_url),
            aws_client("sns", self.endpoint_url),
            stack.account_id,
            stack.region,
            now=self._now,
            log=self._log,
            sqs=aws_client("sqs", self.endpoint_url),
        )
        self._started = True
        if self._run_threads:
            for poller in self.pollers:
                self._spawn(f"sqs-{poller.mapping.logical_id}", poller.run, self._stop)
            if stack.schedules:
                self._spawn("scheduler", self.scheduler.run, self._stop)
            if stack.sns_taps:
                self._spawn("sns-delivery", self.sns.run, self._stop)
            if stack.alarms:
                self._spawn("alarms", self.alarms.run, self._stop, self._alarm_interval_s)
            self._spawn("watchdog", self._watch)
        return self

    def _unavailable(self) -> str | None:
        if self._reprovisioning.is_set():
            return "the stack is being provisioned again"
        return None

    def _static_keys(self, stack: Stack) -> dict[str, str]:
        """The runtime's own key, accepted as the stack's key without asking moto."""
        if not self.api_key:
            return {}
        runtime = [key for key in stack.api_keys if key.runtime_key] or stack.api_keys
        return {self.api_key: runtime[0].key_id if runtime else "local-api-key"}

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"local-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watch(self) -> None:
        """Every ``aws_check_s``: is moto alive (start it again if not); every
        ``watchdog_interval_s``: does it still hold the stack (provision again if not)."""
        last_alive = time.monotonic()
        next_marker_check = last_alive + self._watchdog_interval_s
        next_restart, restart_wait_s = 0.0, self._aws_check_s
        while not self._stop.wait(self._aws_check_s if self._aws else self._watchdog_interval_s):
            try:
                if self._aws is not None:
                    if self._aws.alive():
                        last_alive = time.monotonic()
                    elif time.monotonic() >= next_restart:
                        # A moto that cannot start (its state unreadable, say) is tried again
                        # less and less often, up to every 30 s, not every second.
                        next_restart = time.monotonic() + restart_wait_s
                        restart_wait_s = min(30.0, restart_wait_s * 2)
                        self._restart_aws(last_alive)
                        last_alive = time.monotonic()
                        next_restart, restart_wait_s = 0.0, self._aws_check_s
                    else:
                        continue
                if time.monotonic() >= next_marker_check or self._aws is None:
                    next_marker_check = time.monotonic() + self._watchdog_interval_s
                    self.ensure_provisioned()
            except Exception as error:  # moto down for now: try again next round
                self._log(f"watchdog: {type(error).__name__}: {error}")

    def _restart_aws(self, last_alive: float) -> None:
        """Start the embedded AWS again (its state is restored from disk), have the pollers
        hand back what they held when it died, and provision again if it lost the stack."""
        assert self._aws is not None
        self._log(
            f"watchdog: moto (pid {self._aws.pid}) exited with code {self._aws.exit_code}: "
            "starting it again"
        )
        self._aws.restart()
        self._log(f"moto: started again on {self.endpoint_url} (pid {self._aws.pid})")
        for poller in self.pollers:
            poller.aws_restarted(since=last_alive)
        self.ensure_provisioned()

    def _release_unsettled(self) -> None:
        """A batch a poller still holds at shutdown (its handler outlived the join) is made
        visible again now, before moto saves its last state: otherwise the next ``make run``
        would find it hidden for the queue's whole visibility timeout."""
        for poller in self.pollers:
            try:
                released = poller.release_held(since=math.inf)
            except Exception as error:  # moto already gone: it comes back after the timeout
                self._log(f"stop: {poller.mapping.logical_id}: {type(error).__name__}: {error}")
                continue
            if released:
                self._log(f"stop: {released} unsettled message(s) made visible again")

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The emulator threads now running (empty once stopped)."""
        return tuple(self._threads)

    @property
    def gateway_url(self) -> str | None:
        return self.server.url if self.server else None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop threads and server, restore stdout, environment and sys.path. Idempotent."""
        self._stop.set()
        if self.server is not None:
            self.server.stop()
            self.server = None
        for thread in self._threads:
            thread.join(timeout=timeout_s)
        self._threads = []
        self._release_unsettled()
        if self.emf is not None:
            self.emf.uninstall()
            self.emf = None
        for name, previous in self._saved_env.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous
        self._saved_env = {}
        for path in self._added_paths:
            if path in sys.path:
                sys.path.remove(path)
        self._added_paths = []
        self._started = False

    def serve_forever(self) -> None:
        """Start, then block until Ctrl-C or SIGTERM; always stops cleanly."""
        self.start()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        try:
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
