"""X-Ray traces that show where a call's time goes: the Kisi call, the store calls, the outcome.

The template turns X-Ray on (``Tracing: Active``). Here Powertools' :class:`Tracer` marks
what matters: a ``kisi`` subsegment around each attempt (annotated with Kisi's status or the
transport failure), one subsegment per AWS call (the X-Ray SDK's botocore patch: DynamoDB,
SQS, Secrets Manager, KMS, with operation and table), and the request's outcome on the
handler's own subsegment (the status and gateway code the caller got).

Cheap by construction: nothing here imports Powertools' tracer or the X-Ray SDK at import
time (cold start is measured). The tracer is built on first use, and only where it can work:
in Lambda, unless ``POWERTOOLS_TRACE_DISABLED`` says otherwise, and never under SAM local.
Everywhere else (tests, ``make run``, the bench) :func:`tracing` is a no-op.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

LOG = logging.getLogger("kisi_gateway")
Annotation = str | int | float | bool
_TRUTHY = frozenset({"1", "true", "yes", "on", "y", "t"})


class Span(Protocol):
    """A marked stretch of time that can carry indexed annotations."""

    def annotate(self, key: str, value: Annotation) -> None: ...


class Tracing(Protocol):
    """What the pipeline asks of tracing."""

    def span(self, name: str) -> Any:
        """A context manager yielding a :class:`Span` named ``name``."""
        ...


class _NoSpan:
    def annotate(self, key: str, value: Annotation) -> None:
        pass


class NoTracing:
    """Tracing off: every span is free and records nothing."""

    _SPAN = _NoSpan()

    @contextmanager
    def span(self, name: str) -> Iterator[Span]:
        yield self._SPAN


class _Subsegment:
    def __init__(self, subsegment: Any) -> None:
        self._subsegment = subsegment

    def annotate(self, key: str, value: Annotation) -> None:
        self._subsegment.put_annotation(key, value)


class PowertoolsTracing:
    """Spans as X-Ray subsegments through a Powertools ``Tracer`` (its ``provider``)."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer

    @contextmanager
    def span(self, name: str) -> Iterator[Span]:
        with self._tracer.provider.in_subsegment(name) as subsegment:
            yield _Subsegment(subsegment)


def enabled(environ: Mapping[str, str]) -> bool:
    """Can traces be sent from here? In Lambda (``LAMBDA_TASK_ROOT``), not under SAM local,
    and not turned off with ``POWERTOOLS_TRACE_DISABLED`` (Powertools' own rules)."""
    if environ.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in _TRUTHY:
        return False
    return bool(environ.get("LAMBDA_TASK_ROOT")) and not environ.get("AWS_SAM_LOCAL")


def build(environ: Mapping[str, str]) -> Tracing:
    """The tracing for this environment; the X-Ray SDK is imported only when it is on."""
    if not enabled(environ):
        return NoTracing()
    try:
        from aws_lambda_powertools import Tracer  # noqa: PLC0415 - only when tracing is on

        return _powertools(Tracer)
    except ImportError as exc:  # a layer built without the X-Ray SDK: run, untraced
        LOG.warning("tracing is on but cannot start", extra={"error": str(exc)})
        return NoTracing()


def _powertools(tracer_class: Any) -> Tracing:
    # auto_patch off: patching everything would also trace requests (the Kisi call has its
    # own span, annotated) and import modules the function never uses.
    tracer = tracer_class(auto_patch=False)
    tracer.patch(modules=("botocore",))  # one subsegment per AWS call
    return PowertoolsTracing(tracer)


_current: Tracing | None = None


def tracing() -> Tracing:
    """This execution environment's tracing, built on first use."""
    global _current  # noqa: PLW0603 - one per execution environment, like the tracer itself
    if _current is None:
        _current = build(os.environ)
    return _current
