"""The layout of docs/design.md, checked on the source: imports only point down, no circles.

Every ``import`` of a lensmap module (at the top of a file or inside a function) is an edge.
A module may import modules of its own layer or of a lower one (:data:`LAYERS`); metrics/ and
analysis/ never reach the model's forward pass (no capture, readout or loading imports).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1] / "lensmap"

# The flow of docs/design.md, bottom to top. Modules of one layer may import each other.
LAYERS = [
    {"errors", "io", "schema", "frames", "signals", "version", "outputs", "distributed"},
    {"models"},
    {"capture"},
    {"languages"},
    {"data"},
    {"lenses"},
    {"metrics"},
    {"analysis"},
    {"readout"},
    {"evaluation", "training"},
    {"figures"},
    {"config"},
    {"runs"},
    {"cli", "__main__"},
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The lensmap modules ``path`` imports (``from lensmap.x import y`` names y when y is a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("lensmap")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lensmap"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
    return {m for m in out if m in known}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None  # the top-level lensmap/__init__ is above all


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) for name, path in mods.items()}


def test_every_package_has_a_layer():
    for name in modules():
        parts = name.split(".")
        assert len(parts) == 1 or parts[1] in RANK, f"{name} is in no layer of LAYERS (add it to docs/design.md too)"


def test_imports_only_point_down():
    bad = []
    for name, targets in graph().items():
        here = layer_of(name)
        if here is None:
            continue
        for target in targets:
            there = layer_of(target)
            if there is None or there > here:
                bad.append(f"{name} -> {target}")
    assert not bad, "imports that point up the flow:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    edges = graph()
    # a package's __init__ that only re-exports its own submodules is not a cycle with them
    for name in list(edges):
        if (ROOT.parent / name.replace(".", "/") / "__init__.py").exists():
            edges[name] = {t for t in edges[name] if not t.startswith(name + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_pure_layers_never_run_the_model():
    forbidden = ("lensmap.capture", "lensmap.readout", "lensmap.runs", "lensmap.cli", "lensmap.models.loading")
    for name, targets in graph().items():
        if name.split(".")[1:2] in (["metrics"], ["analysis"]):
            reached = sorted(t for t in targets if t.startswith(forbidden))
            assert not reached, f"{name} imports {reached}: metrics/ and analysis/ work on tensors and frames only"
            text = modules()[name].read_text(encoding="utf-8")
            assert ".generate(" not in text and "handle.model(" not in text, f"{name} calls the model"


def test_the_checks_can_fail(tmp_path):
    """The graph reader sees a nested import and an upward edge (so the tests above can fail)."""
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from lensmap.runs.report import run_report\n", encoding="utf-8")
    assert imports(source, {"lensmap.runs.report", "lensmap.runs"}) == {"lensmap.runs.report"}
    assert layer_of("lensmap.runs.report") > layer_of("lensmap.metrics.mass")


def test_every_lensmap_import_in_the_source_resolves():
    """Imports inside functions run only when the function does: check every one of them now."""
    import importlib

    missing = []
    for name, path in sorted(modules().items()):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lensmap"):
                target = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(target, alias.name) and importlib.util.find_spec(f"{node.module}.{alias.name}") is None:
                        missing.append(f"{name}: from {node.module} import {alias.name}")
    assert not missing, "imports that would fail when their function runs:\n" + "\n".join(missing)
