"""RNNParams and init_params: shapes, dtypes, the documented distributions, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn


def test_defaults_are_keras_simple_rnn():
    p = jrnn.init_params(jax.random.PRNGKey(0), 64, 128)
    assert isinstance(p, jrnn.RNNParams)
    assert p.w_x.shape == (64, 128) and p.w_h.shape == (128, 128) and p.b.shape == (128,)
    assert all(a.dtype == jnp.float32 for a in p)
    assert (p.input_size, p.hidden_size) == (64, 128)
    limit = np.sqrt(6 / (64 + 128))  # glorot_uniform
    assert float(jnp.max(jnp.abs(p.w_x))) <= limit
    assert float(jnp.max(jnp.abs(p.w_x))) > 0.9 * limit
    np.testing.assert_allclose(np.asarray(p.w_h.T @ p.w_h), np.eye(128), atol=1e-5)  # orthogonal
    np.testing.assert_array_equal(np.asarray(p.b), 0.0)


def test_identity_and_pytorch_inits():
    p = jrnn.init_params(
        jax.random.PRNGKey(1),
        3,
        100,
        recurrent_init="identity",
        kernel_init="pytorch",
        bias_init="pytorch",
    )
    np.testing.assert_array_equal(np.asarray(p.w_h), np.eye(100))
    k = 1 / np.sqrt(100)
    assert float(jnp.max(jnp.abs(p.w_x))) <= k
    # PyTorch's two biases, each U(-k, k), fold into one: |b| <= 2k and spread wider than one draw
    assert float(jnp.max(jnp.abs(p.b))) <= 2 * k
    assert float(jnp.std(p.b)) > k / np.sqrt(3) * 1.1
    q = jrnn.init_params(jax.random.PRNGKey(1), 3, 100, recurrent_init="pytorch")
    assert float(jnp.max(jnp.abs(q.w_h))) <= k


def test_callable_initializers_dtype_and_determinism():
    ones = lambda key, shape, dtype: jnp.ones(shape, dtype)
    p = jrnn.init_params(jax.random.PRNGKey(2), 2, 3, kernel_init=ones, dtype=jnp.bfloat16)
    assert p.w_x.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(p.w_x, np.float32), 1.0)
    a = jrnn.init_params(jax.random.PRNGKey(3), 2, 3)
    b = jrnn.init_params(jax.random.PRNGKey(3), 2, 3)
    c = jrnn.init_params(jax.random.PRNGKey(4), 2, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a.w_x, c.w_x)


def test_params_are_a_pytree():
    p = jrnn.init_params(jax.random.PRNGKey(5), 2, 3)
    doubled = jax.tree.map(lambda a: 2 * a, p)
    assert isinstance(doubled, jrnn.RNNParams)
    assert len(jax.tree.leaves(p)) == 3


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"input_size": 0}, ValueError, "input_size"),
        ({"hidden_size": -3}, ValueError, "hidden_size"),
        ({"hidden_size": 2.5}, TypeError, "hidden_size"),
        ({"input_size": True}, TypeError, "input_size"),
        ({"dtype": jnp.int32}, TypeError, "dtype"),
        ({"kernel_init": "nope"}, ValueError, "unknown initializer 'nope'"),
        ({"recurrent_init": 3}, TypeError, "initializer"),
    ],
)
def test_init_params_bad_arguments(kwargs, exc, match):
    args = {"input_size": 2, "hidden_size": 3, **kwargs}
    with pytest.raises(exc, match=match):
        jrnn.init_params(
            jax.random.PRNGKey(0), args.pop("input_size"), args.pop("hidden_size"), **args
        )


def test_identity_needs_square():
    with pytest.raises(ValueError, match="square"):
        jrnn.init_params(jax.random.PRNGKey(0), 2, 3, kernel_init="identity")
