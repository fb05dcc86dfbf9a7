"""The house as DESIGN and the README draw it: no import loops, no import from a higher floor, small modules.

Read from the source (every ``import`` and ``from ... import``, also inside functions), not by
importing anything: a new arrow upwards, or a loop, fails here with the modules that make it.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kd_core", "cluster", "tuning", "jobs")
#: The layers of the system, lowest first: a package imports only its own layer and those below.
LAYERS = ("kd_core", "cluster", "tuning", "jobs")
#: kd_core's floors, lowest first (the README's "Architecture in one screen" lists them top down).
FLOORS = ("io", "models", "data", "objectives", "training", "evaluation", "knowledge", "tasks", "serving", "engine",
          "methods")
MAX_LINES = 420  # "no module over ~400 lines"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The project's modules that ``path`` imports (a name imported from a package counts as its submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop of ``graph`` (its modules, the first again at the end), or ``None`` (graphlib finds it)."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        return list(reversed(err.args[1]))
    return None


def _floor(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "kd_core" or len(parts) < 2:
        return None
    return FLOORS.index(parts[1]) if parts[1] in FLOORS else -1


def test_the_cycle_finder_finds_a_loop():
    loop = _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()})
    assert loop is not None and loop[0] == loop[-1] and sorted(loop[:-1]) == ["a", "b", "c"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_loops():
    assert _cycle(_graph()) is None


def test_no_package_imports_a_higher_layer():
    upward = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets
                    if LAYERS.index(b.split(".")[0]) > LAYERS.index(a.split(".")[0]))
    assert upward == []


def test_kd_core_floors_import_only_floors_below():
    graph = _graph()
    kd = [m for m in graph if m.startswith("kd_core.")]
    assert all(_floor(m) != -1 for m in kd), [m for m in kd if _floor(m) == -1]  # every module sits on a floor
    upward = sorted(f"{a} -> {b}" for a in kd for b in graph[a]
                    if _floor(b) is not None and _floor(b) > _floor(a))  # type: ignore[operator]
    assert upward == []


def test_the_kd_core_root_holds_only_the_package_face():
    assert sorted(p.name for p in (ROOT / "kd_core").glob("*.py")) == ["__init__.py"]
    faces = [p for p in (ROOT / "kd_core").rglob("__init__.py")]
    with_code = [str(p.relative_to(ROOT)) for p in faces
                 if any(not isinstance(node, ast.Expr) for node in ast.parse(p.read_text()).body)]
    assert with_code == []  # package faces are docstrings: importing one module never imports its siblings


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_over_about_400_lines(package):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
