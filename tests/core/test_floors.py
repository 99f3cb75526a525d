"""The package's floors (docs/design-notes.md, "Floors"): no module imports one above its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import distillscope

PACKAGE = Path(distillscope.__file__).parent

#: Top-level module or subpackage of ``distillscope`` -> its floor (0 is the ground).
FLOORS = {
    **dict.fromkeys(("errors", "contracts", "files", "messages", "identity", "checks"), 0),
    **dict.fromkeys(("registry", "describe"), 0),
    **dict.fromkeys(
        ("config_train", "config_tracking", "config_tree", "config", "config_files"), 1
    ),
    **dict.fromkeys(("results", "rundir", "tracking"), 1),
    **dict.fromkeys(("functional", "data", "models"), 2),
    **dict.fromkeys(("explain", "attacks", "distill"), 3),
    **dict.fromkeys(("train", "splits", "teacher_store"), 4),
    "probes": 5,
    **dict.fromkeys(("validate", "plan", "plugins"), 6),
    "report": 7,
    **dict.fromkeys(("experiment", "grid", "claims"), 8),
    **dict.fromkeys(("cli", "__main__"), 9),
}
#: Imports that go up a floor on purpose: (importing module, function, imported module).
UPWARD = {("distillscope.config", "load_config_dict", "distillscope.validate")}


def _room(module: str) -> str | None:
    """The top-level module or subpackage ``module`` belongs to (``None``: the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """``(imported distillscope module, enclosing function, line)`` of every import, at any depth
    (imports inside functions count: they run as soon as the function does)."""
    found: list[tuple[str, str | None, int]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = function or child.name
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
                if child.module == "distillscope":  # from distillscope import config
                    names = [f"distillscope.{a.name}" for a in child.names]
            ours = [n for n in names if n.split(".")[0] == "distillscope"]
            found.extend((n, inner, child.lineno) for n in ours)
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), None)
    return found


def test_no_module_imports_a_floor_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(p for p in parts if p != "__init__")
        room = _room(module)
        if room is None:  # the package root: lazy public API over every floor
            continue
        assert room in FLOORS, f"{module}: give {room!r} a floor in FLOORS and the docs"
        for imported, function, line in _imports(path):
            target = _room(imported)
            if target is None or target not in FLOORS:  # distillscope.__version__
                continue
            if FLOORS[target] > FLOORS[room]:
                upward.append((module, function, imported, line))
    allowed = [(m, f, i) for m, f, i, _ in upward if (m, f, i) in UPWARD]
    assert [u for u in upward if u[:3] not in UPWARD] == []
    assert sorted(allowed) == sorted(UPWARD)  # the one exception is still where it is said to be


def test_importing_the_schema_loads_no_family_of_the_package():
    """In a fresh interpreter: ``distillscope/__init__`` itself imports ``contracts`` only (the
    rest of its API is lazy), so what else is loaded comes from the schema's own imports."""
    code = (
        "import sys, distillscope.config, distillscope.config_tree; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('distillscope'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [
        "distillscope",
        "distillscope.config",
        "distillscope.config_tracking",
        "distillscope.config_train",
        "distillscope.config_tree",
        "distillscope.contracts",
        "distillscope.errors",
    ]
