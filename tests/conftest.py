"""Shared fixtures: sample events from events/, loaded as AWS sends them."""

import json
from pathlib import Path
from typing import Any

import pytest

EVENTS = Path(__file__).resolve().parent.parent / "events"


def load_event(name: str) -> dict[str, Any]:
    """A sample event from events/, fresh each time (tests may change it)."""
    return json.loads((EVENTS / f"{name}.json").read_text())


@pytest.fixture
def event():
    return load_event


# -- fuzz figures (tests/e2e/test_fuzz.py) ------------------------------------------------
# Each fuzz test attaches its counts with record_property("fuzz_figures", {...}); they are
# summed here (in the xdist controller too: this conftest is always loaded) and printed once
# at the end of the session.
_FUZZ_FIGURES: dict[str, int] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == "fuzz_figures" and isinstance(value, dict):
            for figure, count in value.items():
                _FUZZ_FIGURES[figure] = _FUZZ_FIGURES.get(figure, 0) + int(count)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FUZZ_FIGURES:
        terminalreporter.write_sep("-", "fuzz figures")
        terminalreporter.write_line(", ".join(f"{k}: {v}" for k, v in _FUZZ_FIGURES.items()))
