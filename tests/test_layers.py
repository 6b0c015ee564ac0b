"""The package's structure, checked from its source: imports point down the layers and never run in a circle,
alignkit's own imports sit at module top (only the CLI imports lazily, to keep ``--help`` fast), no module
grows past 400 lines, and no process-wide "current" object is read from deep inside.

Each layer may import from its own layer and those below it; the order is the design in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "alignkit"

# top to bottom; a module belongs to the first layer with a prefix matching its dotted name
LAYERS = [
    ("entry points", ["alignkit.cli", "alignkit.__main__"]),
    ("comparison: many runs", ["alignkit.compare"]),
    ("one run", ["alignkit.run"]),
    ("methods and judges", ["alignkit.methods", "alignkit.rewards"]),
    ("reports: run folders to conclusions", ["alignkit.report"]),
    ("shared stages", ["alignkit.stages"]),
    ("run folders", ["alignkit.runfolder", "alignkit.runformat"]),
    ("recipe", ["alignkit.recipe", "alignkit.recipes", "alignkit.trl_names"]),
    ("evaluation", ["alignkit.eval"]),
    ("models", ["alignkit.models"]),
    ("data", ["alignkit.data"]),
    ("training", ["alignkit.training", "alignkit.schedule", "alignkit.losses", "alignkit.artifacts",
                  "alignkit.cache"]),
    ("run context", ["alignkit.context"]),
    ("runtime and checkpoints", ["alignkit.runtime", "alignkit.checkpoint"]),
    ("registry and config", ["alignkit.registry", "alignkit.config", "alignkit.runlog", "alignkit.signatures",
                             "alignkit.threads", "alignkit.memory", "alignkit.rl", "alignkit.trackers",
                             "alignkit"]),
    ("errors, notices and bars", ["alignkit.errors", "alignkit.console"]),
]
LAZY_IMPORTS_ALLOWED = {"alignkit.cli"}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """``alignkit`` itself is the package root (``__init__``: the version and the plugin API re-exported)."""
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or (p != "alignkit" and module.startswith(p + ".")) for p in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS (and docs/ARCHITECTURE.md)")


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "metrics" not in p.parts}


def internal_imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported alignkit module, whether at module top, line) for every import of alignkit code
    in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    known = set(modules())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "alignkit":
            for alias in node.names:  # `from alignkit.models import policy` imports a module
                target = f"{node.module}.{alias.name}"
                found.append((target if target in known else node.module, id(node) in top, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top,
                       node.lineno) for a in node.names if a.name.split(".")[0] == "alignkit"]
    return found


def test_every_module_has_a_layer_and_imports_only_downward():
    upward = []
    for name, path in modules().items():
        for target, _, line in internal_imports(path):
            if layer_of(target) < layer_of(name):
                upward.append(f"{name}:{line} imports {target} ({LAYERS[layer_of(target)][0]} is above "
                              f"{LAYERS[layer_of(name)][0]})")
    assert upward == []


def test_no_import_cycles():
    graph = {name: {t for t, _, _ in internal_imports(path) if t != name} for name, path in modules().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt in graph and not state.get(nxt):
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if not state.get(name):
            visit(name, [name])
    assert cycles == []


def test_alignkit_imports_sit_at_module_top():
    lazy = [f"{name}:{line} imports {target} inside a function"
            for name, path in modules().items() if name not in LAZY_IMPORTS_ALLOWED
            for target, at_top, line in internal_imports(path) if not at_top]
    assert lazy == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_is_at_most_400_lines(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_no_process_wide_current_runtime_or_active_checkpointer():
    for name, path in modules().items():
        text = path.read_text()
        assert "current()" not in text and "_active" not in text, name
