"""What a million calls cost on AWS, from what the gateway used in a simulated run.

The virtual-time gateway (:mod:`bench.gateway`) meters every resource a request uses, on the
request it serves: API Gateway requests, Lambda invocations and their duration, DynamoDB
read and write request units, SQS requests and log bytes. Each store call of the in-memory
stores is priced as the deployed adapter makes it (``METERING`` says how, adapter by
adapter). Prices are list prices; the date and region are in ``PRICES_AS_OF``.

Two kinds of request are priced apart: *synchronous* (the caller got Kisi's answer from
api_call) and *deferred* (api_call answered 202 and retry_worker finished it). Beside them,
the same traffic through EventBridge API destinations, which has no synchronous answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields

from kisi_gateway.pipeline.telemetry import NAMESPACE, EmfDocument

MILLION = 1_000_000
PRICES_AS_OF = "list prices of AWS's pricing pages, us-east-1, on-demand, as of 2025-06 " \
    "(DynamoDB after its 1 Nov 2024 on-demand cut), free tiers left out; not re-read live"
# USD per unit. Sources: the AWS pricing pages of each service, us-east-1.
PRICE = {
    "api_requests": 3.50 / MILLION,  # API Gateway REST API (the template's), first 333 M/month
    "lambda_invocations": 0.20 / MILLION,  # Lambda requests
    "lambda_gb_s": 0.0000166667,  # Lambda x86_64 (the template's), per GB-second
    "rru": 0.125 / MILLION,  # DynamoDB on-demand read request unit
    "wru": 0.625 / MILLION,  # DynamoDB on-demand write request unit
    "sqs_requests": 0.40 / MILLION,  # SQS standard queue, per request (64 KB chunk)
    "log_bytes": 0.50 / 1024**3,  # CloudWatch Logs standard ingestion, per GB
}
EVENTBRIDGE_EVENT = 1.00 / MILLION  # PutEvents, custom event up to 64 KB
API_DESTINATION_INVOCATION = 0.20 / MILLION  # EventBridge API destinations, per invocation
LAMBDA_MEMORY_GB = 256 / 1024  # template.yaml Globals: MemorySize 256 (both runners)
PLATFORM_LOG_BYTES = 300  # Lambda's START/END/REPORT lines per invocation, roughly (assumed)
# An EMF document's envelope (timestamp, the service dimension, the braces): once per
# invocation, as the handlers print one document per invocation (metric_batch).
_ENVELOPE = EmfDocument(NAMESPACE, 1_700_000_000_000, root={"service": "kisi-gateway"})
EMF_ENVELOPE_BYTES = len(_ENVELOPE.line()) + 1

METERING = (
    ("API Gateway", "one REST request per api_call invocation; the caller's polls of "
     "`GET /requests/{id}` for a deferred request are not counted"),
    ("Lambda", "api_call: from the call to its answer, on the virtual clock (waits for a "
     "send slot and inline retries included, as Lambda bills them), rounded up to 1 ms; "
     "retry_worker: the time spent on each message, and each invocation shared by its batch; "
     "256 MB each; the gateway's own CPU (section 4) and cold starts not added"),
    ("DynamoDB", "`DynamoSendBudget.acquire`: one conditional UpdateItem per granted booking "
     "(1 WRU), planned from the Lambda's last view of the bucket, with no read; a refusal "
     "planned from an old view is checked with one consistent read (1 RRU); a route with a "
     "rate of its own reads both items and writes them in one transaction (2 RRU, 4 WRU); "
     "`observe`: a read and a write per throttled bucket after a 429, nothing after a "
     "success; `DynamoGuard.check`: one eventually consistent `BatchGetItem` of 2 scopes "
     "(1 RRU) per check, counted on every check although the deployed guard reuses a proven "
     "verdict for up to 1 s per Lambda (with many Lambdas each seeing a call every few "
     "seconds, it rarely would); `observe`: a write per 401 and per trip; known-bad "
     "screen: an eventually consistent GetItem per send (0.5 RRU), an UpdateItem per "
     "refusal remembered or path cleared (1 WRU); records: `create` a `PutItem`, `get` a "
     "consistent `GetItem`, `apply` a conditional `UpdateItem`; every item under 1 KB"),
    ("SQS", "`SendMessage` per enqueue and per dead letter, `ChangeMessageVisibility` per "
     "postpone; per worker invocation one `ReceiveMessage` and one `DeleteMessageBatch`, "
     "shared by its batch; the event source's empty polls (a fixed cost per month) left out"),
    ("CloudWatch Logs", "every log record of the `kisi_gateway` logger at INFO, formatted by "
     "Powertools' JSON formatter with the Lambda context keys; the EMF metrics as the "
     "handlers print them (one document per invocation: its envelope once, and each value "
     "as one more metric in it, which overstates repeats a little); about 300 bytes of "
     "Lambda's own lines per invocation"),
)


@dataclass
class Usage:
    """Resources used by some requests (or one): what AWS bills."""

    requests: int = 0
    api_requests: float = 0.0
    lambda_invocations: float = 0.0
    lambda_gb_s: float = 0.0
    rru: float = 0.0
    wru: float = 0.0
    sqs_requests: float = 0.0
    log_bytes: float = 0.0

    def add(self, other: Usage) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def lambda_run(self, seconds: float, share: float = 1.0) -> None:
        """An invocation's ``share`` (a batch's worker invocation is shared), and its time."""
        self.lambda_invocations += share
        self.lambda_gb_s += math.ceil(seconds * 1000) / 1000 * LAMBDA_MEMORY_GB
        self.log_bytes += share * (PLATFORM_LOG_BYTES + EMF_ENVELOPE_BYTES)


def total(usages: Iterable[Usage]) -> Usage:
    summed = Usage()
    for usage in usages:
        summed.add(usage)
    return summed


def per_million(usage: Usage) -> dict[str, float]:
    """USD per million requests of this kind, by line item."""
    if not usage.requests:
        return {}
    return {name: getattr(usage, name) * price * MILLION / usage.requests
            for name, price in PRICE.items()}


def eventbridge_per_million(attempts_per_call: float) -> float:
    """USD per million calls put on a bus and delivered by an API destination.

    One custom event each, and one invocation per delivery attempt (EventBridge retries a
    429 or 5xx itself; each attempt is assumed to be billed as an invocation).
    """
    return MILLION * (EVENTBRIDGE_EVENT + attempts_per_call * API_DESTINATION_INVOCATION)


LINE_ITEMS = (
    ("api_requests", "API Gateway requests"),
    ("lambda_invocations", "Lambda invocations"),
    ("lambda_gb_s", "Lambda GB-seconds"),
    ("rru", "DynamoDB read units"),
    ("wru", "DynamoDB write units"),
    ("sqs_requests", "SQS requests"),
    ("log_bytes", "log bytes"),
)


def _usd(value: float) -> str:
    return f"${value:,.2f}"


def breakdown_rows(by_kind: dict[str, Usage]) -> list[list[str]]:
    """One row per line item: the amount per call and USD per million calls, by kind."""
    kinds = kinds_present(by_kind)
    costs = {kind: per_million(by_kind[kind]) for kind in kinds}
    rows: list[list[str]] = []
    for name, label in LINE_ITEMS:
        row = [label]
        for kind in kinds:
            usage = by_kind[kind]
            amount = getattr(usage, name) / usage.requests if usage.requests else 0.0
            row += [f"{amount:,.3f}" if name != "log_bytes" else f"{amount:,.0f}",
                    _usd(costs[kind].get(name, 0.0))]
        rows.append(row)
    totals = ["**total**"]
    for kind in kinds:
        totals += ["", f"**{_usd(sum(costs[kind].values()))}**"]
    rows.append(totals)
    return rows


def kinds_present(by_kind: dict[str, Usage]) -> list[str]:
    """The kinds of request that occurred, synchronous first."""
    return [kind for kind in ("synchronous", "deferred")
            if kind in by_kind and by_kind[kind].requests]
