"""CloudFormation intrinsic functions and conditions, resolved the way CloudFormation would.

The resolver holds what a ``Ref`` and a ``Fn::GetAtt`` return for each resource once that
resource exists, so provisioning creates resources in dependency order (see
:func:`references`) and resolves each one's properties just before creating it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NO_VALUE",
    "IntrinsicError",
    "Resolver",
    "creation_order",
    "parameter_values",
    "placeholder",
    "references",
]

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class IntrinsicError(ValueError):
    """An intrinsic function that cannot be resolved (unknown name, bad shape)."""


class _NoValue:
    """``AWS::NoValue``: the property (or list item) disappears."""

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE = _NoValue()


def parameter_values(
    template: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Template parameter defaults, replaced by ``overrides``; a parameter with neither fails.

    List types (``CommaDelimitedList``, ``List<...>``) become lists, as a ``Ref`` returns them.
    """
    overrides = dict(overrides or {})
    values: dict[str, Any] = {}
    for name, spec in (template.get("Parameters") or {}).items():
        if name in overrides:
            value = overrides.pop(name)
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise IntrinsicError(f"parameter {name} has no Default and no value was given")
        allowed = spec.get("AllowedValues")
        if allowed and str(value) not in [str(item) for item in allowed]:
            raise IntrinsicError(f"parameter {name}={value!r} is not one of {allowed}")
        kind = str(spec.get("Type", "String"))
        if (kind == "CommaDelimitedList" or kind.startswith("List<")) and isinstance(value, str):
            value = [item.strip() for item in value.split(",")] if value else []
        values[name] = value
    if overrides:
        raise IntrinsicError(f"unknown parameters: {', '.join(sorted(overrides))}")
    return values


def _sub_names(text: str) -> Iterable[str]:
    for match in _SUB_VARIABLE.finditer(text):
        name = match.group(1)
        if not name.startswith("!"):
            yield name.strip()


def references(value: Any) -> set[str]:
    """Names a value refers to through Ref, Fn::GetAtt and Fn::Sub (resources and others).

    >>> sorted(references({"Fn::Sub": "${Queue.Arn}/${AWS::Region}"}))
    ['AWS::Region', 'Queue']
    """
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= references(item)
    elif isinstance(value, dict):
        if len(value) == 1:
            key, arg = next(iter(value.items()))
            if key == "Ref" and isinstance(arg, str):
                return {arg}
            if key == "Fn::GetAtt":
                target = arg.split(".", 1)[0] if isinstance(arg, str) else arg[0]
                return {str(target)}
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                names = {name.split(".", 1)[0] for name in _sub_names(text)}
                return (names - set(variables)) | references(variables)
        for item in value.values():
            found |= references(item)
    return found


