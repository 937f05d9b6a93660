"""Call a function's handler in-process, the way the Lambda Python runtime would.

The event and the result pass through JSON, as they do on Lambda (a handler never sees a
Python object the service could not have sent, and a result Lambda could not serialize is an
error here too). The context object mirrors ``awslambdaric``'s ``LambdaContext``.
A handler that runs past its Timeout is reported as timed out: a thread cannot be killed, so
it finishes, but its result is discarded exactly as Lambda would discard it.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from local.stack import FunctionSpec

__all__ = ["FunctionInvoker", "HandlerError", "Invocation", "LambdaContext"]


class HandlerError(RuntimeError):
    """The handler could not be loaded, raised, timed out or returned something unserializable."""


class LambdaContext:
    """The ``context`` argument of a handler (names as in the Lambda Python runtime)."""

    def __init__(
        self,
        spec: FunctionSpec,
        request_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        # The Lambda runtime reads this from AWS_LAMBDA_FUNCTION_MEMORY_SIZE: a string.
        self.memory_limit_in_mb = str(spec.memory_mb)
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = f"local/[$LATEST]{request_id.replace('-', '')}"
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._clock = clock
        self._deadline = clock() + spec.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))


@dataclass(frozen=True)
class Invocation:
    """The outcome of one invocation: a result, or an error (never both)."""

    function: str
    request_id: str
    result: Any
    error: str | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.error is None


class FunctionInvoker:
    """Loads handlers lazily (``module.function``) and invokes them with a Lambda context."""

    def __init__(
        self,
        functions: Mapping[str, FunctionSpec],
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    ) -> None:
        self._functions = functions
        self._clock = clock
        self._log = log
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {}
        self._lock = threading.Lock()

    def spec(self, function: str) -> FunctionSpec:
        return self._functions[function]

    def handler(self, function: str) -> Callable[[Any, Any], Any]:
        """Import the handler on first use (``dir/module.attr`` or ``pkg.module.attr``)."""
        with self._lock:
            if function not in self._handlers:
                spec = self._functions[function]
                module_name, _, attribute = spec.handler.rpartition(".")
                if not module_name:
                    raise HandlerError(
                        f"{function}: handler {spec.handler!r} is not module.function"
                    )
                dotted = module_name.replace("/", ".")
                if dotted in sys.modules:
                    # A new invoker is a cold start: module-level state (cached settings,
                    # clients) must not carry over from another stack in this process.
                    module = importlib.reload(sys.modules[dotted])
                else:
                    module = importlib.import_module(dotted)
                self._handlers[function] = getattr(module, attribute)
            return self._handlers[function]

    def invoke(self, function: str, event: Any) -> Invocation:
        """Invoke a function with ``event``; errors come back in the Invocation, not raised."""
        spec = self._functions[function]
        request_id = str(uuid.uuid4())
        started = self._clock()
        try:
            payload = json.loads(json.dumps(event))
            handler = self.handler(function)
            context = LambdaContext(spec, request_id, self._clock)
            raw = handler(payload, context)
            result = json.loads(json.dumps(raw)) if raw is not None else None
            elapsed = self._clock() - started
            if elapsed > spec.timeout_s:
                raise HandlerError(f"Task timed out after {spec.timeout_s:.2f} seconds")
        except Exception as error:
            duration_ms = (self._clock() - started) * 1000
            self._log(
                f"{function} {request_id} failed after {duration_ms:.0f} ms: "
                f"{type(error).__name__}: {error}\n{traceback.format_exc().rstrip()}"
            )
            return Invocation(
                function, request_id, None, f"{type(error).__name__}: {error}", duration_ms
            )
        return Invocation(function, request_id, result, None, elapsed * 1000)
