"""rnn(..., remat=k): the segment-recomputing BPTT gives the plain BPTT's values and gradients."""

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import enable_x64, random_problem, specs, tree_rel_err
from hypothesis import given
from hypothesis import strategies as st

import jrnn
import jrnn._src.bptt


@partial(jax.jit, static_argnames=("remat", "loss_kind", "activation", "reverse", "time_major"))
def _grads(params, xs, h0, lengths, remat, loss_kind="all", **kw):
    """The loss, its gradients and ``rnn``'s outputs, compiled once per shape and options
    (the plain BPTT's once for all the ``k`` it is compared with)."""

    def loss(p, x, h):
        hs, h_last = outputs = jrnn.rnn(p, x, h, lengths=lengths, remat=remat, **kw)
        out = 0.5 * jnp.sum(h_last**2)
        if loss_kind == "all":
            out = out + jnp.sum(jnp.sin(hs))
        return out, outputs

    (value, outputs), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
        params, xs, h0
    )
    return value, grads, outputs


@pytest.mark.parametrize(
    "activation,reverse,with_lengths,loss_kind",
    list(itertools.product(["tanh", "relu"], [False, True], [False, True], ["all", "last"])),
)
@pytest.mark.parametrize("k", [1, 3, 4, 12, 50])  # 12 steps: divisible, not, whole, longer
def test_remat_equals_plain_bptt(x64, activation, reverse, with_lengths, loss_kind, k):
    params, xs, h0, lengths = random_problem(
        jax.random.PRNGKey(0), batch=3, steps=12, with_lengths=with_lengths
    )
    kw = dict(activation=activation, reverse=reverse, loss_kind=loss_kind)
    v0, g0, out0 = _grads(params, xs, h0, lengths, None, **kw)
    v1, g1, out1 = _grads(params, xs, h0, lengths, k, **kw)
    assert abs(float(v1) - float(v0)) <= 1e-12 * abs(float(v0))
    assert tree_rel_err(out1, out0) <= 1e-12
    assert tree_rel_err(g1, g0) <= 1e-10


@given(
    spec=specs(
        batch=(1, 3),
        steps=(1, 10),
        features=(3, 3),
        hidden=(4, 4),
        activations=("tanh",),
        time_major=True,
    ),
    k=st.integers(1, 6),
)
def test_remat_property(spec, k):
    with enable_x64(True):
        params, xs, h0, lengths = spec.problem()
        kw = dict(reverse=spec.reverse, time_major=spec.time_major)
        _, g0, out0 = _grads(params, xs, h0, lengths, None, **kw)
        _, g1, out1 = _grads(params, xs, h0, lengths, k, **kw)
        assert tree_rel_err(out1, out0) <= 1e-12
        assert tree_rel_err(g1, g0) <= 1e-10


def test_remat_unbatched_vmap_and_zero_steps(x64):
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(1), batch=4, steps=9)
    loss = lambda p, x, h, r: jnp.sum(jrnn.rnn(p, x, h, remat=r)[1] ** 2)
    per_example = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0, None))
    assert tree_rel_err(per_example(params, xs, h0, 4), per_example(params, xs, h0, None)) <= 1e-10
    hs, h_last = jrnn.rnn(params, xs[:, :0], h0, remat=3)
    assert hs.shape == (4, 0, 6)
    np.testing.assert_array_equal(np.asarray(h_last), np.asarray(h0))


def test_remat_keeps_fewer_states_in_memory():
    """Many-to-one loss at T = 512: XLA's temporary memory drops with remat."""
    params, xs, h0, _ = random_problem(
        jax.random.PRNGKey(2), batch=8, steps=512, features=4, hidden=32, dtype=np.float32
    )

    def temp(remat):
        loss = lambda p: jnp.sum(jrnn.rnn(p, xs, h0, remat=remat)[1] ** 2)
        return jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes

    assert temp(32) < 0.5 * temp(None)


@pytest.mark.parametrize(
    "bad,exc",
    [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("4", TypeError)],
)
def test_remat_bad_values(bad, exc):
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(3), dtype=np.float32)
    with pytest.raises(exc, match="remat must be a positive int"):
        jrnn.rnn(params, xs, h0, remat=bad)
    jrnn.rnn(params, xs, h0, remat=np.int64(2))  # numpy ints are ints


@pytest.mark.parametrize("reverse", [False, True])
def test_remat_traced_lengths_above_t_with_padding(x64, reverse):
    """k not dividing T pads the time axis; traced lengths > T must still act as T."""
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(4), batch=1, steps=3)

    def run(n, remat):
        return jax.jit(lambda n: jrnn.rnn(params, xs, h0, lengths=n, remat=remat, reverse=reverse))(
            n
        )

    for remat in (2, None):
        got = run(jnp.array([4]), remat)  # traced, so not range-checked
        ref = run(jnp.array([3]), None)
        assert tree_rel_err(got, ref) <= 1e-13
    loss = lambda p, n: jnp.sum(jrnn.rnn(p, xs, h0, lengths=n, remat=2, reverse=reverse)[1] ** 2)
    g = jax.jit(jax.grad(loss))(params, jnp.array([4]))
    g_ref = jax.grad(lambda p: jnp.sum(jrnn.forward(p, xs, h0, reverse=reverse)[1] ** 2))(params)
    assert tree_rel_err(g, g_ref) <= 1e-10
