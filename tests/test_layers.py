"""The floors of the architecture, checked on the source: nothing imports a floor above it or a neighbour on its own
floor, no import cycle anywhere (module-level and function-level imports alike), no source module over 500 lines.

Floors, lowest first: core <- hw <- frontend | model <- plan | sim | export <- solver <- policies <- app <-
benchmarks. A module may import its own subpackage and any lower floor; `a | b` share a floor and stay apart.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("partitioner", "solver", "policies", "benchmarks", "scripts")
FLOORS = {
    "partitioner": 0,   # the package itself: its __init__ holds only the version
    "partitioner.core": 0,
    "partitioner.hw": 1,
    "partitioner.frontend": 2, "partitioner.model": 2,
    "partitioner.plan": 3, "partitioner.sim": 3, "partitioner.export": 3,
    "solver": 4,
    "policies": 5,
    "partitioner.app": 6,
    "benchmarks": 7, "scripts": 7,
}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


SOURCES = _sources()


def _group(module: str) -> str:
    """The floor entry a module belongs to: its longest prefix in FLOORS."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in FLOORS:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is on no floor: add its subpackage to FLOORS in tests/test_layers.py")


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports anywhere in its body (`from a.b import c` counts a.b, and a.b.c when
    that is a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n in known}


def _allowed(src: str, dst: str) -> bool:
    g_src, g_dst = _group(src), _group(dst)
    return g_src == g_dst or g_dst == "partitioner" or FLOORS[g_dst] < FLOORS[g_src]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_no_module_imports_a_floor_above_or_beside_it(name):
    bad = sorted(d for d in _imports(SOURCES[name], SOURCES) if not _allowed(name, d))
    assert not bad, f"{name} (floor {_group(name)}) imports {bad}, a floor above it or beside it"


def _graph(sources: dict[str, Path]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(sources)
    for name, path in sources.items():
        for dst in _imports(path, sources):
            # `from pkg import mod` imports pkg/__init__ first; a package's own __init__ is not a cycle edge
            if dst != name and not name.startswith(dst + "."):
                g.add_edge(name, dst)
    return g


def test_no_import_cycle():
    cycles = [sorted(c) for c in nx.strongly_connected_components(_graph(SOURCES)) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_no_module_over_500_lines(name):
    n = len(SOURCES[name].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{name} has {n} lines; split it by job (at most {MAX_LINES})"


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path):
    (tmp_path / "partitioner" / "sim").mkdir(parents=True)
    (tmp_path / "partitioner" / "plan").mkdir(parents=True)
    a = tmp_path / "partitioner" / "sim" / "a.py"
    b = tmp_path / "partitioner" / "plan" / "b.py"
    a.write_text("def f():\n    from partitioner.plan.b import g\n")     # function-level imports count
    b.write_text("from partitioner.sim.a import f\nimport solver.repair\n")
    known = {"partitioner.sim.a": a, "partitioner.plan.b": b, "solver.repair": a}
    assert _imports(b, known) == {"partitioner.sim.a", "solver.repair"}
    assert not _allowed("partitioner.plan.b", "solver.repair")           # upward
    assert not _allowed("partitioner.plan.b", "partitioner.sim.a")       # beside, on the same floor
    assert _allowed("partitioner.app.run", "partitioner.sim.simulator")
    cycles = [c for c in nx.strongly_connected_components(_graph({"partitioner.sim.a": a, "partitioner.plan.b": b}))
              if len(c) > 1]
    assert cycles == [{"partitioner.sim.a", "partitioner.plan.b"}]
