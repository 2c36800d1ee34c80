"""Data parallelism over 8 CPU devices (``--xla_force_host_platform_device_count=8``).

The device count is fixed when JAX starts, so each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest
from helpers import xla_cache_env

from jrnn.distributed import batch_mesh, shard_batch
from jrnn.train import Batch

ENV = {
    **os.environ,
    "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"),
    "JAX_PLATFORMS": "cpu",
    **xla_cache_env(),
}

SHARDED_STEP = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    import jrnn
    from jrnn.distributed import batch_mesh, make_sharded_train_step, replicate, shard_batch
    from jrnn.tasks import get_task

    assert jax.device_count() == 8, jax.devices()
    task = get_task("adding")
    params = jrnn.init_model(jax.random.PRNGKey(0), 2, 16, 1)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    single = jrnn.make_train_step(optimizer)
    mesh = batch_mesh()
    sharded = make_sharded_train_step(optimizer, mesh)

    p1, s1 = params, optimizer.init(params)
    p8, s8 = replicate(params, mesh), replicate(optimizer.init(params), mesh)
    shards, hlo = None, None
    for step in range(5):
        batch = task.sample(jax.random.PRNGKey(step), 64, 20)
        p1, s1, m1 = single(p1, s1, batch)
        split = shard_batch(batch, mesh)
        if shards is None:
            shards = [
                (str(s.device), list(s.data.shape)) for s in split.inputs.addressable_shards
            ]
            hlo = sharded.lower(p8, s8, split).compile().as_text()
        p8, s8, m8 = sharded(p8, s8, split)

    try:
        shard_batch(task.sample(jax.random.PRNGKey(0), 12, 20), mesh)
        indivisible = "no error"
    except ValueError as error:
        indivisible = str(error)

    err = max(
        float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
        for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1))
    )
    print(json.dumps({
        "shards": shards,
        "all_reduce": "all-reduce" in hlo,
        "param_devices": len(jax.tree.leaves(p8)[0].sharding.device_set),
        "loss": [float(m1["loss"]), float(m8["loss"])],
        "err": err,
        "indivisible": indivisible,
    }))
    """
)


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_sharded_train_step_splits_the_batch_and_matches_one_device():
    proc = _python(SHARDED_STEP)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # the batch of 64 really is split: 8 shards of 8 rows on 8 different devices
    assert len(result["shards"]) == 8
    assert {tuple(shape) for _, shape in result["shards"]} == {(8, 20, 2)}
    assert len({device for device, _ in result["shards"]}) == 8
    assert result["all_reduce"]  # XLA reduces the gradients across devices
    assert result["param_devices"] == 8  # params replicated
    assert abs(result["loss"][0] - result["loss"][1]) < 1e-5 * abs(result["loss"][0])
    assert result["err"] < 1e-5  # same params as one device, within float32 rounding
    assert (
        "has 12 rows (the global batch), not a multiple of the 8 devices" in result["indivisible"]
    )


def test_cli_data_parallel(tmp_path):
    common = [
        "--steps",
        "20",
        "--seq-len",
        "10",
        "--hidden",
        "8",
        "--batch",
        "16",
        "--log-every",
        "10",
        "--eval-every",
        "10",
        "--checkpoint-every",
        "10",
        "--schedule",
        "constant",
        "--no-progress",
    ]
    runs = {}
    for name, extra in (("dp", ["--data-parallel"]), ("one", [])):
        out = tmp_path / name
        proc = _python("", "-m", "jrnn", "train", *common, *extra, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads((out / "result.json").read_text())["test"]["loss"]
    assert abs(runs["dp"] - runs["one"]) < 1e-4 * runs["one"]
    resumed = _python(
        "",
        "-m",
        "jrnn",
        "train",
        *common,
        "--steps",
        "30",
        "--data-parallel",
        "--resume",
        "--out",
        str(tmp_path / "dp"),
    )
    assert resumed.returncode == 0, resumed.stderr
    bad = _python(
        "",
        "-m",
        "jrnn",
        "train",
        *common[:6],
        "--batch",
        "12",
        "--data-parallel",
        "--out",
        str(tmp_path / "bad"),
    )
    assert bad.returncode == 2
    assert "--batch 12 is not a multiple of the 8 local devices" in bad.stderr


def test_one_device_mesh_takes_any_batch():
    mesh = batch_mesh(jax.devices()[:1])
    batch = Batch(jax.numpy.ones((3, 4, 2)), jax.numpy.ones((3, 1)))
    assert shard_batch(batch, mesh).inputs.shape == (3, 4, 2)
    with pytest.raises(ValueError, match="devices must hold at least one device"):
        batch_mesh([])