def creation_order(resources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Logical ids ordered so that each comes after everything it refers to or DependsOn.

    Ties keep template order. A cycle raises :class:`IntrinsicError` naming its members.
    """
    depends: dict[str, set[str]] = {}
    for logical_id, resource in resources.items():
        needs = references(resource.get("Properties", {}))
        depends_on = resource.get("DependsOn", [])
        needs |= {depends_on} if isinstance(depends_on, str) else set(depends_on)
        depends[logical_id] = {name for name in needs if name in resources and name != logical_id}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(depends):
        ready = [lid for lid in depends if lid not in done and depends[lid] <= done]
        if not ready:
            stuck = sorted(lid for lid in depends if lid not in done)
            raise IntrinsicError(f"circular dependency between {', '.join(stuck)}")
        order.extend(ready)
        done.update(ready)
    return order


@dataclass
class Resolver:
    """Resolves intrinsic functions against parameters, pseudo parameters and known resources.

    ``refs`` and ``attributes`` grow as resources are created; a reference to a resource not
    (yet) known raises :class:`IntrinsicError`, so nothing is created from a guess.
    """

    parameters: dict[str, Any]
    region: str
    account_id: str
    stack_name: str
    conditions: Mapping[str, Any] = field(default_factory=dict)
    mappings: Mapping[str, Any] = field(default_factory=dict)
    refs: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Resources that exist in the template but not locally: references to them resolve to a
    # visible placeholder instead of failing the whole stack (the report names them).
    unavailable: set[str] = field(default_factory=set)
    _condition_values: dict[str, bool] = field(default_factory=dict)

    @property
    def pseudo(self) -> dict[str, Any]:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": (
                f"arn:aws:cloudformation:{self.region}:{self.account_id}:"
                f"stack/{self.stack_name}/00000000-0000-0000-0000-000000000000"
            ),
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
        }

    def add_resource(self, logical_id: str, ref: Any, attributes: Mapping[str, Any]) -> None:
        """Record what ``Ref`` and ``Fn::GetAtt`` return for a resource."""
        self.refs[logical_id] = ref
        self.attributes[logical_id] = dict(attributes)

    # conditions -----------------------------------------------------------------------
    def condition(self, name: str) -> bool:
        """The value of a named condition from the template's ``Conditions``."""
        if name not in self._condition_values:
            if name not in self.conditions:
                raise IntrinsicError(f"unknown condition {name}")
            self._condition_values[name] = self._truth(self.conditions[name])
        return self._condition_values[name]

    def _truth(self, expression: Any) -> bool:
        if isinstance(expression, bool):
            return expression
        if not isinstance(expression, dict) or len(expression) != 1:
            raise IntrinsicError(f"not a condition: {expression!r}")
        key, arg = next(iter(expression.items()))
        if key == "Condition":
            return self.condition(arg)
        if key == "Fn::Equals":
            left, right = (self.resolve(item) for item in arg)
            return _scalar(left) == _scalar(right)
        if key == "Fn::Not":
            return not self._truth(arg[0])
        if key == "Fn::And":
            return all(self._truth(item) for item in arg)
        if key == "Fn::Or":
            return any(self._truth(item) for item in arg)
        raise IntrinsicError(f"{key} is not a condition function")

    # values -----------------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        """Resolve every intrinsic in ``value``; ``AWS::NoValue`` entries are dropped."""
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            key, arg = next(iter(value.items()))
            handler = _FUNCTIONS.get(key)
            if handler is not None:
                return handler(self, arg)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        if name in self.unavailable:
            return placeholder(name)
        raise IntrinsicError(f"Ref to unknown or not yet created {name}")

    def get_att(self, logical_id: str, attribute: str) -> Any:
        known = self.attributes.get(logical_id)
        if known is None and logical_id in self.unavailable:
            return placeholder(f"{logical_id}.{attribute}")
        if known is None:
            raise IntrinsicError(f"Fn::GetAtt on unknown or not yet created {logical_id}")
        if attribute not in known:
            raise IntrinsicError(f"{logical_id} has no attribute {attribute} locally")
        return known[attribute]

    def sub(self, text: str, variables: Mapping[str, Any]) -> str:
        local = {name: self.resolve(item) for name, item in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            name = name.strip()
            if name in local:
                return _text(local[name])
            if "." in name and name.split(".", 1)[0] not in self.parameters:
                target, attribute = name.split(".", 1)
                return _text(self.get_att(target, attribute))
            return _text(self.ref(name))

        return _SUB_VARIABLE.sub(replace, text)


def placeholder(name: str) -> str:
    """What a reference to a resource that does not exist locally resolves to."""
    return f"<{name} not available locally>"


def _scalar(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(_text(item) for item in value)
    return str(value)


def _fn_ref(resolver: Resolver, arg: Any) -> Any:
    return resolver.ref(str(arg))


def _fn_get_att(resolver: Resolver, arg: Any) -> Any:
    if isinstance(arg, str):
        arg = arg.split(".", 1)
    logical_id, attribute = resolver.resolve(arg[0]), resolver.resolve(arg[1])
    return resolver.get_att(str(logical_id), str(attribute))


def _fn_sub(resolver: Resolver, arg: Any) -> str:
    if isinstance(arg, str):
        return resolver.sub(arg, {})
    return resolver.sub(str(arg[0]), arg[1] if len(arg) > 1 else {})


def _fn_join(resolver: Resolver, arg: Any) -> str:
    delimiter, items = arg
    values = resolver.resolve(items)
    return str(delimiter).join(_text(item) for item in values)


def _fn_select(resolver: Resolver, arg: Any) -> Any:
    index, items = resolver.resolve(arg[0]), resolver.resolve(arg[1])
    return items[int(index)]


def _fn_split(resolver: Resolver, arg: Any) -> list[str]:
    delimiter, text = arg[0], resolver.resolve(arg[1])
    return str(text).split(str(delimiter))


def _fn_if(resolver: Resolver, arg: Any) -> Any:
    name, when_true, when_false = arg
    return resolver.resolve(when_true if resolver.condition(name) else when_false)


def _fn_find_in_map(resolver: Resolver, arg: Any) -> Any:
    name, top, second = (resolver.resolve(item) for item in arg[:3])
    try:
        return resolver.mappings[name][top][second]
    except KeyError as missing:
        raise IntrinsicError(f"Fn::FindInMap: {name}/{top}/{second} not found") from missing


def _fn_get_azs(resolver: Resolver, arg: Any) -> list[str]:
    region = resolver.resolve(arg) or resolver.region
    return [f"{region}{zone}" for zone in "abc"]


def _fn_base64(resolver: Resolver, arg: Any) -> str:
    return base64.b64encode(_text(resolver.resolve(arg)).encode()).decode()


def _fn_to_json_string(resolver: Resolver, arg: Any) -> str:
    return json.dumps(resolver.resolve(arg), separators=(",", ":"))


def _fn_length(resolver: Resolver, arg: Any) -> int:
    return len(resolver.resolve(arg))


def _fn_import_value(resolver: Resolver, arg: Any) -> Any:
    raise IntrinsicError(f"Fn::ImportValue {arg!r}: other stacks do not exist locally")


_FUNCTIONS = {
    "Ref": _fn_ref,
    "Fn::GetAtt": _fn_get_att,
    "Fn::Sub": _fn_sub,
    "Fn::Join": _fn_join,
    "Fn::Select": _fn_select,
    "Fn::Split": _fn_split,
    "Fn::If": _fn_if,
    "Fn::FindInMap": _fn_find_in_map,
    "Fn::GetAZs": _fn_get_azs,
    "Fn::Base64": _fn_base64,
    "Fn::ToJsonString": _fn_to_json_string,
    "Fn::Length": _fn_length,
    "Fn::ImportValue": _fn_import_value,
}
