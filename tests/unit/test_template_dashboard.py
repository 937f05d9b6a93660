"""The dashboard's body is valid JSON once CloudFormation substitutes it, and every metric it
shows is one the gateway emits."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kisi_gateway.pipeline import telemetry
from tests.unit.test_template_policy import load

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def _body() -> dict[str, object]:
    dashboard = load(TEMPLATE.read_text())["Resources"]["Dashboard"]["Properties"]
    text, names = dashboard["DashboardBody"]["Fn::Sub"]
    for name in [*names, "AWS::Region"]:
        text = text.replace("${" + name + "}", f"<{name}>")
    assert "${" not in text, "a substitution the template does not define"
    body: dict[str, object] = json.loads(text)
    return body


def test_the_body_is_json_with_widgets() -> None:
    assert len(_body()["widgets"]) >= 6  # type: ignore[arg-type]


def test_every_gateway_metric_shown_is_emitted() -> None:
    text = json.dumps(_body())
    shown = set(re.findall(r'"KisiGateway", "(\w+)"', text))
    shown |= set(re.findall(r'MetricName=\\"(\w+)\\"', text))
    source = Path(telemetry.__file__).read_text() + (
        Path(telemetry.__file__).parent / "monitoring.py").read_text()
    emitted = set(re.findall(r'"([A-Z][A-Za-z]+)"', source))
    assert {"AttemptsByTenant", "BadRequestsByTenant"} <= shown
    assert shown <= emitted, f"shown but never emitted: {sorted(shown - emitted)}"
