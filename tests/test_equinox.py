"""jrnn.equinox.SimpleRNN against a lax.scan loop over the same weights (equinox has no
simple RNN of its own), jrnn.forward, filter_jit/filter_grad, vmap and an optax loop."""

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import enable_x64, rel_err, scopes, tol, tree_rel_err

import jrnn
from jrnn.equinox import SimpleRNN

B, T, F, H = 3, 5, 2, 4
LENGTHS = np.array([5, 2, 0])
ACTS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "linear": lambda a: a}


def scan_rnn(params, xs, h0=None, *, activation="tanh", reverse=False, lengths=None):
    """The reference: an unbatched `(T, F)` sequence as a plain lax.scan over time steps, with
    right padding as jrnn's (padded steps keep the state and output zeros)."""
    w_x, w_h, b = params
    steps = xs.shape[0]
    h0 = jnp.zeros(w_h.shape[0], xs.dtype) if h0 is None else h0
    length = steps if lengths is None else lengths

    def step(h, t):
        h_new = ACTS[activation](xs[t] @ w_x + h @ w_h + b)
        valid = t < length
        return jnp.where(valid, h_new, h), jnp.where(valid, h_new, 0)

    h_last, hs = jax.lax.scan(step, h0, jnp.arange(steps), reverse=reverse)
    return hs, h_last


def _data(dtype=np.float32):
    rng = np.random.default_rng(2)
    xs = jnp.asarray(rng.standard_normal((B, T, F)), dtype)
    h0 = jnp.asarray(0.5 * rng.standard_normal((B, H)), dtype)
    r = jnp.asarray(rng.standard_normal((B, T, H)), dtype)
    s = jnp.asarray(rng.standard_normal((B, H)), dtype)
    return xs, h0, r, s


def _loss(out, r, s):
    hs, h_last = out
    return jnp.sum(hs * r) + jnp.sum(h_last * s)


@pytest.mark.parametrize(
    "activation,reverse,with_lengths,with_h0,dtype",
    [
        ("tanh", False, False, True, np.float32),
        ("relu", True, True, False, np.float32),
        ("linear", False, True, True, np.float32),
        ("tanh", True, True, True, np.float64),
        ("relu", False, False, False, np.float64),
    ],
)
def test_outputs_and_gradients_equal_a_scan_loop_and_forward(
    activation, reverse, with_lengths, with_h0, dtype
):
    with enable_x64(dtype == np.float64):
        model = SimpleRNN(F, H, activation=activation, reverse=reverse, key=jax.random.key(0))
        assert model.w_x.dtype == dtype
        xs, h0, r, s = (a[0] for a in _data(dtype))  # one (T, F) sequence
        h0 = h0 if with_h0 else None
        lengths = LENGTHS[1] if with_lengths else None
        options = {"activation": activation, "reverse": reverse, "lengths": lengths}

        @eqx.filter_jit
        def compare(model, xs):
            def loss(model_and_xs):
                model, xs = model_and_xs
                out = model(xs, h0, lengths=lengths)
                return _loss(out, r, s), out

            def ref_loss(params, xs):
                out = scan_rnn(params, xs, h0, **options)
                return _loss(out, r, s), out

            (_, out), grads = eqx.filter_value_and_grad(loss, has_aux=True)((model, xs))
            (_, ref), ref_grads = jax.value_and_grad(ref_loss, (0, 1), has_aux=True)(
                model.params, xs
            )
            return out, grads, ref, ref_grads, jrnn.forward(model.params, xs, h0, **options)

        out, (g_model, g_xs), ref, (g_params, g_xs_ref), fwd = compare(model, xs)
        assert out[0].shape == (T, H) and out[1].shape == (H,)
        assert tree_rel_err(out, ref) <= tol(dtype, "forward")
        assert tree_rel_err(out, fwd) <= tol(dtype, "forward")
        assert isinstance(g_model, SimpleRNN)  # filter_grad's gradient is a module
        assert tree_rel_err(g_model.params, g_params) <= tol(dtype, "grad")
        assert rel_err(g_xs, g_xs_ref) <= tol(dtype, "grad")


def test_vmap_over_a_batch_equals_the_batched_call_and_a_loop():
    model = SimpleRNN(F, H, reverse=True, key=jax.random.key(1))
    xs, h0, r, s = _data()
    lengths = jnp.asarray(LENGTHS)
    mapped = eqx.filter_jit(lambda m, x, h, n: jax.vmap(m)(x, h, lengths=n))(model, xs, h0, lengths)
    batched = model(xs, h0, lengths=lengths)
    assert mapped[0].shape == (B, T, H) and mapped[1].shape == (B, H)
    assert tree_rel_err(mapped, batched) <= 1e-6
    loop = jax.jit(partial(scan_rnn, reverse=True))
    for i in range(B):
        one = loop(model.params, xs[i], h0[i], lengths=LENGTHS[i])
        assert tree_rel_err((mapped[0][i], mapped[1][i]), one) <= 1e-5
    # per-example gradients: vmap of filter_grad
    grads = jax.vmap(
        eqx.filter_grad(lambda m, x, h, n, r, s: _loss(m(x, h, lengths=n), r, s)),
        in_axes=(None, 0, 0, 0, 0, 0),
    )(model, xs, h0, lengths, r, s)
    assert grads.w_x.shape == (B, F, H)
    ref = jax.grad(
        lambda p: _loss(scan_rnn(p, xs[1], h0[1], reverse=True, lengths=LENGTHS[1]), r[1], s[1])
    )(model.params)
    assert tree_rel_err(jax.tree.map(lambda g: g[1], grads.params), ref) <= 1e-5


