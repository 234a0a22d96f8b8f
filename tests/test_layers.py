"""The package's structure (issue #22): every module sits in one layer and imports only from its own
layer or those below (lazy imports inside functions included; ``TYPE_CHECKING`` blocks are type hints
only), module-level imports form no circle, and no file grows past ~450 lines.

Layers, bottom to top (README "Architecture"):

0. ``stm_probe`` (version, lazy face), ``errors``, ``options``, ``files`` (atomic writes, hashes)
1. ``ops``, ``models``, ``data``, ``label_spaces``, ``checkpoint``: the subjects and their inputs
2. ``core``: the pure computation of every analysis (tensors and arrays in, numbers out)
3. ``runtime``, ``training``, ``speed``: the loop, session, run folder, results I/O, devices, precision;
   the training loop (the data-efficiency probe trains)
4. ``probes``: one file per analysis, declaring its settings, units, measures and outputs
5. ``plots``, ``paper``: figures and tables drawn from files
6. ``api``: what a script or notebook calls
7. ``compare``: several analyses over several models, and the report
8. ``cli``, ``cli_examples``, ``__main__``: argparse only
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stm_probe"
MAX_LINES = 450

LAYERS = {
    "stm_probe": 0, "stm_probe.errors": 0, "stm_probe.options": 0, "stm_probe.files": 0, "stm_probe.resources": 0,
    "stm_probe.ops": 1, "stm_probe.models": 1, "stm_probe.data": 1, "stm_probe.label_spaces": 1,
    "stm_probe.checkpoint": 1,
    "stm_probe.core": 2,
    "stm_probe.runtime": 3, "stm_probe.training": 3, "stm_probe.speed": 3,
    "stm_probe.probes": 4,
    "stm_probe.plots": 5, "stm_probe.paper": 5,
    "stm_probe.api": 6,
    "stm_probe.compare": 7,
    "stm_probe.cli": 8, "stm_probe.cli_examples": 8, "stm_probe.__main__": 8,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def layer(name: str) -> int:
    best = max((prefix for prefix in LAYERS if name == prefix or name.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported stm_probe module, at module level?) of one file, TYPE_CHECKING blocks left out."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    hints = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
             for sub in ast.walk(node)}
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if id(node) in hints:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "stm_probe":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if is_module(sub) else target, id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names if alias.name.split(".")[0] == "stm_probe"]
    return found


FILES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    assert not [module_name(p) for p in FILES if not any(module_name(p) == k or module_name(p).startswith(k + ".")
                                                           for k in LAYERS)]


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = [f"{module_name(p)} (layer {layer(module_name(p))}) imports {target} (layer {layer(target)})"
              for p in FILES for target, _ in imports(p) if layer(target) > layer(module_name(p))]
    assert not upward, "\n".join(upward)


def test_module_level_imports_form_no_circle() -> None:
    graph = {module_name(p): {t for t, top in imports(p) if top and t != module_name(p)} for p in FILES}
    for name in graph:  # importing a submodule runs its package first: not a circle of ours
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, "\n".join(circles)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_file_over_450_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines: split it along its seams"
