"""api_call: API Gateway in, Kisi call, Kisi's answer or a 202 out.

Thin by design: ``kisi_gateway.pipeline.http_api`` routes the event and shapes the answer,
the forwarder decides everything else; settings and the forwarder are built once per
container, on first use.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

from kisi_gateway.config import Settings
from kisi_gateway.observability import lambda_logger
from kisi_gateway.pipeline.forwarding import Forwarder
from kisi_gateway.pipeline.http_api import handle
from kisi_gateway.pipeline.telemetry import metric_batch

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = lambda_logger()


@cache
def settings() -> Settings:
    return Settings.from_env(os.environ)


@cache
def forwarder() -> Forwarder:
    from kisi_gateway.wiring import build_forwarder  # noqa: PLC0415 - first call, not import

    return build_forwarder(settings())


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    with metric_batch():  # the invocation's metrics: one EMF line, printed before it returns
        return handle(event, forwarder, settings())
