"""The package's structure: its import graph has no cycle and needs no function-level import."""

from __future__ import annotations

import ast
from pathlib import Path

import jrnn

SRC = Path(jrnn.__file__).parent

# Function-level imports of jrnn modules that are there by design (none today; a lazy import
# to keep a command light would be listed here as (module, imported module)).
LAZY: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    return path.stem


def _jrnn_imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported jrnn module, at function level)`` for every import in ``path``."""
    tree = ast.parse(path.read_text())
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "jrnn":  # `from jrnn import x`: x a submodule or a name
                found += [(f"jrnn.{a.name}", id(node) in nested) for a in node.names]
                found += [("jrnn", id(node) in nested)] * any(
                    not (SRC / f"{a.name}.py").exists() for a in node.names
                )
            elif node.module.startswith("jrnn."):
                found.append((node.module, id(node) in nested))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in nested) for a in node.names if a.name.startswith("jrnn")]
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p) for p in SRC.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in SRC.glob("*.py"):
        name = _module_name(path)
        if name == "__init__":
            continue
        imported = {m.split(".")[1] if "." in m else "__init__" for m, _ in _jrnn_imports(path)}
        graph[name] = imported & (modules | {"__init__"})
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_the_package_itself():
    # the package imports its modules: a module that imports the package closes a cycle
    importers = [name for name, imported in _graph().items() if "__init__" in imported]
    assert importers == []


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert len(graph) >= 15  # every module was read
    assert _find_cycle(graph) is None, _find_cycle(graph)


def test_no_function_level_import_of_a_jrnn_module():
    late = [
        (_module_name(path), module)
        for path in SRC.glob("*.py")
        for module, nested in _jrnn_imports(path)
        if nested and (_module_name(path), module) not in LAZY
    ]
    assert late == []


def test_the_core_never_imports_training_or_the_command_line():
    graph = _graph()
    core = {"activations", "params", "_validate", "_checks", "forward", "bptt", "remat", "vjp"}
    upper = {"train", "tasks", "cli", "checkpoint", "runs", "model", "distributed", "layers"}
    for name in core:
        assert not graph[name] & upper, (name, graph[name] & upper)


def test_public_names_are_the_packages_all():
    assert sorted(jrnn.__all__) == sorted(set(jrnn.__all__))
    for name in jrnn.__all__:
        assert not name.startswith("_") and hasattr(jrnn, name), name


def test_submodules_are_attributes_imported_on_first_use():
    import subprocess
    import sys

    code = (
        "import sys, jrnn\n"
        "heavy = [m for m in ('jrnn.cli', 'jrnn.parallel', 'orbax.checkpoint', 'matplotlib', 'sklearn')"
        " if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
        "assert jrnn.tasks.get_task('adding').name == 'adding'\n"
        "for name in ('interop', 'parallel', 'distributed', 'cli', 'runs'):\n"
        "    assert getattr(jrnn, name).__name__ == 'jrnn.' + name\n"
        "assert callable(jrnn.forward) and callable(jrnn.rnn)\n"
        "try:\n    jrnn.nope\nexcept AttributeError as e:\n    assert 'nope' in str(e)\n"
        "else:\n    raise SystemExit('no AttributeError')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
