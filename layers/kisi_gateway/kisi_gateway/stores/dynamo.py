"""What every DynamoDB adapter shares: one conditional-write helper, one expression builder.

Every state change in the gateway is a conditional write, so that one writer wins each race.
A lost race is not an error: DynamoDB says ``ConditionalCheckFailedException`` (or, for a
transaction, ``TransactionCanceledException`` whose reasons are all conditions or conflicts,
or ``TransactionConflictException``). :func:`conditional` tells a lost race from a store that
cannot be reached, once, for the records, the budget and the guard alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

# Codes that mean "someone else wrote first", as opposed to "cannot write".
_RACE_CODES = frozenset({"ConditionalCheckFailedException", "TransactionConflictException"})
_RACE_REASONS = frozenset({"ConditionalCheckFailed", "TransactionConflict", "None"})

Item = Mapping[str, Any]
E = TypeVar("E", bound=Exception)


class StoreError(Exception):
    """A store could not be reached, or refused a call for a reason other than a lost race."""


@dataclass(frozen=True, slots=True)
class Lost:
    """A conditional write lost its race; ``item`` is what made it fail, when DynamoDB says."""

    item: Item | None = None


def error_code(exc: BaseException) -> str:
    """A short, secret-free name for a failure (``ProvisionedThroughputExceededException``)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def lost_race(exc: ClientError) -> bool:
    """Did this write fail only because another writer got there first?"""
    code = exc.response.get("Error", {}).get("Code", "")
    if code in _RACE_CODES:
        return True
    if code == "TransactionCanceledException":
        reasons = exc.response.get("CancellationReasons") or []
        codes = {str(reason.get("Code", "None")) for reason in reasons}
        return bool(codes) and codes <= _RACE_REASONS
    return False


def conditional(
    call: Callable[..., Any], request: Mapping[str, Any], error: Callable[[str], E]
) -> dict[str, Any] | Lost:
    """Run one write; its response, or :class:`Lost` when a condition failed.

    Anything else raises ``error(<code>)``, the calling store's own exception type, so the
    pipeline can tell "the store is down" (answer 503, requeue) from "someone else won".
    """
    try:
        response: dict[str, Any] = call(**request)
    except ClientError as exc:
        if lost_race(exc):
            # With ReturnValuesOnConditionCheckFailure=ALL_OLD the winner's item comes back.
            item: Any = exc.response.get("Item")
            return Lost(item)
        raise error(error_code(exc)) from exc
    except BotoCoreError as exc:
        raise error(error_code(exc)) from exc
    return response


def read(
    call: Callable[..., Any], request: Mapping[str, Any], error: Callable[[str], E]
) -> dict[str, Any]:
    """Run one read; any failure raises ``error(<code>)``."""
    try:
        response: dict[str, Any] = call(**request)
    except (ClientError, BotoCoreError) as exc:
        raise error(error_code(exc)) from exc
    return response


def n(value: float) -> dict[str, str]:
    """A DynamoDB number: the float's shortest exact decimal, never in exponent form."""
    if not math.isfinite(value):
        raise ValueError(f"cannot store {value!r}")
    if float(value).is_integer():
        return {"N": str(int(value))}
    return {"N": format(Decimal(repr(float(value))), "f")}


def s(value: str) -> dict[str, str]:
    return {"S": value}


def number(item: Item, name: str) -> float | None:
    """A number attribute of a low-level item; ``None`` when absent or unreadable."""
    raw = item.get(name)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("N"), str):
        return None
    try:
        value = float(raw["N"])
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def string(item: Item, name: str, default: str = "") -> str:
    raw = item.get(name)
    if isinstance(raw, Mapping) and isinstance(raw.get("S"), str):
        return str(raw["S"])
    return default


@dataclass
class Expression:
    """Builds one UpdateItem. Every attribute name goes through a placeholder (``status``,
    ``state``, ``until`` and ``reason`` are DynamoDB reserved words); values are named by role.
    """

    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    adds: list[str] = field(default_factory=list)

    def name(self, attr: str) -> str:
        self.names[f"#{attr}"] = attr
        return f"#{attr}"

    def value(self, key: str, value: Any) -> str:
        self.values[f":{key}"] = value
        return f":{key}"

    def set(self, attr: str, value: Any) -> None:
        self.sets.append(f"{self.name(attr)} = {self.value(attr, value)}")

    def set_or_remove(self, attr: str, value: Any | None) -> None:
        if value is None:
            self.removes.append(self.name(attr))
        else:
            self.set(attr, value)

    def update(
        self,
        table: str,
        key: Mapping[str, Any],
        condition: str | None,
        *,
        return_values: str = "ALL_NEW",
    ) -> dict[str, Any]:
        """The UpdateItem request; a failed condition returns the item as it was."""
        clauses = []
        if self.sets:
            clauses.append("SET " + ", ".join(self.sets))
        if self.adds:
            clauses.append("ADD " + ", ".join(self.adds))
        if self.removes:
            clauses.append("REMOVE " + ", ".join(self.removes))
        request: dict[str, Any] = {
            "TableName": table,
            "Key": dict(key),
            "UpdateExpression": " ".join(clauses),
            "ExpressionAttributeNames": self.names,
            "ReturnValues": return_values,
        }
        if self.values:
            request["ExpressionAttributeValues"] = self.values
        if condition is not None:
            request["ConditionExpression"] = condition
            request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return request
