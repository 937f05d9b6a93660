"""Every example in the library's docstrings runs, so documentation cannot drift from code."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import kisi_gateway

MODULES = sorted(
    name for _, name, is_package in pkgutil.walk_packages(
        kisi_gateway.__path__, prefix="kisi_gateway."
    ) if not is_package
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def test_the_decision_modules_have_examples() -> None:
    """The pure core documents itself with examples; a module losing all of them is noticed."""
    for name in ("kisi_gateway.core.ratelimit", "kisi_gateway.core.lifecycle",
                 "kisi_gateway.core.backoff", "kisi_gateway.core.policy"):
        assert doctest.testmod(importlib.import_module(name)).attempted > 0, name
