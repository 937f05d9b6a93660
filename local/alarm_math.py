"""A small, safe evaluator for CloudWatch metric math, over aligned time series.

moto stores metric-math alarms but computes no expression, so the local alarm evaluator does
it here. Expressions are parsed with :mod:`ast` and only a whitelist of nodes is evaluated:
numbers, metric ids, ``+ - * /``, parentheses, comparisons, ``AND``/``OR``/``NOT``, and the
functions ``IF``, ``FILL``, ``SUM``, ``AVG``, ``MAX``, ``MIN``, ``ABS``. Never ``eval``.

A series is a list with one value per period (``None`` where the metric has no datapoint);
a number is broadcast. Missing values propagate through arithmetic, as CloudWatch drops
timestamps a series does not have; ``FILL`` fills them.

>>> evaluate("IF(total > 0, FILL(bad, 0) / total, 0)", {"bad": [None, 2.0], "total": [4.0, 4.0]})
[0.0, 0.5]
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["ExpressionError", "Series", "evaluate"]

Series = list[float | None]
Value = float | Series

_LOGICAL = [
    (re.compile(r"\bAND\b"), " and "),
    (re.compile(r"\bOR\b"), " or "),
    (re.compile(r"\bNOT\b"), " not "),
    (re.compile(r"&&"), " and "),
    (re.compile(r"\|\|"), " or "),
]
_ARITHMETIC: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_COMPARE: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


class ExpressionError(ValueError):
    """An expression outside the supported subset, or one that does not type-check."""


def _combine(left: Value, right: Value, fn: Callable[[float, float], float]) -> Value:
    def one(a: float | None, b: float | None) -> float | None:
        if a is None or b is None:
            return None
        try:
            return float(fn(a, b))
        except ZeroDivisionError:
            return None  # CloudWatch yields no datapoint for a division by zero

    if isinstance(left, list) and isinstance(right, list):
        if len(left) != len(right):
            raise ExpressionError("series of different lengths")
        return [one(a, b) for a, b in zip(left, right, strict=True)]
    if isinstance(left, list):
        return [one(a, float(right)) for a in left]  # type: ignore[arg-type]
    if isinstance(right, list):
        return [one(float(left), b) for b in right]
    result = one(left, right)
    if result is None:
        raise ExpressionError("division by zero between numbers")
    return result


def _map(value: Value, fn: Callable[[float], float]) -> Value:
    if isinstance(value, list):
        return [None if v is None else float(fn(v)) for v in value]
    return float(fn(value))


def _present(series: Series) -> list[float]:
    return [v for v in series if v is not None]


def _as_number(test: Callable[[float, float], bool]) -> Callable[[float, float], float]:
    return lambda a, b: 1.0 if test(a, b) else 0.0


def _across(series_list: list[Series], index: int) -> list[float]:
    return [value for series in series_list if (value := series[index]) is not None]


class _Evaluator:
    def __init__(self, metrics: Mapping[str, Series]) -> None:
        self.metrics = metrics

    def value(self, node: ast.AST) -> Any:
        method = getattr(self, f"_node_{type(node).__name__.lower()}", None)
        if method is None:
            raise ExpressionError(f"{type(node).__name__} is not allowed in metric math")
        return method(node)

    def _node_expression(self, node: ast.Expression) -> Any:
        return self.value(node.body)

    def _node_constant(self, node: ast.Constant) -> float:
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExpressionError(f"constant {node.value!r} is not a number")
        return float(node.value)

    def _node_name(self, node: ast.Name) -> Series:
        if node.id not in self.metrics:
            raise ExpressionError(f"unknown metric id {node.id!r}")
        return list(self.metrics[node.id])

    def _node_list(self, node: ast.List) -> list[Value]:
        return [self.value(item) for item in node.elts]

    def _node_binop(self, node: ast.BinOp) -> Value:
        fn = _ARITHMETIC.get(type(node.op))
        if fn is None:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
        return _combine(self.value(node.left), self.value(node.right), fn)

    def _node_unaryop(self, node: ast.UnaryOp) -> Value:
        operand = self.value(node.operand)
        if isinstance(node.op, ast.USub):
            return _map(operand, operator.neg)
        if isinstance(node.op, ast.UAdd):
            return operand  # type: ignore[no-any-return]
        if isinstance(node.op, ast.Not):
            return _map(operand, lambda v: 0.0 if v else 1.0)
        raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")

    def _node_compare(self, node: ast.Compare) -> Value:
        result: Value = 1.0
        left = self.value(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            fn = _COMPARE.get(type(op))
            if fn is None:
                raise ExpressionError(f"comparison {type(op).__name__} is not allowed")
            right = self.value(comparator)
            step = _combine(left, right, _as_number(fn))
            result = _combine(result, step, lambda a, b: 1.0 if a and b else 0.0)
            left = right
        return result

    def _node_boolop(self, node: ast.BoolOp) -> Value:
        values: list[Value] = [self.value(item) for item in node.values]
        if isinstance(node.op, ast.And):
            fn: Callable[[float, float], float] = lambda a, b: 1.0 if a and b else 0.0  # noqa: E731
        else:
            fn = lambda a, b: 1.0 if a or b else 0.0  # noqa: E731
        result = values[0]
        for value in values[1:]:
            result = _combine(result, value, fn)
        return result

    def _node_call(self, node: ast.Call) -> Value:
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise ExpressionError("only plain function calls are allowed")
        name = node.func.id.upper()
        handler = getattr(self, f"fn_{name.lower()}", None)
        if handler is None:
            raise ExpressionError(f"function {node.func.id} is not supported locally")
        return handler(node.args)  # type: ignore[no-any-return]

    # functions ----------------------------------------------------------------------------
    def fn_if(self, args: Sequence[ast.AST]) -> Value:
        if len(args) not in (2, 3):
            raise ExpressionError("IF takes a condition, a value and an optional other value")
        condition = self.value(args[0])
        when_true = self.value(args[1])
        when_false: Value | None = self.value(args[2]) if len(args) == 3 else None

        def pick(index: int, value: Value | None) -> float | None:
            if value is None:
                return None
            return value[index] if isinstance(value, list) else value

        if not isinstance(condition, list):
            chosen = when_true if condition else when_false
            if chosen is None:
                raise ExpressionError("IF without an else value needs a series condition")
            return chosen
        return [
            None if c is None else pick(i, when_true if c else when_false)
            for i, c in enumerate(condition)
        ]

    def fn_fill(self, args: Sequence[ast.AST]) -> Series:
        if len(args) != 2:
            raise ExpressionError("FILL takes a series and a value")
        series = self.value(args[0])
        if not isinstance(series, list):
            raise ExpressionError("FILL needs a series")
        if isinstance(args[1], ast.Name) and args[1].id.upper() == "REPEAT":
            filled: Series = []
            last: float | None = None
            for v in series:
                last = v if v is not None else last
                filled.append(last)
            return filled
        fill = self.value(args[1])
        if isinstance(fill, list):
            return [v if v is not None else f for v, f in zip(series, fill, strict=True)]
        return [v if v is not None else float(fill) for v in series]

    def _aggregate(self, args: Sequence[ast.AST], fn: Callable[[list[float]], float]) -> Value:
        if len(args) != 1:
            raise ExpressionError("aggregate functions take one argument")
        value = self.value(args[0])
        if isinstance(value, list) and value and isinstance(value[0], list):
            # An array of series: one series, aggregated per timestamp.
            series_list: list[Series] = value
            return [
                fn(points) if (points := _across(series_list, i)) else None
                for i in range(len(series_list[0]))
            ]
        if isinstance(value, list):
            present = _present(value)  # one series -> one number
            if not present:
                raise ExpressionError("aggregate of a series with no datapoints")
            return fn(present)
        return float(value)

    def fn_sum(self, args: Sequence[ast.AST]) -> Value:
        return self._aggregate(args, sum)

    def fn_avg(self, args: Sequence[ast.AST]) -> Value:
        return self._aggregate(args, lambda xs: sum(xs) / len(xs))

    def fn_max(self, args: Sequence[ast.AST]) -> Value:
        return self._aggregate(args, max)

    def fn_min(self, args: Sequence[ast.AST]) -> Value:
        return self._aggregate(args, min)

    def fn_abs(self, args: Sequence[ast.AST]) -> Value:
        if len(args) != 1:
            raise ExpressionError("ABS takes one argument")
        return _map(self.value(args[0]), abs)


def evaluate(expression: str, metrics: Mapping[str, Series]) -> Value:
    """Evaluate ``expression`` over the named series; a series or a single number comes back."""
    text = expression
    for pattern, replacement in _LOGICAL:
        text = pattern.sub(replacement, text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"cannot parse {expression!r}: {error.msg}") from error
    result = _Evaluator(metrics).value(tree)
    if isinstance(result, list) and result and isinstance(result[0], list):
        raise ExpressionError("an expression must give one series or one number")
    return result  # type: ignore[no-any-return]
