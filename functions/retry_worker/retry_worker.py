"""retry_worker: an SQS batch of deferred requests in, partial batch failures out.

Thin by design: Powertools' Batch utility drives the records and reports
``batchItemFailures``; ``kisi_gateway.pipeline.retrying`` decides each message. A message that is to
come back later (its visibility already set to the next delay) is reported as a failure so
SQS keeps it; a finished one is deleted.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from kisi_gateway.config import Settings
from kisi_gateway.core.records import RetryMessage
from kisi_gateway.observability import lambda_logger
from kisi_gateway.pipeline.retrying import Disposition, RetryWorker
from kisi_gateway.pipeline.telemetry import metric_batch

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = lambda_logger()
# A batch whose every message waits for a later attempt is not a failed invocation.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class ComeBackLaterError(Exception):
    """Not an error: the message waits in SQS for its next attempt."""


@cache
def worker() -> RetryWorker:
    from kisi_gateway.wiring import build_worker  # noqa: PLC0415 - first call, not import

    return build_worker(Settings.from_env(os.environ))


def record_handler(record: SQSRecord) -> None:
    message = RetryMessage.from_json(record.body)
    if worker().process(message, record.receipt_handle) is Disposition.LATER:
        raise ComeBackLaterError(message.request_id)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    with metric_batch():  # the batch's metrics share EMF lines, printed before it returns
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
