"""jrnn.forward: equal to a plain Python loop, for every option and layout; compiles once."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import enable_x64, random_problem, reference_forward, rel_err, specs, tol
from hypothesis import given

import jrnn

OPTIONS = list(
    itertools.product(["tanh", "relu", "linear"], [False, True], [False, True], [False, True])
)


def _run_layout(fn, params, xs, h0, lengths, layout, **kw):
    """Calls ``fn`` with batch-first inputs rearranged to ``layout``; returns batch-first hs."""
    if layout == "batch_first":
        return fn(params, xs, h0, lengths=lengths, **kw)
    if layout == "time_major":
        hs, h_last = fn(params, jnp.swapaxes(xs, 0, 1), h0, lengths=lengths, time_major=True, **kw)
        return jnp.swapaxes(hs, 0, 1), h_last
    # unbatched: one call per sequence
    outs = [
        fn(
            params,
            xs[i],
            None if h0 is None else h0[i],
            lengths=None if lengths is None else lengths[i],
            **kw,
        )
        for i in range(xs.shape[0])
    ]
    return jnp.stack([o[0] for o in outs]), jnp.stack([o[1] for o in outs])


@pytest.mark.parametrize("activation,reverse,with_lengths,with_h0", OPTIONS)
@pytest.mark.parametrize("layout", ["batch_first", "time_major", "unbatched"])
@pytest.mark.parametrize("fn", [jrnn.forward, jrnn.rnn], ids=["forward", "rnn"])
def test_forward_equals_python_loop_float64(
    x64, fn, layout, activation, reverse, with_lengths, with_h0
):
    params, xs, h0, lengths = random_problem(
        jax.random.PRNGKey(0), with_h0=with_h0, with_lengths=with_lengths
    )
    hs, h_last = _run_layout(
        fn, params, xs, h0, lengths, layout, activation=activation, reverse=reverse
    )
    ref_hs, ref_last = reference_forward(
        params, xs, h0, activation=activation, reverse=reverse, lengths=lengths
    )
    assert hs.dtype == jnp.float64
    assert rel_err(hs, ref_hs) <= tol(np.float64, "forward")
    assert rel_err(h_last, ref_last) <= tol(np.float64, "forward")


@pytest.mark.parametrize("activation,reverse,with_lengths,with_h0", OPTIONS)
def test_forward_equals_python_loop_float32(activation, reverse, with_lengths, with_h0):
    params, xs, h0, lengths = random_problem(
        jax.random.PRNGKey(1), dtype=np.float32, with_h0=with_h0, with_lengths=with_lengths
    )
    hs, h_last = jax.jit(jrnn.forward, static_argnames=("activation", "reverse"))(
        params, xs, h0, activation=activation, reverse=reverse, lengths=lengths
    )
    ref_hs, ref_last = reference_forward(
        params, xs, h0, activation=activation, reverse=reverse, lengths=lengths
    )
    assert hs.dtype == jnp.float32 and h_last.dtype == jnp.float32
    assert rel_err(hs, ref_hs) <= tol(np.float32, "forward")
    assert rel_err(h_last, ref_last) <= tol(np.float32, "forward")


# one compile per drawn shape and option set (eager calls would compile op by op)
_jit_forward = jax.jit(jrnn.forward, static_argnames=("activation", "reverse", "time_major"))


@given(spec=specs(steps=(1, 9), features=(1, 5), hidden=(1, 6)))
def test_forward_property_random_shapes(spec):
    with enable_x64(True):
        params, xs, h0, lengths = spec.problem()
        options = spec.options(lengths)
        hs, h_last = _jit_forward(params, xs, h0, **options)
        del options["time_major"]
        ref_hs, ref_last = reference_forward(params, xs, h0, **options)
        assert hs.shape == (spec.batch, spec.steps, spec.hidden)
        assert h_last.shape == (spec.batch, spec.hidden)
        assert rel_err(hs, ref_hs) <= 1e-12
        assert rel_err(h_last, ref_last) <= 1e-12


def test_lengths_semantics(x64):
    """Padded outputs are zero, h_last is the last valid state, reverse starts at the last valid step."""
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(2), batch=2, steps=6)
    lengths = np.array([4, 6])
    for reverse in (False, True):
        hs, h_last = jrnn.forward(params, xs, h0, lengths=lengths, reverse=reverse)
        np.testing.assert_array_equal(np.asarray(hs[0, 4:]), 0.0)
        # the first sequence alone, truncated to its length, gives the same numbers
        hs0, last0 = jrnn.forward(params, xs[0, :4], h0[0], reverse=reverse)
        np.testing.assert_allclose(np.asarray(hs[0, :4]), np.asarray(hs0), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(h_last[0]), np.asarray(last0), rtol=1e-12)
        # a full length is the same as no lengths
        hs_full, last_full = jrnn.forward(params, xs[1:], h0[1:], reverse=reverse)
        np.testing.assert_allclose(np.asarray(hs[1:]), np.asarray(hs_full), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(h_last[1:]), np.asarray(last_full), rtol=1e-12)
    # reverse equals the forward pass over the time-flipped valid part
    hs_r, _ = jrnn.forward(params, xs[:1, :4], h0[:1], reverse=True)
    hs_f, _ = jrnn.forward(params, xs[:1, :4][:, ::-1], h0[:1])
    np.testing.assert_allclose(np.asarray(hs_r), np.asarray(hs_f[:, ::-1]), rtol=1e-12)


@pytest.mark.parametrize("unroll", [1, 2, 3, True])
def test_unroll_gives_same_numbers(x64, unroll):
    params, xs, h0, lengths = random_problem(jax.random.PRNGKey(3), steps=7, with_lengths=True)
    base = jrnn.forward(params, xs, h0, lengths=lengths)
    for fn in (jrnn.forward, jrnn.rnn):
        out = fn(params, xs, h0, lengths=lengths, unroll=unroll)
        assert rel_err(out[0], base[0]) <= 1e-14
        assert rel_err(out[1], base[1]) <= 1e-14


def test_second_call_same_shapes_does_not_recompile():
    traces = []

    @jax.jit
    def run(params, xs, h0, lengths):
        traces.append(1)
        return jrnn.forward(params, xs, h0, lengths=lengths)

    params, xs, h0, lengths = random_problem(
        jax.random.PRNGKey(4), dtype=np.float32, with_lengths=True
    )
    run(params, xs, h0, lengths)
    params2, xs2, h02, lengths2 = random_problem(
        jax.random.PRNGKey(5), dtype=np.float32, with_lengths=True
    )
    out = run(params2, xs2, h02, lengths2)
    assert len(traces) == 1
    assert not np.allclose(np.asarray(out[1]), np.asarray(run(params, xs, h0, lengths)[1]))
    assert len(traces) == 1
    run(params, xs[:, :3], h0, None)  # a new shape traces again
    assert len(traces) == 2


@pytest.mark.parametrize("fn", [jrnn.forward, jrnn.rnn], ids=["forward", "rnn"])
@pytest.mark.parametrize("time_major", [False, True])
def test_zero_steps_returns_empty_and_h0(x64, fn, time_major):
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(6), batch=2, steps=0)
    if time_major:
        xs = jnp.swapaxes(xs, 0, 1)
    hs, h_last = fn(params, xs, h0, time_major=time_major)
    assert hs.shape == ((0, 2, 6) if time_major else (2, 0, 6))
    np.testing.assert_array_equal(np.asarray(h_last), np.asarray(h0))
    # gradients exist: dh0 = dL/dh_last, the rest zero
    g = jax.grad(lambda p, h: jnp.sum(fn(p, xs, h, time_major=time_major)[1] ** 2), argnums=(0, 1))(
        params, h0
    )
    np.testing.assert_allclose(np.asarray(g[1]), 2 * np.asarray(h0))
    assert all(float(jnp.max(jnp.abs(a))) == 0 for a in g[0])


def test_zero_steps_unbatched_and_backward(x64):
    params = jrnn.init_params(jax.random.PRNGKey(0), 3, 4, dtype=jnp.float64)
    xs = jnp.zeros((0, 3))
    hs, h_last = jrnn.forward(params, xs)
    assert hs.shape == (0, 4) and h_last.shape == (4,)
    dparams, dxs, dh0 = jrnn.backward(params, xs, None, hs, None, jnp.ones(4))
    assert dxs.shape == (0, 3)
    np.testing.assert_array_equal(np.asarray(dh0), 1.0)
    np.testing.assert_array_equal(np.asarray(dparams.w_h), 0.0)


def test_forward_mode_autodiff_through_forward(x64):
    """forward is plain JAX: jvp and jacfwd work and agree with reverse mode."""
    params, xs, h0, lengths = random_problem(jax.random.PRNGKey(7), with_lengths=True)

    def f(x):
        return jrnn.forward(params, x, h0, lengths=lengths, activation="tanh")[1].sum()

    v = jax.random.normal(jax.random.PRNGKey(8), xs.shape, xs.dtype)
    _, tangent = jax.jvp(f, (xs,), (v,))
    grad = jax.grad(f)(xs)
    np.testing.assert_allclose(float(tangent), float(jnp.vdot(grad, v)), rtol=1e-12)
    jac = jax.jacfwd(lambda x: jrnn.forward(params, x, h0)[1])(xs)
    assert jac.shape == (3, 6, 3, 5, 4)


def test_dtype_promotion(x64):
    """float32 params with float64 inputs compute in float64 (numpy-style promotion)."""
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(9), dtype=np.float32)
    hs, h_last = jrnn.forward(params, xs.astype(jnp.float64), h0)
    assert hs.dtype == jnp.float64 and h_last.dtype == jnp.float64
    g = jax.grad(lambda p: jrnn.rnn(p, xs.astype(jnp.float64), h0)[1].sum())(params)
    assert all(a.dtype == jnp.float32 for a in g)
