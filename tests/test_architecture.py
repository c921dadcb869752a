"""The package's shape, checked: a one-way core (docs/design.rst, "A one-way core").

Imports are read from the source (every ``import``: at module level, under ``TYPE_CHECKING`` and
inside functions), so a cycle or an upward import fails here, not in a reviewer's head.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "channels_neffos"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """module -> the modules of the package it imports (the longest known name)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


GRAPH = _imports()


def _cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    return found


def _importers(prefix: str) -> dict[str, set[str]]:
    return {
        module: {target for target in targets if target.startswith(prefix)}
        for module, targets in GRAPH.items()
        if any(target.startswith(prefix) for target in targets)
    }


def test_the_graph_was_read() -> None:
    assert "channels_neffos._core.router" in GRAPH["channels_neffos.channel_layer"]
    assert "channels_neffos.transports.base" in GRAPH["channels_neffos._core.names"]


def test_no_import_cycle_not_even_under_type_checking() -> None:
    assert _cycles() == []


def test_only_the_public_layer_knows_the_router() -> None:
    """Parts never import their owner; nothing but the layer (and the fuzz/test harness outside
    the package) reaches the router."""
    importers = set(_importers("channels_neffos._core.router"))
    # The router of layers with history is the router itself, extended (a subclass), not a part.
    assert importers == {"channels_neffos.channel_layer", "channels_neffos._core.history_router"}
    assert set(_importers("channels_neffos._core.history_router")) == {
        "channels_neffos.channel_layer"
    }


@pytest.mark.parametrize(
    "ring, forbidden",
    [
        # The core imports neither what is built on it nor the public layer.
        ("channels_neffos._core", ("channels_neffos.namespaces", "channels_neffos.channel_layer")),
        ("channels_neffos._core", ("channels_neffos.layers", "channels_neffos.multi")),
        ("channels_neffos._core", ("channels_neffos.testing", "channels_neffos.metrics")),
        # Transports know nothing above the cut-off.
        ("channels_neffos.transports", ("channels_neffos._core", "channels_neffos.channel_layer")),
        ("channels_neffos.transports", ("channels_neffos.namespaces", "channels_neffos.layers")),
        # The stats dataclasses are read by everyone and import nobody's state.
        ("channels_neffos.stats", ("channels_neffos._core", "channels_neffos.namespaces")),
    ],
)
def test_rings_import_only_inward(ring: str, forbidden: tuple[str, ...]) -> None:
    upward = {
        module: sorted(t for t in targets if t.startswith(forbidden))
        for module, targets in GRAPH.items()
        if module.startswith(ring)
    }
    assert {module: targets for module, targets in upward.items() if targets} == {}
