"""Load a CloudFormation/SAM template, turning short-form tags into their long form.

``!Ref X`` becomes ``{"Ref": "X"}``, ``!GetAtt A.B`` becomes ``{"Fn::GetAtt": ["A", "B"]}``
and every other ``!Tag`` becomes ``{"Fn::Tag": ...}``, which is what CloudFormation itself does
before it reads the template (and what samtranslator expects to receive).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

__all__ = ["load_template", "loads_template"]

# Tags whose long form is not "Fn::<Tag>".
_SPECIAL = {"Ref": "Ref", "Condition": "Condition"}
_FN_TAGS = (
    "And",
    "Base64",
    "Cidr",
    "Equals",
    "FindInMap",
    "GetAtt",
    "GetAZs",
    "If",
    "ImportValue",
    "Join",
    "Length",
    "Not",
    "Or",
    "Select",
    "Split",
    "Sub",
    "ToJsonString",
    "Transform",
)


class _TemplateLoader(yaml.SafeLoader):  # type: ignore[misc]
    """A SafeLoader that knows the CloudFormation intrinsic function tags."""


def _construct(tag: str) -> Any:
    key = _SPECIAL.get(tag, f"Fn::{tag}")

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if tag == "GetAtt":
                # "!GetAtt Resource.Attribute" -> ["Resource", "Attribute"]; attributes may
                # themselves contain dots (Endpoint.Address), so split at the first dot only.
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {key: value}

    return construct


for _tag in (*_SPECIAL, *_FN_TAGS):
    _TemplateLoader.add_constructor(f"!{_tag}", _construct(_tag))


def _no_timestamps(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    # CloudFormation keeps "2010-09-09" a string; YAML 1.1 would make it a date.
    return loader.construct_scalar(node)


_TemplateLoader.add_constructor("tag:yaml.org,2002:timestamp", _no_timestamps)


def loads_template(text: str) -> dict[str, Any]:
    """Parse template text (YAML or JSON) into a dict with long-form intrinsics.

    >>> loads_template("A: !GetAtt Queue.Arn")
    {'A': {'Fn::GetAtt': ['Queue', 'Arn']}}
    """
    is_json = text.lstrip().startswith("{")
    # A SafeLoader subclass: no arbitrary Python objects.
    data = json.loads(text) if is_json else yaml.load(text, Loader=_TemplateLoader)  # noqa: S506
    if not isinstance(data, dict):
        raise ValueError("a template must be a mapping at its top level")
    return data


def load_template(path: str | Path) -> dict[str, Any]:
    """Read and parse a template file; see :func:`loads_template`."""
    return loads_template(Path(path).read_text(encoding="utf-8"))
