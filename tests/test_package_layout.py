"""The package's layout: subpackages that show the layers, and no import circle between modules.

The import graph is read from the source with :mod:`ast` -- every ``import`` / ``from ... import``
statement, at module level *and* inside functions (a function-level import only hides a circle
until the function runs), relative imports resolved. ``from a.b import c`` is an edge to the
module ``a.b.c`` when that module exists, otherwise to ``a.b`` (a name defined or re-exported
there). No file is imported, so this runs in a fraction of a second and without torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "motionmatcher"

#: the only module allowed directly in motionmatcher/ (everything else lives in a subpackage)
TOP_LEVEL_MODULES = {"__init__.py"}

#: the subpackages (a new one is a decision about the layers: add it here and to the map in
#: motionmatcher/__init__.py)
SUBPACKAGES = {"backbones", "customization", "files", "jobs", "methods", "metrics", "results", "toy"}


def _modules(package: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports anywhere in its source."""
    modules = _modules(package)
    root = package.name

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                           for alias in node.names]
            else:
                continue
            for target in targets:
                if target == root or target.startswith(root + "."):
                    dep = known(target)
                    if dep is not None and dep != name:
                        deps.add(dep)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle (counting imports inside functions): " + " -> ".join(cycle)


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    # relative, at module level
    assert "motionmatcher.customization.trained_weights" in graph["motionmatcher.customization.training"]
    # relative, inside a function (invert_reference)
    assert "motionmatcher.customization.trained_weights" in graph["motionmatcher.customization.inversion"]
    # absolute, inside a function (_loss_kwargs_problems)
    assert "motionmatcher.methods.config" in graph["motionmatcher.files.config_keys"]


def test_find_cycle_names_the_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_top_level_holds_only_the_subpackages():
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert modules <= TOP_LEVEL_MODULES, f"modules at the top of motionmatcher/: {sorted(modules - TOP_LEVEL_MODULES)}"
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == SUBPACKAGES
    strays = [p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"
              and not (p / "__init__.py").is_file()]
    assert not strays, f"folders without __init__.py in motionmatcher/: {strays}"


@pytest.mark.parametrize("name", sorted(SUBPACKAGES))
def test_each_subpackage_says_what_belongs_in_it(name):
    doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 30, f"motionmatcher/{name}/__init__.py needs a docstring saying what belongs there"


def test_the_package_map_names_every_subpackage():
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))) or ""
    missing = [name for name in sorted(SUBPACKAGES) if f"``{name}``" not in doc]
    assert not missing, f"motionmatcher/__init__.py's map lacks {missing}"
