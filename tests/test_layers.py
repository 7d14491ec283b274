"""The layers of docs/architecture.md are what the imports do: no import cycle among the modules of
colorizer/, kernels/ and export/ (issue 20), and only command-line modules import argparse.

Edges are every ``import`` and ``from ... import`` in a module, at module level or inside a function
(a function-level import only postpones a cycle to the first call). A registry row that names a plug-in
module as a string (``colorizer.ops.BACKENDS``, ``colorizer.export.formats.FORMATS``) is data read at
call time, not an import: the plug-in imports the registry, never the other way. What such a row must
not do is close a loop through the application layer (issue 20 found ``export/openvino.py`` importing
``colorizer.evaluation``, which reached the exporters back through the formats table): the second test
keeps the library below the application modules (``APPLICATION``) whatever rows point where.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package it installs as (setup.py package_dir).
PACKAGES = {"colorizer": "colorizer", "kernels": "colorizer.kernels", "export": "colorizer.export"}
# Modules that parse command lines (the only ones that may import argparse): every ``cli`` and ``__main__``
# module, the error module (its ArgumentParser makes usage errors one line) and the trainer's config (its
# options are the config's fields).
CLI_MODULES = {"colorizer.errors", "colorizer.train.config"}
# The application layer: what resolves a user's model reference and runs commands. The library (ops,
# kernels, models, palette, data, losses, checkpoints, the runtime's device and runner, scoring, the
# exporters) never imports it, so a registry row can never close a loop through it.
APPLICATION = ("colorizer.runtime.load", "colorizer.inference", "colorizer.evaluation", "colorizer.demo",
               "colorizer.cli", "colorizer.serve", "colorizer.export.cli", "colorizer.train.__main__")  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The longest prefix of a dotted name that is one of our modules."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports_of(module: str, path: Path) -> set[str]:
    """Our modules that ``module`` imports (module docstring: what counts)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module, path).split(".")
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            names += [f"{base}.{alias.name}" for alias in node.names]
    found = {t for t in map(_target, names) if t is not None}
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    return {module: imports_of(module, path) for module, path in MODULES.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) for every strongly connected component larger than a node."""
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:
        members = set(component)
        start = min(component)
        # Shortest way back to start inside the component (breadth first).
        paths = {start: [start]}
        frontier = [start]
        while frontier and start not in [w for v in frontier for w in graph[v] if w in members and len(paths[v]) > 1]:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w in members and w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
            frontier = nxt
        back = next(v for v in sorted(paths, key=lambda v: len(paths[v])) if start in graph[v])
        cycles.append([*paths[back], start])
    return cycles


def _is_application(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in APPLICATION)


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "colorizer.runtime.load" in graph["colorizer.evaluation"]  # module level
    assert "colorizer.runtime.load" in graph["colorizer.inference"]  # inside Colorizer.__init__
    assert "colorizer.scoring" in graph["colorizer.export.openvino"]  # inside functional_gate


def test_the_library_never_imports_the_application_layer():
    graph = import_graph()
    wrong = [
        f"{module} -> {target}"
        for module, targets in sorted(graph.items())
        if not _is_application(module)
        for target in sorted(targets)
        if _is_application(target)
    ]
    assert not wrong, "library modules importing the application layer: " + "; ".join(wrong)


def test_the_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_our_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_command_line_modules_import_argparse(module):
    if module in CLI_MODULES or module.rpartition(".")[2] in ("cli", "__main__"):
        return
    tree = ast.parse(MODULES[module].read_text())
    used = [
        n
        for n in ast.walk(tree)
        if (isinstance(n, ast.Import) and any(a.name == "argparse" for a in n.names))
        or (isinstance(n, ast.ImportFrom) and n.module == "argparse")
    ]
    assert not used, f"{module} imports argparse; parse options in a CLI module and pass values in"
