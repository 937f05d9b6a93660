"""The metric math evaluator: a table of expressions, and what it must refuse."""

import pytest

from local.alarm_math import ExpressionError, evaluate

SERIES = {
    "bad": [None, 2.0, 6.0],
    "total": [0.0, 4.0, 10.0],
    "m1": [1.0, 2.0, 3.0],
    "m2": [3.0, None, 1.0],
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("m1 + 1", [2.0, 3.0, 4.0]),
        ("(m1 + m2) * 2", [8.0, None, 8.0]),
        ("m1 - m2", [-2.0, None, 2.0]),
        ("-m1", [-1.0, -2.0, -3.0]),
        ("m1 / 0", [None, None, None]),
        ("bad / total", [None, 0.5, 0.6]),
        ("FILL(bad, 0)", [0.0, 2.0, 6.0]),
        ("FILL(m2, REPEAT)", [3.0, 3.0, 1.0]),
        ("IF(total > 0, FILL(bad, 0) / total, 0)", [0.0, 0.5, 0.6]),
        ("IF(m1 >= 2, 1, 0)", [0.0, 1.0, 1.0]),
        ("IF(m1 > 1 AND m1 < 3, m1, 0)", [0.0, 2.0, 0.0]),
        ("IF(m1 == 1 OR m1 == 3, 10, 20)", [10.0, 20.0, 10.0]),
        ("IF(m1 != 2, m1)", [1.0, None, 3.0]),
        ("m1 > 1", [0.0, 1.0, 1.0]),
        ("SUM([m1, m2])", [4.0, 2.0, 4.0]),
        ("MAX([m1, m2])", [3.0, 2.0, 3.0]),
        ("MIN([m1, m2])", [1.0, 2.0, 1.0]),
        ("SUM(m1)", 6.0),
        ("MAX(m1)", 3.0),
        ("AVG(m1)", 2.0),
        ("ABS(m1 - 3)", [2.0, 1.0, 0.0]),
        ("100 * SUM(m1) / 4", 150.0),
        ("2.5", 2.5),
    ],
)
def test_expression_table(expression, expected):
    assert evaluate(expression, SERIES) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",  # calls of anything but the listed functions
        "m1.real",  # attribute access
        "m1[0]",  # subscripts
        "lambda: 1",
        "unknown_id + 1",
        "'text'",
        "RATE(m1)",  # a real CloudWatch function this evaluator does not offer
        "m1 +",
        "[m1, m2]",  # an array is not a result
        "1 / 0",
    ],
)
def test_refuses_what_it_does_not_understand(expression):
    with pytest.raises(ExpressionError):
        evaluate(expression, SERIES)
