"""README prints the record's life as core/lifecycle.LIFE has it: the two cannot drift apart."""

from __future__ import annotations

from pathlib import Path

from kisi_gateway.core.lifecycle import LIFE, Condition, Row

README = Path(__file__).resolve().parents[2] / "README.md"

CONDITIONS = {
    "absent": "no record with this id",
    "same_attempts": "no attempt recorded since the writer read it",
    "lease_lapsed": "the api_call's lease lapsed",
    "attempt_free": "attempt n+1 unclaimed, or its claim lapsed",
    "never_claimed": "no worker ever claimed an attempt",
}


def _condition(condition: Condition) -> str:
    said = [text for name, text in CONDITIONS.items() if getattr(condition, name)]
    return "; ".join(said) or "none"


def _cell(row: Row) -> str:
    if row.after is None:
        return "(deleted)"
    return " / ".join(sorted(status.value for status in row.after))


def render() -> str:
    """LIFE as the markdown table README prints."""
    lines = ["| state | event | next | store condition (besides \"still in this state\") |",
             "|---|---|---|---|"]
    for row in LIFE:
        state = row.state.value if row.state is not None else "(none)"
        lines.append(f"| {state} | `{row.event.value}` | {_cell(row)} | "
                     f"{_condition(row.condition)} |")
    return "\n".join(lines)


def test_every_condition_flag_has_words() -> None:
    assert set(CONDITIONS) == set(Condition.__dataclass_fields__)


def test_readme_prints_the_lifecycle_table() -> None:
    table = render()
    assert table in README.read_text(), f"README's lifecycle table should read:\n{table}"
