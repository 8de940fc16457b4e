"""The package structure, drawn from the imports: no import cycles, no cross-module private imports.

The graph covers ``course_utils``, ``data_download`` and ``benchmarks``. Every import counts, also the
ones inside functions: a "lazy" import hides a cycle from the interpreter, not from the reader.
An edge goes to the module a statement names (``from a.b import c`` -> ``a.b.c`` when ``c`` is a
submodule, else ``a.b``), not to the parent packages Python also initialises.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("course_utils", "course_grader", "data_download", "benchmarks")

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name of the module in ``from ... import`` inside ``module``."""
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> tuple[set[str], list[tuple[str, str]]]:
    """(internal modules ``module`` imports, [(module, private name)] it takes from another module)."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    targets: set[str] = set()
    private: list[tuple[str, str]] = []
    aliases: dict[str, str] = {}  # local name -> internal module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    targets.add(alias.name)
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else \
                        alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            if source.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    targets.add(submodule)
                    aliases[alias.asname or alias.name] = submodule
                else:
                    targets.add(source)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append((source, alias.name))
    for node in ast.walk(tree):  # alias._name of an imported course module
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            private.append((aliases[node.value.id], node.attr))
    targets.discard(module)
    return {t for t in targets if t in MODULES}, [(m, n) for m, n in private if m != module]


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_known_structure():
    # guards against a parser that finds nothing (and so no cycle either)
    assert {"course_utils.protocol", "course_utils.models.base", "benchmarks.report"} <= set(MODULES)
    protocol_imports, _ = GRAPH["course_utils.protocol"]
    assert {"course_utils.config", "course_utils.data", "course_utils.metrics"} <= protocol_imports
    assert "course_utils.models.base" in GRAPH["course_utils.models.autoencoder"][0]


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = _cycles({module: targets for module, (targets, _) in GRAPH.items()})
    assert not cycles, "import cycles (a module must not import, even lazily, one that imports it): " + "; ".join(
        " <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_another_modules_private_name(module):
    _, private = GRAPH[module]
    bad = sorted(private)
    assert not bad, (f"{MODULES[module].relative_to(ROOT)} uses private names of other modules: "
                     + ", ".join(f"{s}.{n}" for s, n in bad) + "; make them public in the module of their concern")
