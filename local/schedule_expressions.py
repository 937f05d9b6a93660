"""EventBridge schedule expressions: ``rate(...)`` and ``cron(...)``, as pure functions.

>>> from datetime import datetime, UTC
>>> next_fire("rate(5 minutes)", datetime(2024, 1, 1, 0, 0, tzinfo=UTC))
datetime.datetime(2024, 1, 1, 0, 5, tzinfo=datetime.timezone.utc)
>>> next_fire("cron(0 12 * * ? *)", datetime(2024, 1, 1, 13, 0, tzinfo=UTC))
datetime.datetime(2024, 1, 2, 12, 0, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

__all__ = ["ScheduleExpressionError", "next_fire"]

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    name: index + 1
    for index, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}
# EventBridge numbers days of the week 1-7 starting on Sunday.
_DAYS = {
    name: index + 1 for index, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))
}
# How far ahead a cron expression is searched (EventBridge allows years up to 2199).
_SEARCH_DAYS = 366 * 5


class ScheduleExpressionError(ValueError):
    """An expression this emulator cannot schedule (malformed, or L/W/# cron features)."""


def _values(field: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    if field in ("*", "?"):
        return set(range(low, high + 1))
    result: set[int] = set()
    for part in field.split(","):
        if any(mark in part for mark in ("L", "W", "#")) and part.upper() not in names:
            raise ScheduleExpressionError(f"cron feature in {part!r} is not emulated")
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-", 1)
            start, end = _number(first, names), _number(last, names)
        else:
            start = _number(base, names)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high):
            raise ScheduleExpressionError(f"{part!r} is outside {low}-{high}")
        result.update(range(start, end + 1, step))
    return result


def _number(text: str, names: dict[str, int]) -> int:
    text = text.strip().upper()
    if text in names:
        return names[text]
    if not text.isdigit():
        raise ScheduleExpressionError(f"{text!r} is not a number")
    return int(text)


def _cron_next(fields: list[str], after: datetime) -> datetime:
    if len(fields) != 6:
        raise ScheduleExpressionError("cron takes 6 fields: minutes hours day month weekday year")
    minutes = sorted(_values(fields[0], 0, 59, {}))
    hours = sorted(_values(fields[1], 0, 23, {}))
    days = _values(fields[2], 1, 31, {})
    months = _values(fields[3], 1, 12, _MONTHS)
    weekdays = _values(fields[4], 1, 7, _DAYS)
    years = _values(fields[5], 1970, 2199, {})
    if "?" not in (fields[2], fields[4]):
        raise ScheduleExpressionError("one of day-of-month and day-of-week must be '?'")
    start = after.replace(second=0, microsecond=0)
    for offset in range(_SEARCH_DAYS):
        day = start + timedelta(days=offset)
        weekday = (day.weekday() + 1) % 7 + 1  # Monday=0 in Python -> 2 in EventBridge
        if day.year not in years or day.month not in months:
            continue
        if day.day not in days or weekday not in weekdays:
            continue
        for hour in hours:
            for minute in minutes:
                candidate = day.replace(hour=hour, minute=minute)
                if candidate > after:
                    return candidate
    raise ScheduleExpressionError("cron expression never fires in the next five years")


def next_fire(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` at which ``expression`` fires (UTC)."""
    text = expression.strip()
    rate = _RATE.match(text)
    if rate:
        amount = int(rate.group(1))
        if amount <= 0:
            raise ScheduleExpressionError("a rate must be positive")
        return after + timedelta(seconds=amount * _UNIT_SECONDS[rate.group(2).rstrip("s")])
    cron = _CRON.match(text)
    if cron:
        return _cron_next(cron.group(1).split(), after)
    raise ScheduleExpressionError(f"not a schedule expression: {expression!r}")
