"""Traces: on only in Lambda, free everywhere else, and marking the Kisi call and the outcome."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from kisi_gateway import tracing as tracing_module
from kisi_gateway.config import Settings
from kisi_gateway.pipeline.http_api import handle
from kisi_gateway.pipeline.kisi_http import KisiCall, KisiClient
from kisi_gateway.pipeline.replies import Reply, json_reply
from kisi_gateway.tracing import NoTracing, PowertoolsTracing, build, enabled

ROOT = Path(__file__).resolve().parents[2]
IN_LAMBDA = {"LAMBDA_TASK_ROOT": "/var/task"}


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),  # tests, make run, the bench
        (IN_LAMBDA, True),
        ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "1"}, False),
        ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "false"}, True),
        ({**IN_LAMBDA, "AWS_SAM_LOCAL": "true"}, False),
    ],
)
def test_tracing_is_on_only_where_xray_listens(environ: dict[str, str], on: bool) -> None:
    assert enabled(environ) is on


def test_off_means_no_op() -> None:
    tracing = build({})
    assert isinstance(tracing, NoTracing)
    with tracing.span("kisi") as span:
        span.annotate("kisi_status", 200)  # accepted, recorded nowhere


@dataclass
class FakeSubsegment:
    name: str
    annotations: dict[str, Any] = field(default_factory=dict)

    def put_annotation(self, key: str, value: Any) -> None:
        self.annotations[key] = value


@dataclass
class FakeProvider:
    """What a Powertools Tracer's provider (the X-Ray recorder) offers: subsegments."""

    opened: list[FakeSubsegment] = field(default_factory=list)

    @contextmanager
    def in_subsegment(self, name: str) -> Iterator[FakeSubsegment]:
        subsegment = FakeSubsegment(name)
        self.opened.append(subsegment)
        yield subsegment


@dataclass
class FakeTracer:
    provider: FakeProvider = field(default_factory=FakeProvider)


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    tracer = FakeTracer()
    monkeypatch.setattr(tracing_module, "_current", PowertoolsTracing(tracer))
    return tracer.provider


class OneAnswer:
    def __init__(self, status: int) -> None:
        self.status = status

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        answer = requests.Response()
        answer.status_code = self.status
        answer._content = b"[]"
        answer._content_consumed = True
        return answer


def test_the_kisi_call_is_a_span_with_its_status(provider: FakeProvider) -> None:
    KisiClient("https://api.kisi.io", session=OneAnswer(429)).send(KisiCall("GET", "/locks"))
    [span] = provider.opened
    assert span.name == "kisi"
    assert span.annotations == {"kisi_method": "GET", "kisi_status": 429, "kisi_too_large": False}


class Answering:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply

    def forward(self, call: Any, context: Any) -> Reply:
        return self.reply

    def lookup(self, request_id: str, context: Any) -> Reply:
        return self.reply


def proxy_event(method: str = "GET", path: str = "/kisi/locks") -> dict[str, Any]:
    return {"httpMethod": method, "path": path, "headers": {}, "body": None,
            "requestContext": {"path": "/Prod" + path, "identity": {"apiKeyId": "k"}}}


def test_the_outcome_is_annotated_on_the_request_span(provider: FakeProvider) -> None:
    reply = json_reply(200, [], {"X-Gateway-Attempts": "2"})
    answer = handle(proxy_event(), lambda: Answering(reply), Settings())
    assert answer["statusCode"] == 200
    [span] = provider.opened
    assert (span.name, span.annotations) == ("request", {"status": 200, "attempts": 2})


def test_a_gateway_error_is_annotated_with_its_code(provider: FakeProvider) -> None:
    answer = handle(proxy_event("HEAD"), lambda: Answering(json_reply(200, [])), Settings())
    assert json.loads(answer["body"])["code"] == "9e0450"
    [span] = provider.opened
    assert span.annotations == {"status": 405, "attempts": 0, "gateway_code": "9e0450"}


def test_importing_the_handlers_loads_no_tracer() -> None:
    # Cold start is measured: the X-Ray SDK loads, and the tracer is built, on first use only
    # (in Lambda, where LAMBDA_TASK_ROOT is set, as here).
    code = (
        "import sys, api_call, retry_worker, metrics; from kisi_gateway import tracing; "
        "print(sorted(m for m in sys.modules if m.startswith('aws_xray_sdk')), "
        "tracing._current)"
    )
    path = ["layers/kisi_gateway", "functions/api_call", "functions/retry_worker",
            "functions/metrics"]
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": ":".join(str(ROOT / p) for p in path), "LAMBDA_TASK_ROOT": "/x",
             "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] None"


def test_in_lambda_the_tracer_is_powertools_with_aws_calls_patched() -> None:
    # In a child process: patching botocore is process-wide.
    code = (
        "import botocore.client, kisi_gateway.tracing as t; tracing = t.tracing(); "
        "print(type(tracing).__name__, "
        "type(vars(botocore.client.BaseClient)['_make_api_call']).__name__)"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT / "layers/kisi_gateway"), "LAMBDA_TASK_ROOT": "/x",
             "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["PowertoolsTracing", "FunctionWrapper"]  # X-Ray's wrapper
