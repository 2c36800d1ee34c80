"""jrnn in the user's own sharded code: Explicit-axes meshes (with and without
``jax.set_mesh``) and ``jax.shard_map`` with ``check_vma=True``, on 4 forced CPU devices.

The device count is fixed when JAX starts, so the cases run in one fresh interpreter
(tests/sharding_cases.py) and each (case, mode) is checked here against one device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import xla_cache_env

SCRIPT = Path(__file__).with_name("sharding_cases.py")
MODES = ("explicit", "set_mesh", "shard_map")
TRAIN_MODES = (
    "explicit",
    "set_mesh",
    "make_sharded_train_step",
    "make_sharded_train_step(jit=False)",
    "make_sharded_train_step(impl=pallas)",
    "shard_map",
)


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, object]]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **xla_cache_env()}
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", MODES)
def test_sharded_equals_one_device(results, mode):
    """Value and gradient of every case on the 4-device mesh, batch split, equal one
    device's: rnn (default h0, lengths in reverse, a mask, remat, time-major,
    grad="autodiff"), forward, bidirectional, stack, model.apply, parallel.rnn and the
    Pallas kernels (interpreted)."""
    cases = {name: row[mode] for name, row in results.items() if name != "train_step"}
    assert len(cases) >= 12, sorted(cases)
    failed = {name: e for name, e in cases.items() if isinstance(e, str) or e >= 2e-5}
    assert not failed, failed


@pytest.mark.parametrize("mode", TRAIN_MODES)
def test_sharded_train_step_equals_one_device(results, mode):
    """One train step (params and metrics) equals one device's, however it is sharded."""
    error = results["train_step"][mode]
    assert not isinstance(error, str), f"train step under {mode}: {error}"
    assert error < 2e-5, f"train step under {mode}: relative error {error}"
