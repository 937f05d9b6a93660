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
