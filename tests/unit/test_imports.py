"""The import rules of the layout (docs/architecture): protocol ← dsl ← engine ← server; store,
bus, worker and tools never import engine or server (the worker not the store either); and no
module imports itself through a cycle. Read from the source, so a new import that breaks a rule
fails here and not in a review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "noetl"

FORBIDDEN = {
    "protocol": {"dsl", "engine", "server", "store", "bus", "worker", "tools"},
    "dsl": {"engine", "server", "store", "bus", "worker"},
    "engine": {"server", "store", "bus", "worker", "tools"},
    "store": {"engine", "server"},
    "bus": {"engine", "server"},
    "worker": {"engine", "server", "store"},
    "tools": {"engine", "server"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The noetl modules `name` imports (anywhere in the file, TYPE_CHECKING included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {m for m in found if m.split(".")[0] == "noetl" and m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_only_what_is_below_it(layer: str) -> None:
    broken = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if _layer(module) == layer
        for target in targets
        if _layer(target) in FORBIDDEN[layer]
    )
    assert broken == []


def test_no_module_imports_itself_through_a_cycle() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert cycles == []


def test_the_rules_see_the_imports_they_judge() -> None:
    # guards the test itself: a parser that saw nothing would pass every rule above
    assert "noetl.engine.decide" in GRAPH["noetl.engine"]
    assert "noetl.dsl.semantics" in GRAPH["noetl.worker.pipeline"]
    assert "noetl.server.flow" in GRAPH["noetl.server.worker_api"]