def test_init_fields_and_params_round_trip():
    model = SimpleRNN(F, H, key=jax.random.key(2))
    assert (model.w_x.shape, model.w_h.shape, model.b.shape) == ((F, H), (H, H), (H,))
    assert (model.input_size, model.hidden_size, model.use_bias) == (F, H, True)
    bound = 1 / np.sqrt(H)  # U(-1/sqrt(H), 1/sqrt(H)), as equinox's cells
    for w in (model.w_x, model.w_h, model.b):
        assert float(jnp.max(jnp.abs(w))) <= bound and float(jnp.std(w)) > 0.1 * bound
    params = jrnn.init_params(jax.random.key(3), F, H, bias_init="pytorch")
    again = SimpleRNN.from_params(params, activation="relu")
    assert again.activation == "relu" and again.params == params
    xs, h0, _, _ = _data()
    assert tree_rel_err(again(xs, h0), jrnn.forward(params, xs, h0, activation="relu")) <= 1e-6
    with enable_x64(True):
        assert SimpleRNN(F, H, key=jax.random.key(2)).w_x.dtype == jnp.float64


def test_without_bias():
    model = SimpleRNN(F, H, use_bias=False, key=jax.random.key(4))
    assert model.b is None and jnp.array_equal(model.params.b, jnp.zeros(H))
    xs, _, _, _ = _data()
    grads = eqx.filter_grad(lambda m: jnp.sum(m(xs)[0]))(model)
    assert grads.b is None and grads.w_x.shape == (F, H)
    ref = jrnn.forward(jrnn.RNNParams(model.w_x, model.w_h, jnp.zeros(H)), xs)
    assert tree_rel_err(model(xs), ref) <= 1e-6


def test_gradients_run_jrnns_hand_written_bptt():
    model = SimpleRNN(F, H, key=jax.random.key(5))
    xs, _, _, _ = _data()
    arrays, static = eqx.partition(model, eqx.is_array)
    grad = lambda a: eqx.filter_grad(lambda m: jnp.sum(m(xs[0])[1]))(eqx.combine(a, static))
    assert "jrnn.bptt" in scopes(grad, arrays)


def test_optax_training_updates_as_the_scan_loop():
    model = SimpleRNN(F, H, key=jax.random.key(6))
    xs, _, _, _ = _data()
    y = jnp.sin(jnp.arange(B * T * H, dtype=jnp.float32)).reshape(B, T, H)
    lengths = jnp.asarray(LENGTHS)
    optimizer = optax.adam(0.05)

    @eqx.filter_jit
    def step(model, state):
        loss, grads = eqx.filter_value_and_grad(
            lambda m: jnp.mean((jax.vmap(m)(xs, lengths=lengths)[0] - y) ** 2)
        )(model)
        updates, state = optimizer.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, loss

    @jax.jit
    def ref_step(params, state):
        def loss(p):
            hs = jax.vmap(lambda x, n: scan_rnn(p, x, lengths=n)[0])(xs, lengths)
            return jnp.mean((hs - y) ** 2)

        value, grads = jax.value_and_grad(loss)(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    params = model.params
    state, ref_state = optimizer.init(eqx.filter(model, eqx.is_array)), optimizer.init(params)
    losses, ref_losses = [], []
    for _ in range(4):
        model, state, loss = step(model, state)
        params, ref_state, ref_loss = ref_step(params, ref_state)
        losses.append(float(loss))
        ref_losses.append(float(ref_loss))
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert tree_rel_err(model.params, params) <= 1e-5


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="activation must be one of"):
        SimpleRNN(F, H, activation="gelu", key=jax.random.key(0))
    with pytest.raises(TypeError, match="reverse must be a bool"):
        SimpleRNN(F, H, reverse=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="impl must be one of"):
        SimpleRNN(F, H, impl="cuda", key=jax.random.key(0))
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        SimpleRNN(F, 0, key=jax.random.key(0))
    model = SimpleRNN(F, H, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"xs has 3 features .* input_size = 2"):
        model(jnp.ones((T, 3)))
    with pytest.raises(ValueError, match=r"h0 must have shape \(hidden_size,\)"):
        model(jnp.ones((T, F)), jnp.ones((B, H)))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\]"):
        model(jnp.ones((T, F)), lengths=T + 1)
