"""Bad input: every public function names the argument, the expected shape/type and the one received."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import enable_x64

import jrnn

FNS = [jrnn.forward, jrnn.rnn]


@pytest.fixture
def good():
    params = jrnn.init_params(jax.random.PRNGKey(0), 4, 6)
    xs = jnp.ones((3, 5, 4))
    h0 = jnp.zeros((3, 6))
    return params, xs, h0


@pytest.mark.parametrize("fn", FNS, ids=["forward", "rnn"])
@pytest.mark.parametrize(
    "change,exc,pattern",
    [
        (
            lambda p, x, h: (p, jnp.ones((3, 5, 7)), h),
            ValueError,
            r"xs has 7 features.*input_size = 4",
        ),
        (
            lambda p, x, h: (p, jnp.ones((3, 5, 4, 1)), h),
            ValueError,
            r"xs must be .*got shape \(3, 5, 4, 1\)",
        ),
        (lambda p, x, h: (p, jnp.ones(4), h), ValueError, r"xs must be"),
        (
            lambda p, x, h: (p, jnp.ones((3, 5, 4), jnp.int32), h),
            TypeError,
            r"xs must have a real floating dtype.*int32",
        ),
        (
            lambda p, x, h: (p, jnp.ones((3, 5, 4), jnp.complex64), h),
            TypeError,
            r"xs .*complex dtype complex64",
        ),
        (
            lambda p, x, h: (p, x, jnp.zeros((2, 6))),
            ValueError,
            r"h0 must have shape \(batch, hidden_size\) = \(3, 6\); got \(2, 6\)",
        ),
        (
            lambda p, x, h: (p, x, jnp.zeros(6)),
            ValueError,
            r"h0 must have shape .*\(3, 6\); got \(6,\)",
        ),
        (
            lambda p, x, h: (p, x, jnp.zeros((3, 6), jnp.int32)),
            TypeError,
            r"h0 must have a real floating dtype",
        ),
        (
            lambda p, x, h: (tuple(p), x, h),
            TypeError,
            r"params must be a jrnn.RNNParams.*got tuple",
        ),
        (
            lambda p, x, h: ({"w_x": p.w_x}, x, h),
            TypeError,
            r"params must be a jrnn.RNNParams.*got dict",
        ),
        (
            lambda p, x, h: (p._replace(w_h=jnp.ones((6, 5))), x, h),
            ValueError,
            r"params.w_h must have shape .*\(6, 6\).*got \(6, 5\)",
        ),
        (
            lambda p, x, h: (p._replace(b=jnp.ones((5,))), x, h),
            ValueError,
            r"params.b must have shape .*\(6,\).*got \(5,\)",
        ),
        (
            lambda p, x, h: (p._replace(w_x=jnp.ones((4, 6, 1))), x, h),
            ValueError,
            r"params.w_x must be 2-D",
        ),
        (
            lambda p, x, h: (p._replace(w_x=jnp.ones((4, 6), jnp.int32)), x, h),
            TypeError,
            r"params.w_x must have a real floating",
        ),
    ],
)
def test_bad_arrays(good, fn, change, exc, pattern):
    params, xs, h0 = change(*good)
    with pytest.raises(exc, match=pattern):
        fn(params, xs, h0)
    with pytest.raises(exc, match=pattern):  # also under jit, at trace time
        jax.jit(fn)(params, xs, h0) if not isinstance(params, dict) else fn(params, xs, h0)


@pytest.mark.parametrize("fn", FNS, ids=["forward", "rnn"])
@pytest.mark.parametrize(
    "lengths,exc,pattern",
    [
        (
            np.array([1, 2, 6]),
            ValueError,
            r"lengths must lie in \[0, T\] = \[0, 5\]; got values from 1 to 6",
        ),
        (np.array([-1, 2, 3]), ValueError, r"lengths must lie in \[0, T\].*-1"),
        (np.array([1, 2]), ValueError, r"lengths must have shape \(batch,\) = \(3,\); got \(2,\)"),
        (np.array([[1, 2, 3]]), ValueError, r"lengths must have shape"),
        (np.array([1.0, 2.0, 3.0]), TypeError, r"lengths must have an integer dtype; got float64"),
    ],
)
def test_bad_lengths(good, fn, lengths, exc, pattern):
    params, xs, h0 = good
    with pytest.raises(exc, match=pattern):
        fn(params, xs, h0, lengths=lengths)


def test_traced_lengths_are_not_range_checked_but_clip(good):
    params, xs, h0 = good
    run = jax.jit(lambda n: jrnn.forward(params, xs, h0, lengths=n))
    _hs_big, last_big = run(jnp.array([9, 9, 9]))  # > T acts as T
    _hs_full, last_full = jrnn.forward(params, xs, h0)
    np.testing.assert_allclose(np.asarray(last_big), np.asarray(last_full), rtol=1e-6)


@pytest.mark.parametrize("fn", FNS, ids=["forward", "rnn"])
@pytest.mark.parametrize(
    "kwargs,exc,pattern",
    [
        (
            {"activation": "sigmoid"},
            ValueError,
            r"activation must be one of \['linear', 'relu', 'tanh'\] or a callable; got 'sigmoid'",
        ),
        ({"activation": None}, TypeError, r"activation must be a string"),
        ({"reverse": "yes"}, TypeError, r"reverse must be a bool"),
        ({"time_major": 1}, TypeError, r"time_major must be a bool"),
        ({"unroll": 0}, ValueError, r"unroll must be a positive int"),
        ({"unroll": "2"}, TypeError, r"unroll must be a positive int \(or a bool\); got str"),
    ],
)
def test_bad_options(good, fn, kwargs, exc, pattern):
    params, xs, h0 = good
    with pytest.raises(exc, match=pattern):
        fn(params, xs, h0, **kwargs)


def test_unbatched_shapes(good):
    params, xs, _ = good
    with pytest.raises(
        ValueError,
        match=r"h0 must have shape \(hidden_size,\) for unbatched xs = \(6,\); got \(1, 6\)",
    ):
        jrnn.forward(params, xs[0], jnp.zeros((1, 6)))
    with pytest.raises(ValueError, match=r"lengths must have shape \(\) \(a scalar"):
        jrnn.forward(params, xs[0], lengths=np.array([3]))


def test_time_major_message_and_shapes(good):
    params, xs, h0 = good
    with pytest.raises(ValueError, match=r"h0 must have shape \(batch, hidden_size\) = \(5, 6\)"):
        jrnn.forward(params, xs, h0, time_major=True)  # batch is axis 1 = 5 there


def test_backward_bad_cotangents(good):
    params, xs, h0 = good
    hs, h_last = jrnn.forward(params, xs, h0)
    with pytest.raises(
        ValueError, match=r"hs must have the shape of forward's hs, \(3, 5, 6\); got \(3, 4, 6\)"
    ):
        jrnn.backward(params, xs, h0, hs[:, :4], None, h_last)
    with pytest.raises(
        ValueError, match=r"dhs must have the shape of hs, \(3, 5, 6\); got \(5, 3, 6\)"
    ):
        jrnn.backward(params, xs, h0, hs, jnp.swapaxes(hs, 0, 1), None)
    with pytest.raises(
        ValueError, match=r"dh_last must have the shape of h_last, \(3, 6\); got \(6,\)"
    ):
        jrnn.backward(params, xs, h0, hs, None, h_last[0])
    with pytest.raises(TypeError, match=r"dhs must have a real floating dtype"):
        jrnn.backward(params, xs, h0, hs, jnp.ones((3, 5, 6), jnp.int32), None)
    with pytest.raises(ValueError, match=r"xs has 7 features"):
        jrnn.backward(params, jnp.ones((3, 5, 7)), h0, hs, None, h_last)


def test_check_grads_bad_arguments(good):
    params, xs, h0 = good
    with pytest.raises(TypeError, match="loss must be a callable"):
        jrnn.check_grads(params, xs, h0, loss="mse")
    with pytest.raises(ValueError, match="fd_entries"):
        jrnn.check_grads(params, xs, h0, fd_entries=-1)
    with pytest.raises(ValueError, match="xs has 7 features"):
        jrnn.check_grads(params, jnp.ones((3, 5, 7)), h0)


def test_traced_lengths_outside_range_give_clipped_gradients(x64):
    """Under jit, lengths > T act as T (and < 0 as 0) in the backward pass too."""
    params = jrnn.init_params(jax.random.PRNGKey(1), 3, 4, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.PRNGKey(2), (2, 5, 3))

    def grads(n):
        loss = lambda p, n: jnp.sum(jrnn.rnn(p, xs, lengths=n, reverse=True)[0] ** 2)
        return jax.jit(jax.grad(loss))(params, n)  # n traced: not range-checked

    got = grads(jnp.array([8, -2]))
    ref = grads(jnp.array([5, 0]))
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-15)


def test_traced_int64_lengths_clip_instead_of_wrapping(x64):
    params = jrnn.init_params(jax.random.PRNGKey(1), 3, 4, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.PRNGKey(2), (1, 5, 3))
    run = jax.jit(lambda n: jrnn.forward(params, xs, lengths=n)[1])
    np.testing.assert_allclose(
        np.asarray(run(jnp.array([2**32 + 1], jnp.int64))),
        np.asarray(run(jnp.array([5]))),
        rtol=1e-14,
    )


def test_zero_sizes_and_list_params():
    with pytest.raises(
        ValueError, match=r"params.w_x must have positive sizes; got shape \(0, 4\)"
    ):
        jrnn.rnn(jrnn.RNNParams(jnp.ones((0, 4)), jnp.eye(4), jnp.zeros(4)), jnp.ones((2, 5, 0)))
    params = jrnn.init_params(jax.random.PRNGKey(0), 3, 4)
    as_lists = jrnn.RNNParams(*(np.asarray(p).tolist() for p in params))
    xs = jnp.ones((2, 5, 3))
    np.testing.assert_allclose(
        np.asarray(jrnn.forward(as_lists, xs)[1]),
        np.asarray(jrnn.forward(params, xs)[1]),
        rtol=1e-6,
    )


def test_init_model_sizes_use_the_shared_positive_int_policy():
    """init_model checks its sizes with the library's one policy: the same words for each."""
    key = jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match=r"output_size must be a positive int; got float 2\.0"):
        jrnn.init_model(key, 2, 4, 2.0)
    with pytest.raises(TypeError, match="num_layers must be a positive int; got str '2'"):
        jrnn.init_model(key, 2, 4, 1, num_layers="2")
    with pytest.raises(ValueError, match="num_layers must be a positive int; got 0"):
        jrnn.init_model(key, 2, 4, 1, num_layers=0)


