"""jrnn.backward (the hand-written BPTT) against jax.grad through forward and finite differences."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import enable_x64, random_problem, rel_err, specs, tol, tree_rel_err
from hypothesis import given
from hypothesis import strategies as st

import jrnn

GRID = list(
    itertools.product(
        ["tanh", "relu", "linear"],  # activation
        [False, True],  # reverse
        [False, True],  # lengths
        [False, True],  # h0 given
        ["all_steps", "final_state"],  # loss
    )
)


def _loss_parts(kind, key, hs_shape, state_shape, dtype):
    """Random linear-plus-quadratic loss weights so that no cotangent is special."""
    k1, k2 = jax.random.split(key)
    w_hs = jax.random.normal(k1, hs_shape, dtype) if kind == "all_steps" else None
    w_last = jax.random.normal(k2, state_shape, dtype)

    def loss(hs, h_last):
        out = jnp.sum(w_last * h_last) + 0.5 * jnp.sum(h_last**2)
        if w_hs is not None:
            out = out + jnp.sum(w_hs * hs) + 0.25 * jnp.sum(hs**2)
        return out

    return loss


def _grads_both_ways(params, xs, h0, lengths, loss, *, batch=None, **kw):
    """(jrnn.backward, jax.grad through forward), each traced and compiled once."""
    batch = xs.shape[0] if batch is None else batch
    h0_arr = jnp.zeros((batch, params.w_h.shape[0]), xs.dtype) if h0 is None else h0

    def total(p, x, h):
        return loss(*jrnn.forward(p, x, h, lengths=lengths, **kw))

    def hand(p, x, h):
        hs, h_last = jrnn.forward(p, x, h, lengths=lengths, **kw)
        dhs, dh_last = jax.grad(loss, argnums=(0, 1))(hs, h_last)
        return jrnn.backward(p, x, h, hs, dhs, dh_last, lengths=lengths, **kw)

    autodiff = jax.jit(jax.grad(total, argnums=(0, 1, 2)))(params, xs, h0_arr)
    bptt = jax.jit(hand)(params, xs, h0)
    return bptt, autodiff


@pytest.mark.parametrize("activation,reverse,with_lengths,with_h0,loss_kind", GRID)
def test_backward_matches_autodiff_float64(
    x64, activation, reverse, with_lengths, with_h0, loss_kind
):
    params, xs, h0, lengths = random_problem(
        jax.random.PRNGKey(10), with_h0=with_h0, with_lengths=with_lengths
    )
    loss = _loss_parts(loss_kind, jax.random.PRNGKey(11), (3, 5, 6), (3, 6), jnp.float64)
    bptt, autodiff = _grads_both_ways(
        params, xs, h0, lengths, loss, activation=activation, reverse=reverse
    )
    assert tree_rel_err(bptt, autodiff) <= tol(np.float64, "grad")


@pytest.mark.parametrize("activation,reverse,with_lengths,with_h0,loss_kind", GRID[::3])
def test_backward_matches_autodiff_float32(activation, reverse, with_lengths, with_h0, loss_kind):
    params, xs, h0, lengths = random_problem(
        jax.random.PRNGKey(12), dtype=np.float32, with_h0=with_h0, with_lengths=with_lengths
    )
    loss = _loss_parts(loss_kind, jax.random.PRNGKey(13), (3, 5, 6), (3, 6), jnp.float32)
    bptt, autodiff = _grads_both_ways(
        params, xs, h0, lengths, loss, activation=activation, reverse=reverse
    )
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(bptt))
    assert tree_rel_err(bptt, autodiff) <= tol(np.float32, "grad")


FD_GRID = list(itertools.product(["tanh", "relu", "linear"], [False, True], [False, True]))


@pytest.mark.parametrize("activation,reverse,with_lengths", FD_GRID)
@pytest.mark.parametrize("loss_kind", ["all_steps", "final_state"])
def test_bptt_autodiff_finite_differences_agree(x64, activation, reverse, with_lengths, loss_kind):
    params, xs, h0, lengths = random_problem(
        jax.random.PRNGKey(14), batch=2, steps=4, features=3, hidden=4, with_lengths=with_lengths
    )
    loss = _loss_parts(loss_kind, jax.random.PRNGKey(15), (2, 4, 4), (2, 4), jnp.float64)
    # a ReLU kink within the stencil would spoil a difference: use a smaller step there
    eps = 1e-5 if activation == "relu" else 1e-3
    report = jrnn.check_grads(
        params, xs, h0, loss=loss, activation=activation, reverse=reverse, lengths=lengths, eps=eps
    )
    assert all(r.fd_entries == int(np.prod(r.shape)) for r in report.rows)
    assert report.max_bptt_autodiff_rel <= tol(np.float64, "grad")
    assert report.max_bptt_fd_rel <= tol(np.float64, "fd")
    assert report.max_autodiff_fd_rel <= tol(np.float64, "fd")


@given(
    spec=specs(steps=(1, 8), h0=True, time_major=True),
    loss_kind=st.sampled_from(["all_steps", "final_state"]),
)
def test_backward_property_random_shapes(spec, loss_kind):
    with enable_x64(True):
        params, xs, h0, lengths = spec.problem()
        b, t, h = spec.batch, spec.steps, spec.hidden
        loss = _loss_parts(
            loss_kind, jax.random.PRNGKey(spec.seed + 1), (b, t, h), (b, h), jnp.float64
        )
        if spec.time_major:
            tm_loss = lambda hs, h_last: loss(jnp.swapaxes(hs, 0, 1), h_last)
        options = {
            "activation": spec.activation,
            "reverse": spec.reverse,
            "time_major": spec.time_major,
        }
        bptt, autodiff = _grads_both_ways(
            params, xs, h0, lengths, tm_loss if spec.time_major else loss, batch=b, **options
        )
        assert tree_rel_err(bptt, autodiff) <= 1e-10


@pytest.mark.parametrize("reverse", [False, True])
def test_backward_unbatched(x64, reverse):
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(16), batch=1)
    x1, h1 = xs[0], h0[0]
    hs, h_last = jrnn.forward(params, x1, h1, reverse=reverse)
    dhs = jnp.cos(hs)
    dparams, dxs, dh0 = jrnn.backward(params, x1, h1, hs, dhs, h_last, reverse=reverse)
    assert dxs.shape == x1.shape and dh0.shape == h1.shape

    def total(p, x, h):
        hs_, hl_ = jrnn.forward(p, x, h, reverse=reverse)
        return jnp.sum(jnp.sin(hs_)) + 0.5 * jnp.sum(hl_**2)

    ref = jax.grad(total, argnums=(0, 1, 2))(params, x1, h1)
    assert tree_rel_err((dparams, dxs, dh0), ref) <= 1e-10


def test_backward_no_cotangents_gives_zeros(x64):
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(17))
    hs, _ = jrnn.forward(params, xs, h0)
    dparams, dxs, dh0 = jrnn.backward(params, xs, h0, hs, None, None)
    for a in (*dparams, dxs, dh0):
        np.testing.assert_array_equal(np.asarray(a), 0.0)


def test_backward_h0_none_returns_dh0(x64):
    params, xs, _, _ = random_problem(jax.random.PRNGKey(18), with_h0=False)
    hs, h_last = jrnn.forward(params, xs)
    _, _, dh0 = jrnn.backward(params, xs, None, hs, None, h_last)
    ref = jax.grad(lambda h: 0.5 * jnp.sum(jrnn.forward(params, xs, h)[1] ** 2))(jnp.zeros((3, 6)))
    assert dh0.shape == (3, 6)
    assert rel_err(dh0, ref) <= 1e-12


def test_long_sequence_float32_and_float64(x64):
    """A longer sequence (T = 200) at the float32 tolerance, and tight in float64."""
    for dtype, rtol in ((np.float32, 1e-5), (np.float64, 1e-10)):
        params, xs, h0, lengths = random_problem(
            jax.random.PRNGKey(19),
            batch=4,
            steps=200,
            features=8,
            hidden=16,
            dtype=dtype,
            with_lengths=True,
            recurrent_scale=0.9,
        )
        loss = _loss_parts("all_steps", jax.random.PRNGKey(20), (4, 200, 16), (4, 16), dtype)
        bptt, autodiff = _grads_both_ways(params, xs, h0, lengths, loss)
        assert tree_rel_err(bptt, autodiff) <= rtol
