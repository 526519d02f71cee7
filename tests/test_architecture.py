"""The package's import graph has no cycle (docs/architecture.md), counting imports inside functions.

Units are the top-level modules and subpackages of diffmem (diffmem.train, diffmem.evaluate, ...).
Imports under `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import diffmem

ROOT = Path(diffmem.__file__).parent


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST) -> list[str]:
    """Absolute diffmem imports anywhere in the tree, except inside `if TYPE_CHECKING:` blocks."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("diffmem"):
            found.append(node.module)
            found.extend(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith("diffmem"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(per_module: bool = False) -> dict[str, set[str]]:
    """unit -> the units it imports (at module level or inside functions); with `per_module`, module ->
    the modules it imports, so that cycles inside a unit (e.g. between two modules of evaluate) count."""
    modules = {_module(p) for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        src = _module(path) if per_module else _unit(_module(path))
        for target in _runtime_imports(ast.parse(path.read_text())):
            name = target if target in modules else target.rsplit(".", 1)[0]
            if name in modules:
                dst = name if per_module else _unit(name)
                if dst != src and dst != "diffmem":
                    graph.setdefault(src, set()).add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of units, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (c := dfs(v)):
                return c
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (c := dfs(u)):
            return c
    return None


def test_find_cycle_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_imports_inside_functions_are_counted() -> None:
    tree = ast.parse("def f():\n    from diffmem.train.loop import train\nif TYPE_CHECKING:\n    import diffmem.sweep\n")
    assert _runtime_imports(tree) == ["diffmem.train.loop", "diffmem.train.loop.train"]


def test_package_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_no_cycle_between_modules_inside_a_unit() -> None:
    """E.g. the feature extractors import their base class from evaluate/extractor.py, never from the factory
    (evaluate/features.py) that imports them."""
    cycle = find_cycle(import_graph(per_module=True))
    assert cycle is None, " -> ".join(cycle or [])


# ------------------------------------------------------------------------------------------------
# size limits (docs/architecture.md): no function over 60 lines, no module over 400 lines in src/

MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 400


def oversized(source: str, where: str) -> list[str]:
    """'where:name N lines' for every function (methods and nested ones included; from `def` to its last
    line, decorators left out) over MAX_FUNCTION_LINES, and 'where N lines' if the module is over
    MAX_MODULE_LINES."""
    found = []
    n = len(source.splitlines())
    if n > MAX_MODULE_LINES:
        found.append(f"{where} {n} lines")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{where}:{node.name} {length} lines")
    return found


def test_oversized_finds_long_functions_and_modules() -> None:
    long_method = "class A:\n    def f(self):\n" + "        x = 1\n" * 60
    assert oversized(long_method, "m") == ["m:f 61 lines"]
    assert oversized("def f():\n" + "    x = 1\n" * 59, "m") == []
    assert oversized("x = 1\n" * 401, "m") == ["m 401 lines"]


def test_no_function_over_60_lines_no_module_over_400() -> None:
    found = [hit for path in sorted(ROOT.rglob("*.py"))
             for hit in oversized(path.read_text(), str(path.relative_to(ROOT.parent)))]
    assert not found, "split along a natural seam (setup, step, logging, checkpointing, reporting): " + "; ".join(found)


def test_utils_is_the_bottom_layer() -> None:
    """diffmem.utils imports nothing from diffmem but diffmem.errors (docs/architecture.md)."""
    imported = {t for p in (ROOT / "utils").rglob("*.py") for t in _runtime_imports(ast.parse(p.read_text()))
                if not t.startswith("diffmem.utils")}
    assert all(t == "diffmem.errors" or t.startswith("diffmem.errors.") for t in imported), imported
