"""The floors of shared/ARCHITECTURE.md, checked on the source: nothing imports upward."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# module prefix -> prefixes it must never import
FORBIDDEN = {
    "partitioner": ("solver", "policies", "partitioner.app"),
    "solver": ("policies", "partitioner.app"),
    "policies": ("partitioner.app",),
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for pkg in ("partitioner", "solver", "policies"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if not name.startswith("partitioner.app"):
                out.append((name, path))
    return out


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("name,path", _modules(), ids=[n for n, _ in _modules()])
def test_no_module_imports_a_floor_above_it(name, path):
    floor = name.split(".")[0]
    banned = FORBIDDEN[floor]
    upward = sorted(i for i in _imports(path) if any(i == b or i.startswith(b + ".") for b in banned))
    assert not upward, f"{name} imports {upward}, a floor above it"


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from partitioner.app.run import run\nimport solver.repair\n")
    assert {"partitioner.app.run", "solver.repair"} <= _imports(bad)
