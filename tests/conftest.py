import os
import shutil
import tempfile

import jax
import pytest
from helpers import XLA_CACHE, XLA_TEST_FLAG, enable_x64, xla_cache_options
from hypothesis import HealthCheck, settings

settings.register_profile(
    "jrnn",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=bool(os.environ.get("CI")),
)
# a quick local pass: HYPOTHESIS_PROFILE=dev pytest ...
settings.register_profile("dev", parent=settings.get_profile("jrnn"), max_examples=4)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "jrnn"))


@pytest.fixture
def x64():
    """Runs the test with 64-bit types enabled, restoring the setting afterwards."""
    with enable_x64(True):
        yield


# The core: what the floor CI (pyproject's oldest jax) runs with `pytest -m core`: the
# functions, the BPTT, check_grads, the layers, the model and the train step.
CORE_FILES = {
    "test_rnn.py",
    "test_bptt.py",
    "test_forward.py",
    "test_gradcheck.py",
    "test_layers.py",
    "test_params.py",
    "test_validation.py",
    "test_remat.py",
    "test_train.py",
}


def pytest_ignore_collect(collection_path, config):
    """`-m core` collects the core files alone: the others import what the floor's venv
    does not install (flax, equinox, the newer Pallas modules)."""
    if config.getoption("markexpr") == "core" and collection_path.suffix == ".py":
        return collection_path.name.startswith("test_") and collection_path.name not in CORE_FILES
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in CORE_FILES:
            item.add_marker(pytest.mark.core)


def pytest_configure(config):
    """XLA's CPU backend at -O0 (:data:`helpers.XLA_TEST_FLAG`), and one persistent
    compilation cache for the session: its xdist workers and the
    subprocesses that pass on :func:`helpers.xla_cache_env` load an executable that another
    test compiled from the same program (the CLI runs, the eager scans) instead of compiling
    it again. A cache in a fresh folder changes no result: it holds XLA's own output for
    the same program, compiler and flags."""
    # before any computation starts the CPU backend; the workers and subprocesses inherit it
    flags = os.environ.get("XLA_FLAGS", "")
    if XLA_TEST_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_TEST_FLAG}".strip()
    if XLA_CACHE not in os.environ:  # the controller (or -n 0): the workers inherit it
        os.environ[XLA_CACHE] = config._jrnn_xla_cache = tempfile.mkdtemp(prefix="jrnn-xla-")
    for name, value in xla_cache_options().items():
        jax.config.update(name, value)


def pytest_unconfigure(config):
    path = getattr(config, "_jrnn_xla_cache", None)
    if path is not None:
        os.environ.pop(XLA_CACHE, None)
        shutil.rmtree(path, ignore_errors=True)
