"""jrnn in a user's own sharded JAX code, on 4 forced CPU devices: run by test_sharding.py.

Every case is a loss over one entry point (default ``h0``, ``lengths``, a recurrent mask,
``remat``, ...) whose value and gradient are computed three ways on a 4-device mesh with
the batch split: an Explicit-axes mesh (``jax.make_mesh``'s default) under plain ``jit``,
the same inside ``jax.set_mesh``, and inside ``jax.shard_map`` with its default
``check_vma=True`` (the loss a sum, so the shards' values add up). Printed: one JSON
object, the largest relative error of each (case, mode) against one device, or the error.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
)

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jrnn
from jrnn import model, parallel
from jrnn.distributed import make_sharded_train_step

B, T, F, H = 8, 6, 3, 5
KEY = jax.random.PRNGKey(0)
k1, k2, k3, k4 = jax.random.split(KEY, 4)
XS = jax.random.normal(k1, (B, T, F))
LENGTHS = jnp.array([6, 3, 0, 5, 6, 1, 2, 4], jnp.int32)
MASK = jax.random.uniform(k2, (B, H)) + 0.5
PARAMS = jrnn.init_params(k3, F, H)
BI = jrnn.BiRNNParams(PARAMS, jrnn.init_params(k4, F, H))
STACK = jrnn.init_stack(k4, F, H, 2)
MODEL = jrnn.init_model(k3, F, H, 2, num_layers=2)


def _sum(tree):
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree))


CASES = {
    # name: (params, loss(params, xs, lengths, mask))
    "rnn": (PARAMS, lambda p, x, n, m: _sum(jrnn.rnn(p, x))),
    "rnn_lengths_reverse": (
        PARAMS,
        lambda p, x, n, m: _sum(jrnn.rnn(p, x, lengths=n, reverse=True)),
    ),
    "rnn_mask_relu": (
        PARAMS,
        lambda p, x, n, m: _sum(jrnn.rnn(p, x, recurrent_mask=m, activation="relu")),
    ),
    "rnn_remat": (PARAMS, lambda p, x, n, m: _sum(jrnn.rnn(p, x, lengths=n, remat=4))),
    # a batch-sharded h0 of the user's (the mask's array, shifted)
    "rnn_h0": (PARAMS, lambda p, x, n, m: _sum(jrnn.rnn(p, x, m - 1.0, lengths=n))),
    "rnn_time_major": (
        PARAMS,
        lambda p, x, n, m: _sum(jrnn.rnn(p, jnp.swapaxes(x, 0, 1), time_major=True)[1]),
    ),
    "rnn_autodiff": (
        PARAMS,
        lambda p, x, n, m: _sum(jrnn.rnn(p, x, lengths=n, grad="autodiff")),
    ),
    "forward": (PARAMS, lambda p, x, n, m: _sum(jrnn.forward(p, x, lengths=n))),
    "bidirectional": (BI, lambda p, x, n, m: _sum(jrnn.bidirectional(p, x, lengths=n))),
    "stack": (STACK, lambda p, x, n, m: _sum(jrnn.stack(p, x, lengths=n))),
    "model": (
        MODEL,
        lambda p, x, n, m: _sum(model.apply(p, x, lengths=n, return_sequences=True)[0]),
    ),
    "parallel": (PARAMS, lambda p, x, n, m: _sum(parallel.rnn(p, x, lengths=n)[:2])),
    "pallas_interpret": (PARAMS, lambda p, x, n, m: _sum(jrnn.rnn(p, x, lengths=n, impl="pallas"))),
}


def _error(got, want) -> float:
    return max(
        float(
            np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(np.asarray(b))) + 1e-30)
        )
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
    )


def main(names: list[str]) -> None:
    assert jax.device_count() == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("batch",))
    batch = NamedSharding(mesh, P("batch"))
    rep = NamedSharding(mesh, P())
    xs, lengths, mask = (jax.device_put(a, batch) for a in (XS, LENGTHS, MASK))
    results: dict[str, dict[str, object]] = {}
    for name in [case for case in names if case in CASES]:
        params, loss = CASES[name]
        want = jax.value_and_grad(loss)(params, XS, LENGTHS, MASK)
        p = jax.device_put(params, rep)
        row: dict[str, object] = {}

        def explicit(p=p, loss=loss):
            return jax.jit(jax.value_and_grad(loss))(p, xs, lengths, mask)

        def set_mesh(p=p, loss=loss):
            with jax.set_mesh(mesh):
                return jax.jit(jax.value_and_grad(loss))(p, xs, lengths, mask)

        def shard_map(p=p, loss=loss):
            def local(p, x, n, m):
                value, grads = jax.value_and_grad(loss)(p, x, n, m)
                return jax.lax.psum(value, "batch"), grads

            mapped = jax.shard_map(
                local,
                mesh=mesh,
                in_specs=(P(), P("batch"), P("batch"), P("batch")),
                out_specs=(P(), P()),
            )
            return jax.jit(mapped)(p, xs, lengths, mask)

        for mode, run in (("explicit", explicit), ("set_mesh", set_mesh), ("shard_map", shard_map)):
            try:
                row[mode] = _error(run(), want)
            except Exception as error:  # reported, not raised: the test names the case
                row[mode] = f"{type(error).__name__}: {str(error)[:400]}"
        results[name] = row
    if "train_step" in names:
        results["train_step"] = _train_step(mesh)
    print(json.dumps(results))


def _train_step(mesh) -> dict[str, object]:
    """make_train_step under jit on the Explicit mesh, make_sharded_train_step on it, and
    make_train_step(axis_name=) inside shard_map: each against one device's step."""
    optimizer = optax.adam(1e-2)
    data = jrnn.Batch(XS, jax.random.normal(k4, (B, 2)), LENGTHS)
    state = optimizer.init(MODEL)
    want = jrnn.make_train_step(optimizer)(MODEL, state, data)
    rep, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
    p, s, d = jax.device_put(MODEL, rep), jax.device_put(state, rep), jax.device_put(data, split)
    row: dict[str, object] = {}

    def step_explicit():
        return jrnn.make_train_step(optimizer)(p, s, d)

    def step_set_mesh():
        with jax.set_mesh(mesh):
            return jrnn.make_train_step(optimizer)(p, s, d)

    def step_sharded():
        return make_sharded_train_step(optimizer, mesh)(p, s, d)

    def step_sharded_in_own_jit():
        return jax.jit(make_sharded_train_step(optimizer, mesh, jit=False))(p, s, d)

    def step_sharded_kernels():  # Explicit axes: one kernel per shard
        return make_sharded_train_step(optimizer, mesh, impl="pallas")(p, s, d)

    def step_shard_map():
        step = jrnn.make_train_step(optimizer, jit=False, axis_name="batch")
        mapped = jax.shard_map(
            step, mesh=mesh, in_specs=(P(), P(), P("batch")), out_specs=(P(), P(), P())
        )
        return jax.jit(mapped)(p, s, d)

    for mode, run in (
        ("explicit", step_explicit),
        ("set_mesh", step_set_mesh),
        ("make_sharded_train_step", step_sharded),
        ("make_sharded_train_step(jit=False)", step_sharded_in_own_jit),
        ("make_sharded_train_step(impl=pallas)", step_sharded_kernels),
        ("shard_map", step_shard_map),
    ):
        try:
            got = run()
            row[mode] = max(_error(got[0], want[0]), _error(got[2], want[2]))
        except Exception as error:
            row[mode] = f"{type(error).__name__}: {str(error)[:400]}"
    return row


if __name__ == "__main__":
    main(sys.argv[1:] or [*CASES, "train_step"])
