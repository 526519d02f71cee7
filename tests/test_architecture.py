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


def import_graph() -> dict[str, set[str]]:
    """unit -> the units it imports (at module level or inside functions)."""
    modules = {_module(p) for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        src = _unit(_module(path))
        for target in _runtime_imports(ast.parse(path.read_text())):
            if target in modules or target.rsplit(".", 1)[0] in modules:
                dst = _unit(target)
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
