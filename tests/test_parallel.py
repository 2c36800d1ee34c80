"""Parallel-in-time forward (DEER, quasi-DEER) and BPTT against the sequential scan."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import enable_x64, random_problem, rel_err, specs, tol, tree_rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

import jrnn
from jrnn import parallel


def _loss(fn, **options):
    def loss(params, xs, h0):
        hs, h_last = fn(params, xs, h0, **options)
        return jnp.sum(jnp.sin(hs)) + 0.5 * jnp.sum(h_last**2)

    return loss


@partial(jax.jit, static_argnames=("method", "activation", "reverse", "time_major"))
def _both_ways(params, xs, h0, lengths, *, method, **options):
    """The sequential and the parallel forward and gradients, in one compiled function (run
    eagerly, the gradients would compile op by op)."""
    options["lengths"] = lengths
    sequential = jrnn.forward(params, xs, h0, **options)
    par = parallel.forward(params, xs, h0, method=method, **options)
    ref = jax.grad(_loss(jrnn.forward, **options), argnums=(0, 1, 2))(params, xs, h0)
    grads = jax.grad(_loss(parallel.rnn, method=method, **options), argnums=(0, 1, 2))(
        params, xs, h0
    )
    return sequential, par, ref, grads


@settings(max_examples=6)  # each example compiles its own function (the float32 grid covers more)
@given(
    spec=specs(steps=(1, 16), batch=(1, 3), features=(3, 3), hidden=(1, 6)),
    method=st.sampled_from(parallel.METHODS),
)
def test_parallel_equals_sequential_float64(spec, method):
    with enable_x64(True):
        params, xs, h0, lengths = spec.problem(recurrent_scale=0.5)
        options = spec.options(lengths)
        options.pop("lengths")
        (hs, h_last), (phs, ph_last, info), ref, grads = _both_ways(
            params, xs, h0, lengths, method=method, **options
        )
        assert bool(info.converged) and not bool(info.fell_back)
        assert rel_err(phs, hs) < tol(np.float64, "forward")
        assert rel_err(ph_last, h_last) < tol(np.float64, "forward")
        assert tree_rel_err(grads, ref) < tol(np.float64, "grad")


@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_with_the_sequential_backward(x64, reverse):
    params, xs, h0, lengths = random_problem(
        jax.random.PRNGKey(11), 3, 7, 3, 5, with_lengths=True, recurrent_scale=0.5
    )
    options = {"reverse": reverse, "lengths": lengths}
    ref = jax.grad(_loss(jrnn.forward, **options), argnums=(0, 1, 2))(params, xs, h0)
    grads = jax.grad(_loss(parallel.rnn, backward="sequential", **options), argnums=(0, 1, 2))(
        params, xs, h0
    )
    assert tree_rel_err(grads, ref) < tol(np.float64, "grad")


@pytest.mark.parametrize("method", parallel.METHODS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_parallel_equals_sequential_float32(method, activation):
    params, xs, h0, lengths = random_problem(
        jax.random.PRNGKey(1),
        4,
        64,
        5,
        16,
        dtype=np.float32,
        with_lengths=True,
        recurrent_scale=0.7,
    )
    options = {"activation": activation, "lengths": lengths}
    hs, h_last = jrnn.forward(params, xs, h0, **options)
    phs, ph_last, info = jax.jit(parallel.forward, static_argnames=("activation", "method"))(
        params, xs, h0, method=method, **options
    )
    assert bool(info.converged)
    # the iteration stops at tol = 1e-5 (relative): the states agree to about that
    assert rel_err(phs, hs) < 1e-4 and rel_err(ph_last, h_last) < 1e-4
    ref = jax.jit(jax.grad(_loss(jrnn.forward, **options), argnums=(0, 1, 2)))(params, xs, h0)
    grads = jax.jit(jax.grad(_loss(parallel.rnn, method=method, **options), argnums=(0, 1, 2)))(
        params, xs, h0
    )
    assert tree_rel_err(grads, ref) < 1e-4


def test_parallel_backward_equals_bptt(x64):
    params, xs, h0, lengths = random_problem(jax.random.PRNGKey(2), 3, 9, 4, 5, with_lengths=True)
    for reverse in (False, True):
        options = {"reverse": reverse, "lengths": lengths}
        hs, _ = jrnn.forward(params, xs, h0, **options)
        dhs = jax.random.normal(jax.random.PRNGKey(3), hs.shape, hs.dtype)
        dh_last = jax.random.normal(jax.random.PRNGKey(4), h0.shape, h0.dtype)
        ref = jrnn.backward(params, xs, h0, hs, dhs, dh_last, **options)
        got = parallel.backward(params, xs, h0, hs, dhs, dh_last, **options)
        assert tree_rel_err(got, ref) < tol(np.float64, "grad")
        got = parallel.backward(params, xs, h0, hs, None, dh_last, **options)
        ref = jrnn.backward(params, xs, h0, hs, None, dh_last, **options)
        assert tree_rel_err(got, ref) < tol(np.float64, "grad")


def test_layouts_and_empty_sequences(x64):
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(5), 2, 6, 3, 4, recurrent_scale=0.5)
    tm = jnp.swapaxes(xs, 0, 1)
    hs, h_last = jrnn.forward(params, tm, h0, time_major=True)
    phs, ph_last, _ = parallel.forward(params, tm, h0, time_major=True)
    assert rel_err(phs, hs) < 1e-12 and rel_err(ph_last, h_last) < 1e-12
    one, _one_last, _ = parallel.forward(params, xs[0], h0[0])
    assert one.shape == (6, 4) and rel_err(one, jrnn.forward(params, xs[0], h0[0])[0]) < 1e-12
    empty, last, info = parallel.forward(params, xs[:, :0], h0)
    assert empty.shape == (2, 0, 4) and np.array_equal(last, h0) and bool(info.converged)


def test_newton_converges_in_a_few_iterations_on_a_contractive_rnn():
    params, xs, _, _ = random_problem(
        jax.random.PRNGKey(6),
        2,
        1000,
        4,
        16,
        dtype=np.float32,
        with_h0=False,
        recurrent_scale=0.6,
    )
    hs, _ = jrnn.forward(params, xs)
    _, _, newton = parallel.forward(params, xs, method="newton")
    phs, _, quasi = parallel.forward(params, xs, method="quasi")
    assert bool(newton.converged) and int(newton.iterations) <= 10  # far fewer than T = 1000
    assert bool(quasi.converged) and int(quasi.iterations) < 100
    assert rel_err(phs, hs) < 1e-4


@pytest.mark.parametrize("method", parallel.METHODS)
def test_chaotic_rnn_falls_back_instead_of_returning_nan(method):
    """A large recurrent gain makes the Newton iterates blow up (the documented failure
    mode); the sequential result comes back, and says so."""
    params, xs, _, _ = random_problem(
        jax.random.PRNGKey(7),
        2,
        200,
        3,
        16,
        dtype=np.float32,
        with_h0=False,
        recurrent_scale=2.0,
    )
    hs, h_last = jrnn.forward(params, xs)
    raw, _, raw_info = parallel.forward(params, xs, method=method, fallback=False)
    assert not bool(raw_info.converged)
    assert not np.all(np.isfinite(raw)) or rel_err(raw, hs) > 1e-2  # really wrong
    phs, ph_last, info = parallel.forward(params, xs, method=method)
    assert not bool(info.converged) and bool(info.fell_back)
    np.testing.assert_array_equal(phs, hs)
    np.testing.assert_array_equal(ph_last, h_last)
    grads = jax.jit(jax.grad(_loss(parallel.rnn, method=method), argnums=(0, 1)))(params, xs, None)
    ref = jax.jit(jax.grad(_loss(jrnn.forward), argnums=(0, 1)))(params, xs, None)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert tree_rel_err(grads, ref) < 1e-4  # large (1e6) but finite, and the same


@pytest.mark.parametrize("method", parallel.METHODS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_the_stopping_test_is_relative_for_small_states(method, activation):
    """States of size 1e-5 (small inputs, as early in training) are still solved to a
    relative accuracy, not stopped by an absolute test."""
    params, xs, _, _ = random_problem(
        jax.random.PRNGKey(9),
        2,
        100,
        3,
        8,
        dtype=np.float32,
        with_h0=False,
        recurrent_scale=0.8,
    )
    params = params._replace(b=1e-5 * params.b)
    xs = 1e-5 * xs
    hs, _ = jrnn.forward(params, xs, activation=activation)
    phs, _, info = parallel.forward(params, xs, activation=activation, method=method)
    assert bool(info.converged)
    assert rel_err(phs, hs) < 1e-3


def test_low_precision_stops_at_its_own_rounding():
    params, xs, _, _ = random_problem(
        jax.random.PRNGKey(10),
        2,
        64,
        3,
        8,
        dtype=np.float32,
        with_h0=False,
        recurrent_scale=0.7,
    )
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    _, _, info = parallel.forward(params, xs.astype(jnp.bfloat16))
    assert bool(info.converged) and int(info.iterations) <= 10


def test_vmap_over_params(x64):
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(8), 2, 8, 3, 4, recurrent_scale=0.5)
    ensemble = jax.tree.map(lambda p: jnp.stack([p, 0.5 * p]), params)
    run = jax.vmap(lambda p: parallel.rnn(p, xs, h0)[0])
    out = run(ensemble)
    for i in range(2):
        member = jax.tree.map(lambda p, i=i: p[i], ensemble)
        assert rel_err(out[i], jrnn.forward(member, xs, h0)[0]) < 1e-12


def test_bad_input():
    params, xs, _, _ = random_problem(jax.random.PRNGKey(0), 2, 4, 3, 4, dtype=np.float32)
    with pytest.raises(ValueError, match=r"method must be one of \['newton', 'quasi'\]"):
        parallel.forward(params, xs, method="jacobi")
    with pytest.raises(ValueError, match="backward must be one of"):
        parallel.rnn(params, xs, backward="adjoint")
    for bad in (0, -1e-3, float("inf")):
        with pytest.raises(ValueError, match="tol must be a finite positive number"):
            parallel.forward(params, xs, tol=bad)
    for bad in (True, "1e-3"):  # the wrong kind: a TypeError, as everywhere in jrnn
        with pytest.raises(TypeError, match="tol must be a finite positive number"):
            parallel.forward(params, xs, tol=bad)
    with pytest.raises(ValueError, match="atol must be a finite number >= 0"):
        parallel.forward(params, xs, atol=-1.0)
    parallel.forward(params, xs, tol=np.float32(1e-4), max_iter=np.int64(5))  # numpy scalars
    with pytest.raises(ValueError, match="max_iter must be a positive int"):
        parallel.forward(params, xs, max_iter=0)
    with pytest.raises(ValueError, match="xs has 2 features"):
        parallel.forward(params, xs[..., :2])


def test_empty_batch_gives_empty_outputs_as_the_sequential_scan():
    params, xs, _, _ = random_problem(jax.random.PRNGKey(21), dtype=np.float32)
    hs, h_last, info = parallel.forward(params, xs[:0])
    ref_hs, ref_last = jrnn.forward(params, xs[:0])
    assert hs.shape == ref_hs.shape == (0, 5, 6) and h_last.shape == ref_last.shape == (0, 6)
    assert bool(info.converged)


@pytest.mark.parametrize("method", parallel.METHODS)
def test_a_diverged_run_reports_an_infinite_residual(method):
    params, xs, _, _ = random_problem(jax.random.PRNGKey(22), steps=200, dtype=np.float32)
    params = params._replace(w_h=50 * params.w_h)  # linear and expanding: overflows
    _, _, info = parallel.forward(params, xs, activation="linear", method=method, fallback=False)
    assert not bool(info.converged)
    assert float(info.residual) == np.inf
