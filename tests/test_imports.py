"""No import cycle between the modules of dc_onnx (passes/ included), found statically.

Every `import dc_onnx.x`, `from dc_onnx.x import ...` and `from dc_onnx import x` (x a
submodule) is an edge, TYPE_CHECKING imports included: a cycle hidden behind
TYPE_CHECKING still means two modules that cannot be understood one without the other.
Edges into a package's `__init__` are left out (importing dc_onnx.x runs dc_onnx/__init__).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _modules() -> dict[str, Path]:
    """Module name -> file, for dc_onnx/ and the top-level passes/ (dc_onnx.passes)."""
    found = {}
    for root, package in (
        (REPO_ROOT / "dc_onnx", "dc_onnx"),
        (REPO_ROOT / "passes", "dc_onnx.passes"),
    ):
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root)
            if relative.parts[0] == "passes" and root.name == "dc_onnx":
                continue  # the symlink to ../passes, read below under its real path
            parts = [package, *relative.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    packages = {m for m, p in modules.items() if p.name == "__init__.py"}
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets.add(node.module)
            # `from dc_onnx import x` where x is a submodule imports that submodule.
            targets |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {t for t in targets if t in modules and t not in packages and t != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _edges(name, path, modules) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_covers_the_package() -> None:
    graph = _graph()
    assert "dc_onnx.passes.lower" in graph and "dc_onnx.codecs.schema" in graph
    assert "dc_onnx.options" in graph["dc_onnx.recipes"]
    assert "dc_onnx.codecs.schema" in graph["dc_onnx.passes.lower"]


def test_no_import_cycle() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
