"""The lean core install: ``import jrnn`` and the functions need only jax, optax, numpy and
jaxtyping, and a missing extra is a one-line error naming the command that installs it.

Each case runs in a subprocess whose imports of the optional packages are blocked (a
``sys.meta_path`` finder raising ``ModuleNotFoundError`` as for an uninstalled package), as
a venv with the core install alone would be.
"""

import subprocess
import sys
import textwrap

import pytest

from jrnn._src.extras import EXTRAS, MissingExtraError, missing_extra

OPTIONAL = sorted(EXTRAS)  # orbax, matplotlib, tqdm, sklearn, filelock, flax, ...

BLOCK = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    for name in list(sys.modules):  # nothing of them imported already
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    """
)


def _run(code: str, blocked: list[str] = OPTIONAL) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code), ",".join(blocked)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_core_works_without_any_extra():
    done = _run(
        """
        import jax, jax.numpy as jnp, optax
        import jrnn
        from jrnn import layers, losses, model, parallel, train, interop, tasks, gradcheck
        params = jrnn.init_params(jax.random.PRNGKey(0), 3, 4)
        xs = jnp.ones((2, 5, 3))
        g = jax.grad(lambda p: jnp.sum(jrnn.rnn(p, xs)[1]))(params)
        assert jrnn.check_grads(params, xs).ok()
        m = model.init_model(jax.random.PRNGKey(1), 2, 8, 1)
        step = train.make_train_step(optax.adam(1e-3))
        batch = tasks.adding_problem(jax.random.PRNGKey(2), 4, 10)
        step(m, optax.adam(1e-3).init(m), batch)
        blocked = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        assert not blocked, blocked
        print("ok")
        """
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize(
    ("module", "package", "extra"),
    [
        ("jrnn.flax", "flax", "flax"),
        ("jrnn.nnx", "flax", "flax"),
        ("jrnn.equinox", "equinox", "equinox"),
    ],
)
def test_a_framework_module_without_its_framework_names_the_extra(module, package, extra):
    done = _run(f"import {module}", [package])
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"jrnn._src.extras.MissingExtraError: {module} needs {package}, which is not "
        f"installed: pip install 'jrnn[{extra}]' (from a clone of jrnn: "
        f"pip install -e '.[{extra}]')"
    )


@pytest.mark.parametrize("package", ["orbax", "matplotlib", "tqdm", "filelock", "sklearn"])
def test_jrnn_train_without_the_train_extra_is_one_line(package, tmp_path):
    done = _run(
        f"""
        from jrnn.__main__ import main
        sys.exit(main(["train", "--steps", "2", "--out", {str(tmp_path / "run")!r}]))
        """,
        [package],
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"jrnn train: error: jrnn train needs {package}, which is not installed: "
        "pip install 'jrnn[train]' (from a clone of jrnn: pip install -e '.[train]')"
    ]
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_jrnn_check_needs_no_extra():
    done = _run(
        """
        from jrnn.__main__ import main
        sys.exit(main(["check", "--batch", "1", "--steps", "2", "--features", "2",
                       "--hidden", "2"]))
        """
    )
    assert done.returncode == 0, done.stderr
    assert "gradient checks passed" in done.stdout


def test_load_run_and_the_digits_task_name_the_train_extra(tmp_path):
    done = _run(
        f"""
        import jrnn
        from jrnn._src.extras import MissingExtraError
        from jrnn.cli.checkpoint import write_config
        from jrnn.run_config import RunConfig
        (p := __import__("pathlib").Path({str(tmp_path)!r}) / "run" / "checkpoints" / "1").mkdir(parents=True)
        write_config(p.parent.parent, RunConfig().to_dict())
        for call in (lambda: jrnn.load_run(p.parent.parent),
                     lambda: jrnn.tasks.load_digits_sequences("test")):
            try:
                call()
            except MissingExtraError as err:
                print(err)
        """
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("jrnn's checkpoints (jrnn train, jrnn.load_run) needs orbax")
    assert lines[1].startswith("the digits task needs sklearn")
    assert all("pip install 'jrnn[train]'" in line for line in lines)


def test_interop_names_the_framework_extra():
    done = _run(
        """
        import jax, jrnn
        from jrnn import interop
        params = jrnn.init_params(jax.random.PRNGKey(0), 2, 3)
        for call in (lambda: interop.to_torch(params), lambda: interop.to_keras(params)):
            try:
                call()
            except ModuleNotFoundError as err:
                print(type(err).__name__, err)
        """,
        ["torch", "keras"],
    )
    assert done.returncode == 0, done.stderr
    torch_line, keras_line = done.stdout.splitlines()
    assert torch_line.startswith("MissingExtraError to_torch needs torch")
    assert "pip install 'jrnn[torch]'" in torch_line
    assert keras_line.startswith("MissingExtraError to_keras needs keras")
    assert "pip install 'jrnn[keras]'" in keras_line


def test_missing_extra_leaves_other_import_errors_alone():
    broken = ModuleNotFoundError("No module named 'scipy.linalg'", name="scipy.linalg")
    assert missing_extra(broken, "x") is broken  # not an optional dependency of jrnn's
    named = missing_extra(ModuleNotFoundError("no", name="orbax.checkpoint"), "y")
    assert isinstance(named, MissingExtraError) and isinstance(named, ModuleNotFoundError)
    assert named.name == "orbax.checkpoint" and "jrnn[train]" in str(named)
    assert missing_extra(named, "z") is named


def test_every_extra_of_pyproject_is_named_for_what_it_serves():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    core = {d.split(">")[0].split("=")[0].split("[")[0] for d in project["dependencies"]}
    assert core == {"jax", "jaxlib", "optax", "numpy", "jaxtyping"}
    extras = project["optional-dependencies"]
    assert set(EXTRAS.values()) <= set(extras)
    assert {"train", "flax", "equinox", "torch", "keras", "docs", "bench", "test"} <= set(extras)


def test_jrnn_bench_runs_on_the_core_install_and_plot_names_the_extra(tmp_path):
    done = _run(
        f"""
        from jrnn.__main__ import main
        argv = ["bench", "--shape", "2,4,3,4", "--repeats", "1", "--warmup", "0",
                "--impl", "jrnn", "--impl", "flax", "--no-progress"]
        assert main(argv) == 0
        sys.exit(main([*argv, "--plot", {str(tmp_path / "b.png")!r}]))
        """
    )
    assert done.returncode == 2, done.stderr
    assert "not installed (flax: pip install 'jrnn[flax]')" in done.stdout  # the peer's row
    assert done.stderr.splitlines()[-1] == (
        "jrnn bench: error: jrnn bench --plot needs matplotlib, which is not installed: "
        "pip install 'jrnn[bench]' (from a clone of jrnn: pip install -e '.[bench]')"
    )
    assert not (tmp_path / "b.png").exists()
