"""The package's layers (docs/architecture.md): every import points to its own layer or a lower one, and the
import graph has no cycle, counting imports inside functions and under `if TYPE_CHECKING:` (a type-only import
upward is still a dependency upward: the type's module would have to be read to understand this one).

Units are the top-level modules and subpackages of diffmem (diffmem.train, diffmem.evaluate, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import diffmem

ROOT = Path(diffmem.__file__).parent

# docs/architecture.md's table, bottom first: a unit may import its own layer and the layers below it.
LAYERS: dict[int, tuple[str, ...]] = {
    0: ("errors", "utils", "safety", "config", "lock", "method_looks"),
    1: ("data",),
    2: ("diffusion",),
    3: ("models",),
    4: ("train",),
    5: ("generate",),
    6: ("evaluate",),
    7: ("monitor", "release", "guard", "theory"),
    8: ("sweep",),
    9: ("demo", "t2i"),
    10: ("report",),
    11: ("api",),
    12: ("cli", "__main__", ""),  # "": the package's own __init__ (diffmem.audit, ... from the API)
}
LAYER_OF = {f"diffmem.{u}" if u else "diffmem": k for k, units in LAYERS.items() for u in units}


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(tree: ast.AST) -> list[str]:
    """Absolute diffmem imports anywhere in the tree: module level, inside functions, under TYPE_CHECKING."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("diffmem"):
            found.append(node.module)
            found.extend(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith("diffmem"))
    return found


def _edges(per_module: bool = False) -> dict[str, dict[str, str]]:
    """importer -> {imported: 'path:line of one such import'}, between units (or modules)."""
    modules = {_module(p) for p in ROOT.rglob("*.py")}
    edges: dict[str, dict[str, str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        src = _module(path) if per_module else _unit(_module(path))
        for node in ast.walk(ast.parse(path.read_text())):
            for target in imports_of(node) if isinstance(node, (ast.Import, ast.ImportFrom)) else ():
                name = target if target in modules else target.rsplit(".", 1)[0]
                if name in modules:
                    dst = name if per_module else _unit(name)
                    if dst != src and dst != "diffmem":
                        edges.setdefault(src, {}).setdefault(dst, f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    return edges


def import_graph(per_module: bool = False) -> dict[str, set[str]]:
    """unit -> the units it imports (anywhere, TYPE_CHECKING included); with `per_module`, module -> the modules
    it imports, so that cycles inside a unit (e.g. between two modules of evaluate) count."""
    return {src: set(dsts) for src, dsts in _edges(per_module).items()}


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


def upward_imports(edges: dict[str, dict[str, str]], layer_of: dict[str, int]) -> list[str]:
    """'importer (layer a) -> imported (layer b > a) at path:line' for every import that points up."""
    return [f"{src} (layer {layer_of[src]}) -> {dst} (layer {layer_of[dst]}) at {where}"
            for src, dsts in sorted(edges.items()) for dst, where in sorted(dsts.items())
            if layer_of[dst] > layer_of[src]]


def test_find_cycle_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_imports_inside_functions_and_under_type_checking_are_counted() -> None:
    tree = ast.parse("def f():\n    from diffmem.train.loop import train\nif TYPE_CHECKING:\n    import diffmem.sweep\n")
    assert imports_of(tree) == ["diffmem.train.loop", "diffmem.train.loop.train", "diffmem.sweep"]


def test_upward_imports_finds_one() -> None:
    edges = {"diffmem.evaluate": {"diffmem.report": "evaluate/audit.py:9", "diffmem.train": "evaluate/x.py:1"}}
    layers = {"diffmem.evaluate": 6, "diffmem.report": 10, "diffmem.train": 4}
    assert upward_imports(edges, layers) == ["diffmem.evaluate (layer 6) -> diffmem.report (layer 10) at "
                                             "evaluate/audit.py:9"]


def test_every_unit_has_a_layer() -> None:
    """A new unit (a top-level module or subpackage) gets its row in LAYERS and in docs/architecture.md."""
    units = {_unit(_module(p)) for p in ROOT.rglob("*.py")}
    assert units - set(LAYER_OF) == set(), "place these units in LAYERS (and docs/architecture.md's table)"
    assert set(LAYER_OF) - units == set(), "LAYERS names units that no longer exist"


def test_every_import_points_to_the_same_or_a_lower_layer() -> None:
    found = upward_imports(_edges(), LAYER_OF)
    assert not found, "imports that point up a layer (docs/architecture.md):\n" + "\n".join(found)


def test_architecture_doc_has_the_same_table() -> None:
    """docs/architecture.md's table lists each layer's units as LAYERS does."""
    doc = (ROOT.parents[1] / "docs" / "architecture.md").read_text()
    rows: dict[int, set[str]] = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows.setdefault(int(cells[0]), set()).update(
                u.strip().strip("`") for u in cells[1].split(",") if u.strip().startswith("`"))
    expected = {k: {u or "diffmem" for u in units} for k, units in LAYERS.items()}
    if not rows:
        pytest.skip("docs/architecture.md is not in this checkout")
    assert rows == expected


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
    imported = {t for p in (ROOT / "utils").rglob("*.py") for t in imports_of(ast.parse(p.read_text()))
                if not t.startswith("diffmem.utils")}
    assert all(t == "diffmem.errors" or t.startswith("diffmem.errors.") for t in imported), imported


# ------------------------------------------------------------------------------------------------
# names: no two classes of the package share a name (a reader, or an import, never takes one for the other)



def duplicate_class_names(sources: dict[str, str]) -> dict[str, list[str]]:
    """class name -> the modules (of `sources`: where -> source text) that define it, for names defined twice."""
    where: dict[str, list[str]] = {}
    for name, src in sorted(sources.items()):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ClassDef):
                where.setdefault(node.name, []).append(name)
    return {k: v for k, v in where.items() if len(v) > 1}


def test_duplicate_class_names_finds_a_clash() -> None:
    found = duplicate_class_names({"a": "class X:\n    pass\n", "b": "def f():\n    class X: ...\n", "c": "class Y: ..."})
    assert found == {"X": ["a", "b"]}


def test_no_two_classes_share_a_name() -> None:
    sources = {str(p.relative_to(ROOT.parent)): p.read_text() for p in ROOT.rglob("*.py")}
    found = {k: v for k, v in duplicate_class_names(sources).items()}
    assert not found, "rename one of each (e.g. T2ISampleOptions beside SampleOptions): " + repr(found)
