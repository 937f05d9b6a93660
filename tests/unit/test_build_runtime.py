"""The build ships bytecode for the Python that template.yaml deploys on, and for nothing else.

A ``.pyc`` is read only by the Python version that wrote it: bytecode compiled by 3.12 is
ignored by a python3.13 runtime, silently, and every cold start compiles from source again. So
the version ``make build`` compiles with (``LAMBDA_PYTHON`` in the Makefile, handed down to the
layer's Makefile) and every ``Runtime`` in the template must agree, and every artifact built by a
Makefile must compile its bytecode.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from local.sam import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]


def makefile_python(path: Path, operator: str) -> str:
    """The ``LAMBDA_PYTHON`` version a Makefile sets, e.g. ``"3.12"``."""
    pattern = rf"^(?:export )?LAMBDA_PYTHON {re.escape(operator)} (\d+\.\d+)$"
    found = re.findall(pattern, path.read_text(), flags=re.MULTILINE)
    assert len(found) == 1, f"{path} should set LAMBDA_PYTHON {operator} <major.minor> once"
    return str(found[0])


def template_runtimes() -> dict[str, list[str]]:
    """Every runtime the template names: the Globals, each function, each layer."""
    runtimes = {"Globals": [TEMPLATE["Globals"]["Function"]["Runtime"]]}
    for name, resource in RESOURCES.items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function" and "Runtime" in properties:
            runtimes[name] = [properties["Runtime"]]
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            runtimes[name] = list(properties["CompatibleRuntimes"])
    return runtimes


def makefile_builds() -> list[tuple[str, Path]]:
    """(logical id, Makefile) of every function and layer built with BuildMethod: makefile."""
    builds = []
    for name, resource in RESOURCES.items():
        if resource.get("Metadata", {}).get("BuildMethod") != "makefile":
            continue
        properties = resource["Properties"]
        code = properties.get("CodeUri") or properties["ContentUri"]
        builds.append((name, ROOT / code / "Makefile"))
    return builds


def test_build_python_is_the_template_runtime() -> None:
    build = makefile_python(ROOT / "Makefile", ":=")
    layer_default = makefile_python(ROOT / "layers" / "kisi_gateway" / "Makefile", "?=")
    assert layer_default == build, "the layer's default LAMBDA_PYTHON differs from make build's"
    for where, runtimes in template_runtimes().items():
        assert runtimes == [f"python{build}"], f"{where}: {runtimes} but make build targets {build}"


def test_every_artifact_is_built_by_a_makefile() -> None:
    built = {name for name, _ in makefile_builds()}
    code = {name for name, resource in RESOURCES.items()
            if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")}
    assert built == code


@pytest.mark.parametrize(("name", "makefile"), makefile_builds(),
                         ids=[name for name, _ in makefile_builds()])
def test_each_build_compiles_the_bytecode_it_ships(name: str, makefile: Path) -> None:
    text = makefile.read_text()
    recipe = re.search(rf"^build-{name}:\n(.*?)(?:\n\n|\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert recipe is not None, f"{makefile} has no build-{name} target"
    compiles = [line for line in recipe.group(1).splitlines()
                if "$(COMPILE)" in line or "$(LAMBDA_COMPILE)" in line]
    assert compiles, f"build-{name} ships no bytecode"


def test_make_build_compiles_for_the_runtime_in_unchecked_hash_mode() -> None:
    # sam zips every file dated 1980-01-01, so timestamp .pyc files would never match on Lambda
    text = (ROOT / "Makefile").read_text()
    compile_command = re.search(r'LAMBDA_COMPILE="\$\$lambda_python -m compileall ([^"]*)"', text)
    assert compile_command is not None
    assert "--invalidation-mode unchecked-hash" in compile_command.group(1)
    assert "export LAMBDA_COMPILE" in text
