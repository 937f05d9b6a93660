"""metrics: a schedule tick or an alarm change in, rates, alarms, notifications and guard out.

Thin by design: the event says which of the two jobs to do; ``kisi_gateway.pipeline.monitoring``
does
it. Events of any other shape are logged and ignored, never retried.
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import TYPE_CHECKING, Any

from kisi_gateway.config import Settings
from kisi_gateway.observability import lambda_logger
from kisi_gateway.pipeline.monitoring import Monitor, parse_alarm_event

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = lambda_logger()


@cache
def monitor() -> Monitor:
    from kisi_gateway.wiring import build_monitor  # noqa: PLC0415 - first call, not import

    return build_monitor(Settings.from_env(os.environ))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = time.time()
    if event.get("detail-type") == "Scheduled Event":
        return {"schedule": monitor().on_schedule(now)}
    changes = parse_alarm_event(event)
    if changes:
        return {"alarms": [monitor().on_alarm(change, now) for change in changes]}
    logger.warning("ignored an event of unknown shape", extra={"keys": sorted(event)[:10]})
    return {"ignored": True}
