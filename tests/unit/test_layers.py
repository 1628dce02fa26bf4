"""The folders are the architecture (docs/architecture.md): who may import whom, checked on the source.

Every import counts, also those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}

# layer -> the licshift layers it may import (besides itself and the standard library)
ALLOWED: dict[str, frozenset[str]] = {
    "licshift.rules": frozenset(),
    "licshift.settings": frozenset({"licshift.rules"}),
    "licshift.ports": frozenset({"licshift.rules"}),
    "licshift.services": frozenset({"licshift.rules", "licshift.ports", "licshift.settings"}),
    "licshift.adapters": frozenset({"licshift.rules", "licshift.ports", "licshift.settings"}),
    "licshift.functions": frozenset(
        {"licshift.rules", "licshift.ports", "licshift.settings", "licshift.services", "licshift.adapters"}
    ),
    "licshift.cli": frozenset(
        {"licshift.rules", "licshift.ports", "licshift.settings", "licshift.services", "licshift.adapters"}
    ),
}
PURE = ("licshift.rules", "licshift.ports", "licshift.settings", "licshift.services")
"""Layers that import no third-party package at all: no SDK, no I/O library."""
MAY_USE_LOCAL_TOOLING = ("licshift.cli",)
"""The admin command runs on a workstation, never in Azure (.funcignore leaves it out): it offers
`licshift demo`, `host` and `sim serve`, which live in licshift_local. Nothing else may reach it."""


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return module


def imports(path: Path) -> Iterator[str]:
    """Every module the file imports, at module level or inside a function."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


LICSHIFT_FILES = sorted((SRC / "licshift").rglob("*.py"))


def test_every_module_is_in_a_layer() -> None:
    loose = [module_name(p) for p in LICSHIFT_FILES if layer_of(module_name(p)) not in ALLOWED]
    assert loose == ["licshift"], "modules outside every folder of the map (docs/architecture.md)"


@pytest.mark.parametrize("path", LICSHIFT_FILES, ids=module_name)
def test_imports_follow_the_layers(path: Path) -> None:
    me = module_name(path)
    layer = layer_of(me)
    if layer not in ALLOWED:
        return
    wrong = []
    for imported in imports(path):
        root = imported.split(".")[0]
        if root == "licshift":
            other = layer_of(imported)
            if other != layer and other not in ALLOWED[layer]:
                wrong.append(imported)
        elif root in ("licshift_local", "graphsim"):
            if layer not in MAY_USE_LOCAL_TOOLING:
                wrong.append(imported)
        elif layer in PURE and root not in STDLIB:
            wrong.append(imported)
    assert wrong == [], f"{me} ({layer}) may not import {wrong}"


def test_the_simulator_never_imports_licshift() -> None:
    """graphsim is the independent referee: it must not share code with what it referees."""
    for path in sorted((SRC / "graphsim").rglob("*.py")):
        wrong = [m for m in imports(path) if m.split(".")[0] in ("licshift", "licshift_local")]
        assert wrong == [], f"{path.relative_to(SRC)} imports {wrong}"