def test_a_transposed_w_x_is_blamed_on_w_x():
    params = jrnn.init_params(jax.random.PRNGKey(0), 4, 6)
    bad = params._replace(w_x=params.w_x.T)  # (6, 4): PyTorch's weight_ih layout
    with pytest.raises(
        ValueError, match=r"params.w_x must have shape .*\(input_size, 6\).*transposed"
    ):
        jrnn.forward(bad, jnp.ones((2, 3, 6)))
    # w_x and b agree on H = 6 and w_h does not: w_h is named
    with pytest.raises(ValueError, match=r"params.w_h must have shape .*\(6, 6\).*got \(5, 5\)"):
        jrnn.forward(params._replace(w_h=jnp.ones((5, 5))), jnp.ones((2, 3, 4)))


@pytest.mark.parametrize("fn", [jrnn.forward, jrnn.rnn], ids=["forward", "rnn"])
def test_an_unknown_keyword_option_is_named(fn, good):
    params, xs, h0 = good
    with pytest.raises(
        TypeError, match=r"got an unexpected keyword argument 'activaton'.*activation"
    ):
        fn(params, xs, h0, activaton="relu")
    with pytest.raises(
        TypeError, match=r"parallel.forward\(\) got an unexpected keyword .*'unroll'"
    ):
        jrnn.parallel.forward(params, xs, h0, unroll=2)


def test_keyword_options_are_static_argnames_under_jit(good):
    params, xs, h0 = good
    f = jax.jit(jrnn.rnn, static_argnames=("activation", "reverse"))
    hs, _ = f(params, xs, h0, activation="relu", reverse=True)
    ref, _ = jrnn.rnn(params, xs, h0, activation="relu", reverse=True)
    np.testing.assert_allclose(np.asarray(hs), np.asarray(ref), rtol=1e-6)


def test_float64_params_without_x64_warn_once_and_say_how(recwarn):
    import warnings

    with enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("always")
        params = jrnn.init_params(jax.random.PRNGKey(0), 3, 4, dtype=jnp.float64)
    messages = [str(w.message) for w in recwarn.list]
    assert len(messages) == 1, messages
    assert "jax_enable_x64" in messages[0] and params.w_x.dtype == jnp.float32
    with enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            jrnn.init_params(jax.random.PRNGKey(0), 3, 4, dtype=jnp.float64).b.dtype == jnp.float64
        )


def test_parallel_fallback_must_be_a_bool(good):
    params, xs, h0 = good
    with pytest.raises(TypeError, match=r"fallback must be a bool; got str 'no'"):
        jrnn.parallel.forward(params, xs, h0, fallback="no")
