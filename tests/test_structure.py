"""The package's structure: an acyclic import graph, short modules and functions, no
private name shared across modules, no process-wide side effect."""

from __future__ import annotations

import ast
from pathlib import Path

import jrnn

SRC = Path(jrnn.__file__).parent
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 75

# Function-level imports of jrnn modules that are there by design, as (module, imported
# module): the program takes Ctrl-C before jax is imported (jrnn.__main__), and jrnn check
# and the one-line missing-extra errors need none of the training stack (jrnn.cli).
LAZY: set[tuple[str, str]] = {
    ("__main__", "cli"),
    ("__main__", "cli.checkpoint"),
    *(("cli", m) for m in ("cli.checkpoint", "cli.loop", "cli.rundir", "cli.runs")),
    *(("cli", m) for m in ("distributed", "cli.launch")),
    # what needs jax, imported only by the commands that compute: jrnn --help and the
    # commands' --help answer without it (test_main)
    *(("cli", m) for m in ("cli.check", "cli.bench", "cli.infer")),
    ("cli.bench", "bench"),
    ("cli.bench", "bench.report"),
    ("cli.infer", "cli.checkpoint"),
    ("run_config", "tasks"),
}
# Earlier homes of what moved under jrnn.cli, kept as re-exports for documented imports.
SHIMS = {"launch": "cli.launch", "notebook": "cli.notebook", "runs": "cli.runs"}


def _module_name(path: Path) -> str:
    """``path``'s module name inside the package: ``"layers"``, ``"_src.kernels.tpu"``,
    ``"_src.kernels"`` for a package's ``__init__``; ``"__init__"`` for the package's own."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """A dotted ``jrnn.x.y`` import target as a module of the package (``"__init__"`` for
    the package itself; an object imported from a module: that module)."""
    rel = name.removeprefix("jrnn").removeprefix(".")
    while rel and rel not in modules:
        rel = rel.rpartition(".")[0]
    return rel or "__init__"


def _imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """``(module, imported names, at function level)`` for every import of jrnn in ``path``."""
    tree = ast.parse(path.read_text())
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "jrnn" or node.module.startswith("jrnn."):
                found.append((node.module, [a.name for a in node.names], id(node) in nested))
        elif isinstance(node, ast.Import):
            found += [
                (a.name, [], id(node) in nested)
                for a in node.names
                if a.name == "jrnn" or a.name.startswith("jrnn.")
            ]
    return found


def _jrnn_imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported module of the package, at function level)`` for every import in ``path``:
    ``from jrnn.a import b`` imports ``a.b`` if that is a module, else ``a``."""
    modules = _modules()
    found = []
    for module, names, nested in _imports(path):
        targets = [_resolve(f"{module}.{n}", modules) for n in names] or [_resolve(module, modules)]
        found += [(t, nested) for t in targets]
    return found


def _graph() -> dict[str, set[str]]:
    return {
        name: {m for m, _ in _jrnn_imports(path) if m != name}
        for name, path in _modules().items()
        if name != "__init__"
    }


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
        (name, module)
        for name, path in _modules().items()
        for module, nested in _jrnn_imports(path)
        if nested and (name, module) not in LAZY
    ]
    assert late == []


def test_the_core_never_imports_anything_above_it():
    # the recurrence and its machinery know nothing of layers, training, the CLI or adapters
    graph = _graph()
    core = {"activations", "params"} | {m for m in graph if m.startswith("_src.")}
    core -= {"_src.adapters"}  # the flax and NNX drop-ins' shared part sits above the core
    assert {"_src.scan", "_src.bptt", "_src.kernels.tpu"} <= core
    for name in core:
        outside = {m for m in graph[name] if m not in core and m != "_src"}
        outside -= {"_src.kernels"}
        assert not outside, (name, outside)


def test_no_private_name_is_imported_from_another_module():
    # what one module uses of another is named without an underscore
    shared = [
        (name, f"{module}.{n}")
        for name, path in _modules().items()
        for module, names, _ in _imports(path)
        for n in names
        if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))
    ]
    assert shared == []


