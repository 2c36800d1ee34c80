"""jax.export of functions built on jrnn: serialized round trips, symbolic batch and time,
several platforms (the kernels too), and the one-line refusals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tree_rel_err
from jax import export

import jrnn
from jrnn import parallel

KEY = jax.random.PRNGKey(0)
PARAMS = jrnn.init_params(KEY, 3, 5)
XS = jax.random.normal(jax.random.PRNGKey(1), (4, 7, 3))
LENGTHS = jnp.array([7, 3, 0, 5], jnp.int32)


def _round_trip(fn, *args, platforms=None, specs=None):
    """``fn`` exported (at ``specs`` if given, else at ``args``), serialized, deserialized
    and called on ``args``."""
    exported = export.export(jax.jit(fn), platforms=platforms)(*(specs or args))
    return export.deserialize(exported.serialize()).call(*args)


def test_public_types_serialize_under_their_names():
    """Params, models, batches and the parallel info cross a serialization as their own
    types (registered at import under stable names)."""
    model = jrnn.init_model(KEY, 3, 5, 2, num_layers=2)
    batch = jrnn.Batch(XS, jnp.ones((4, 2)), LENGTHS)
    loss = jax.grad(lambda m, b: jrnn.train.loss_and_metrics(m, b)[0])
    got = _round_trip(loss, model, batch)
    assert isinstance(got, jrnn.ModelParams) and isinstance(got.head, jrnn.model.Dense)
    assert tree_rel_err(got, loss(model, batch)) <= 1e-6
    grads = _round_trip(jax.grad(lambda p: jnp.sum(jrnn.rnn(p, XS)[0])), PARAMS)
    assert isinstance(grads, jrnn.RNNParams)
    bi = jrnn.BiRNNParams(PARAMS, PARAMS)
    assert isinstance(_round_trip(lambda p: p, bi), jrnn.BiRNNParams)
    assert isinstance(_round_trip(lambda b: b, batch), jrnn.Batch)
    info = _round_trip(lambda p, x: parallel.forward(p, x)[2], PARAMS, XS)
    assert isinstance(info, parallel.ParallelInfo)


@pytest.mark.parametrize(
    "options",
    [{}, {"reverse": True}, {"remat": 3}, {"time_major": True}, {"grad": "autodiff"}],
    ids=["plain", "reverse", "remat", "time_major", "autodiff"],
)
def test_symbolic_batch_and_time(options):
    """One export at symbolic (b, t), with lengths, serves any batch and length."""
    time_major = options.get("time_major", False)
    b, t = export.symbolic_shape("b, t")
    x_spec = jax.ShapeDtypeStruct((t, b, 3) if time_major else (b, t, 3), jnp.float32)
    n_spec = jax.ShapeDtypeStruct((b,), jnp.int32)

    def loss(p, x, n):
        hs, h_last = jrnn.rnn(p, x, lengths=n, **options)
        return jnp.sum(hs**2) + jnp.sum(jnp.sin(h_last))

    exported = export.export(jax.jit(jax.value_and_grad(loss)))(PARAMS, x_spec, n_spec)
    restored = export.deserialize(exported.serialize())
    for batch, steps in ((4, 7), (2, 11)):
        xs = jax.random.normal(jax.random.PRNGKey(batch), (batch, steps, 3))
        xs = jnp.swapaxes(xs, 0, 1) if time_major else xs
        n = jnp.minimum(jnp.arange(batch, dtype=jnp.int32) * 3, steps)
        got = restored.call(PARAMS, xs, n)
        assert tree_rel_err(got, jax.value_and_grad(loss)(PARAMS, xs, n)) <= 1e-5


def test_a_model_at_symbolic_shapes():
    b, t = export.symbolic_shape("b, t")
    model = jrnn.init_model(KEY, 3, 5, 2, num_layers=2)
    spec = jax.ShapeDtypeStruct((b, t, 3), jnp.float32)
    fn = lambda m, x: jrnn.model.apply(m, x, return_sequences=True)[0]
    exported = export.export(jax.jit(fn))(model, spec)
    got = export.deserialize(exported.serialize()).call(model, XS)
    assert np.allclose(got, fn(model, XS), atol=1e-6)


@pytest.mark.parametrize("impl", ["scan", "pallas"])
def test_several_platforms(impl):
    """One artifact for CPU, TPU and CUDA: the scan loop everywhere, or each platform's
    own kernel; here it runs the CPU one."""

    def loss(p, x):
        return jnp.sum(jrnn.rnn(p, x, lengths=LENGTHS, impl=impl)[0] ** 2)

    fn = jax.value_and_grad(loss)
    exported = export.export(jax.jit(fn), platforms=("cpu", "tpu", "cuda"))(PARAMS, XS)
    assert exported.platforms == ("cpu", "tpu", "cuda")
    text = exported.mlir_module()
    if impl == "pallas":  # each platform's own kernel is in the module
        assert "tpu_custom_call" in text
        assert "triton" in text.lower() or "mosaic_gpu" in text.lower()
    got = export.deserialize(exported.serialize()).call(PARAMS, XS)
    want = jax.value_and_grad(lambda p, x: jnp.sum(jrnn.rnn(p, x, lengths=LENGTHS)[0] ** 2))
    assert tree_rel_err(got, want(PARAMS, XS)) <= 1e-5


@pytest.mark.parametrize("platforms", [("cuda", "tpu"), ("cpu", "tpu"), ("tpu", "cuda")])
def test_the_kernels_export_for_any_two_platforms(platforms):
    """The pairs that failed inside JAX when every kernel was lowered for every platform."""
    fn = jax.grad(lambda p, x: jnp.sum(jrnn.rnn(p, x, impl="pallas")[0] ** 2))
    exported = export.export(jax.jit(fn), platforms=platforms)(PARAMS, XS)
    assert exported.platforms == platforms and exported.serialize()


def test_pallas_at_symbolic_shapes_is_refused_in_one_line():
    b, t = export.symbolic_shape("b, t")
    spec = jax.ShapeDtypeStruct((b, t, 3), jnp.float32)
    with pytest.raises(ValueError, match=r"impl='pallas' tiles a known shape.*impl='scan'"):
        export.export(jax.jit(lambda p, x: jrnn.rnn(p, x, impl="pallas")))(PARAMS, spec)
    # auto takes the scan loop there
    export.export(jax.jit(lambda p, x: jrnn.rnn(p, x, impl="auto")))(PARAMS, spec)
