"""The package's layering: no import cycle, no module reaching into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "clusterclean"


def _modules() -> dict[str, ast.Module]:
    return {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts): ast.parse(
            path.read_text(encoding="utf-8")
        )
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _imports(name: str, tree: ast.Module):
    """(imported module, imported names, is typing-only) for each relative import."""
    package = name.split(".")[:-1] if not name.endswith("__init__") else name.split(".")[:-1]
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            yield target, [a.name for a in node.names], id(node) in typing_only


def test_no_module_imports_a_private_name_of_another():
    found = []
    for name, tree in _modules().items():
        for target, names, _ in _imports(name, tree):
            for imported in names:
                if imported.startswith("_") and not imported.startswith("__"):
                    found.append(f"{name} imports {target}.{imported}")
    assert found == []


def test_the_import_graph_has_no_cycle():
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        for target, names, typing_only in _imports(name, tree):
            if typing_only:
                continue
            for candidate in (target, *(f"{target}.{n}" for n in names)):
                if candidate in modules and candidate != name:
                    graph[name].add(candidate)
                elif f"{candidate}.__init__" in modules and f"{candidate}.__init__" != name:
                    graph[name].add(f"{candidate}.__init__")
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_refinement_and_adaptation_share_one_transform_interface():
    from clusterclean._contracts import VectorTransform
    from clusterclean.adapt import Adaptation
    from clusterclean.refine import Refinement

    for cls in (Refinement, Adaptation):
        assert issubclass(cls, VectorTransform)
        for name in ("transform", "apply", "save"):
            assert getattr(cls, name) is getattr(VectorTransform, name), (cls, name)
