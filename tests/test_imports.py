"""No module of `rftt` imports one that imports it back, directly or through others, and neither do its top-level
packages and modules (engine, serve, search, train, demo, report, ...). Imports inside functions count (they run);
imports only for type checkers do not."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "rftt"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported(tree: ast.AST, known: set[str]) -> set[str]:
    """The rftt modules a module's code imports (skipping `if TYPE_CHECKING:` blocks)."""
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if type_checking_block(node):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            candidates = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            found |= {name for name in candidates if name in known}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        stack.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported(ast.parse(path.read_text()), set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for neighbour in graph.get(node, ()):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def top_level(name: str) -> str:
    return ".".join(name.split(".")[:2])


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_no_top_level_package_or_module_imports_one_that_imports_it_back():
    graph: dict[str, set[str]] = {}
    for name, targets in import_graph().items():
        graph.setdefault(top_level(name), set()).update(
            top_level(target) for target in targets if top_level(target) != top_level(name))
    assert cycles(graph) == []


def test_the_walk_sees_imports_inside_functions_and_skips_type_checking_ones():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rftt.a\n"
                     "def f():\n    from rftt.b import thing\n")
    assert imported(tree, {"rftt.a", "rftt.b", "rftt.b.thing"}) == {"rftt.b", "rftt.b.thing"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
