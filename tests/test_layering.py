"""Floors only point down: no dscnet package imports one above it (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import dscnet

# Bottom first. A package may import from its own floor or any floor below it.
FLOORS = [
    ("errors", "utils"),
    ("config", "config_schema"),
    ("evaluation",),
    ("data",),
    ("cam",),
    ("models",),
    ("losses",),
    ("visualize",),
    ("inference",),
    ("engine",),
    ("cli",),
]
LEVEL = {name: level for level, names in enumerate(FLOORS) for name in names}
ROOT = Path(dscnet.__file__).parent


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(dscnet package, line)`` for every dscnet import in a file, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "dscnet" and len(parts) > 1 and parts[1] != "__init__":
                found.append((parts[1], node.lineno))
    return found


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_package_has_a_floor() -> None:
    packages = {_package(p) for p in ROOT.rglob("*.py")} - {"__init__"}
    assert packages <= set(LEVEL), f"packages without a floor in this test: {packages - set(LEVEL)}"


def test_no_import_points_up() -> None:
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        own = _package(path)
        if own == "__init__":
            continue
        for target, line in _imports(path):
            if LEVEL[target] > LEVEL[own]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports dscnet.{target}")
    assert not upward, "imports from a higher floor:\n" + "\n".join(upward)
