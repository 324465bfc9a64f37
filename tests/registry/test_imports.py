"""The registry's modules import one way: no circle, even through imports inside functions (the
backends import the interface in ``backend.py``; ``connect.py`` imports the backends to open one by URL)."""

from __future__ import annotations

import ast
from pathlib import Path

import online_feature_store.registry

PACKAGE = "online_feature_store.registry"
DIRECTORY = Path(online_feature_store.registry.__file__).parent


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in DIRECTORY.glob("*.py"):
        if path.stem == "__init__":
            continue
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE + "."):
                names.add(node.module.removeprefix(PACKAGE + ".").split(".")[0])
        graph[path.stem] = names
    return graph


def test_no_import_circle_among_the_registry_modules() -> None:
    graph = _imports()
    assert "open_registry" not in (DIRECTORY / "backend.py").read_text(encoding="utf-8")
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        assert module not in visiting, " -> ".join([*visiting[visiting.index(module) :], module])
        if module in done:
            return
        visiting.append(module)
        for other in sorted(graph.get(module, ())):
            visit(other)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