def test_modules_and_functions_are_short():
    long_modules, long_functions = [], []
    for name, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append((name, len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                # the body, after the docstring
                body = node.body[1:] if ast.get_docstring(node) else node.body
                if body and (n := body[-1].end_lineno - body[0].lineno + 1) > MAX_FUNCTION_LINES:
                    long_functions.append((f"{name}.{node.name}", n))
    assert long_modules == [] and long_functions == []


def _calls(tree: ast.AST) -> list[str]:
    """Every call and assignment target in ``tree`` as dotted text (``np.set_printoptions``,
    ``os.environ[...]=``, ``os.environ.setdefault``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            found.append(ast.unparse(node.func))
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            found += [
                ast.unparse(t).split("[")[0] + "[...]="
                for t in targets
                if isinstance(t, ast.Subscript)
            ]
    return found


FORBIDDEN = {
    "os.environ[...]=": "writes the environment",
    "os.environ.setdefault": "writes the environment",
    "os.environ.update": "writes the environment",
    "os.environ.pop": "writes the environment",
    "os.putenv": "writes the environment",
    "np.set_printoptions": "changes numpy's print options for the process",
    "matplotlib.use": "changes matplotlib's backend for the process",
    "plt.figure": "pyplot's global state",
    "plt.subplots": "pyplot's global state",
}


def test_the_checker_of_side_effects_finds_them():
    code = "os.environ['A'] = '1'\nnp.set_printoptions(precision=3)\nmatplotlib.use('Agg')\n"
    assert [c for c in _calls(ast.parse(code)) if c in FORBIDDEN] == [
        "os.environ[...]=",
        "np.set_printoptions",
        "matplotlib.use",
    ]


def test_no_library_code_changes_process_wide_state():
    found = [
        (name, call, FORBIDDEN[call])
        for name, path in _modules().items()
        for call in _calls(ast.parse(path.read_text()))
        if call in FORBIDDEN
    ]
    assert found == []


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


def test_the_library_never_imports_the_program():
    # the run folder, checkpoints (orbax), locks, launch and the notebook demo serve the
    # jrnn program and live in jrnn.cli; the library's modules know nothing of them
    graph = _graph()
    program = {m for m in graph if m == "cli" or m.startswith("cli.")} | {"__main__", *SHIMS}
    for name in set(graph) - program:
        assert not {m for m in graph[name] if m == "cli" or m.startswith("cli.")}, name
    for name, path in _modules().items():
        if name not in program:
            assert not [m for m, _, _ in _imports(path) if m.split(".")[0] == "orbax"], name


def test_the_earlier_homes_only_re_export():
    for old, new in SHIMS.items():
        tree = ast.parse((SRC / f"{old}.py").read_text())
        body = tree.body[1:]  # after the docstring
        assert all(isinstance(n, ast.ImportFrom) and n.module == f"jrnn.{new}" for n in body)
        module = __import__(f"jrnn.{old}", fromlist=["__all__"])
        target = __import__(f"jrnn.{new}", fromlist=["__all__"])
        assert module.__all__ == target.__all__
        assert all(getattr(module, n) is getattr(target, n) for n in target.__all__)


def test_the_public_names_are_written_in_one_table():
    # __all__ is the lazy table's keys; the imports for type checkers name the same
    # objects from the same modules
    tree = ast.parse((SRC / "__init__.py").read_text())
    checked = next(n for n in tree.body if isinstance(n, ast.If))
    typed = {
        a.asname or a.name: node.module
        for node in checked.body
        if isinstance(node, ast.ImportFrom)
        for a in node.names
    }
    assert typed == jrnn._NAMES
    assert jrnn.__all__ == sorted(jrnn._NAMES)


def test_each_kernel_backend_is_one_module_in_the_table_of_forms():
    from jrnn._src.kernels import forms

    kernels = SRC / "_src" / "kernels"
    backends = {p.stem for p in kernels.glob("*.py")} - {"__init__", "common", "forms"}
    assert backends == set(forms.FORMS)
    graph = _graph()
    for name in backends:
        # a backend takes from the shared module and the compat layer only
        assert graph[f"_src.kernels.{name}"] <= {"_src.kernels.common", "_src.compat"}, name
        source = (kernels / f"{name}.py").read_text()
        assert "\ndef recurrence(" in source, name
