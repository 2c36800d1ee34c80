"""jrnn.rnn: jax.grad runs the hand-written BPTT, under jit, vmap, lax.scan and grad-of-grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_problem, rel_err, scopes, tree_rel_err

import jrnn
import jrnn._src.bptt
import jrnn.parallel


def _loss(fn, **kw):
    def loss(params, xs, h0, lengths=None):
        hs, h_last = fn(params, xs, h0, lengths=lengths, **kw)
        return jnp.sum(jnp.sin(hs)) + 0.5 * jnp.sum(h_last**2)

    return loss


def test_grad_runs_the_hand_written_backward(x64):
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(0))
    assert "jrnn.bptt" in scopes(jax.grad(_loss(jrnn.rnn)), params, xs, h0)
    assert "jrnn.remat.bptt" in scopes(jax.grad(_loss(jrnn.rnn, remat=2)), params, xs, h0)
    # plain autodiff of the loop, and grad="autodiff", never run it
    assert "jrnn.bptt" not in scopes(jax.grad(_loss(jrnn.forward)), params, xs, h0)
    assert "jrnn.bptt" not in scopes(jax.grad(_loss(jrnn.rnn, grad="autodiff")), params, xs, h0)


@pytest.mark.parametrize("activation", ["tanh", "relu", "linear"])
@pytest.mark.parametrize("reverse", [False, True])
def test_jit_grad_matches_forward(x64, activation, reverse):
    params, xs, h0, lengths = random_problem(jax.random.PRNGKey(1), with_lengths=True)
    argnums = (0, 1, 2)
    got = jax.jit(jax.grad(_loss(jrnn.rnn, activation=activation, reverse=reverse), argnums))(
        params, xs, h0, lengths
    )
    ref = jax.grad(_loss(jrnn.forward, activation=activation, reverse=reverse), argnums)(
        params, xs, h0, lengths
    )
    assert tree_rel_err(got, ref) <= 1e-10


@pytest.mark.parametrize("with_lengths", [False, True])
def test_vmap_per_example_grads_equal_python_loop(x64, with_lengths):
    params, xs, h0, lengths = random_problem(
        jax.random.PRNGKey(2), batch=4, with_lengths=with_lengths
    )
    loss = _loss(jrnn.rnn)
    grad_fn = jax.grad(loss)
    if with_lengths:
        per_example = jax.jit(jax.vmap(grad_fn, in_axes=(None, 0, 0, 0)))(params, xs, h0, lengths)
        loop = [grad_fn(params, xs[i], h0[i], lengths[i]) for i in range(4)]
    else:
        per_example = jax.jit(jax.vmap(grad_fn, in_axes=(None, 0, 0)))(params, xs, h0)
        loop = [grad_fn(params, xs[i], h0[i]) for i in range(4)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *loop)
    assert tree_rel_err(per_example, stacked) <= 1e-12
    # and the loop equals plain autodiff per example
    ref = jax.grad(_loss(jrnn.forward))(
        params, xs[1], h0[1], None if lengths is None else lengths[1]
    )
    assert tree_rel_err(loop[1], ref) <= 1e-10


def test_vmap_over_an_ensemble_of_params(x64):
    keys = jax.random.split(jax.random.PRNGKey(3), 5)
    ensemble = jax.vmap(lambda k: jrnn.init_params(k, 4, 6, dtype=jnp.float64))(keys)
    assert ensemble.w_h.shape == (5, 6, 6)
    _, xs, h0, _ = random_problem(jax.random.PRNGKey(4))
    loss = _loss(jrnn.rnn)
    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(0, None, None)))(ensemble, xs, h0)
    for i in range(5):
        member = jax.tree.map(lambda a, i=i: a[i], ensemble)
        ref = jax.grad(_loss(jrnn.forward))(member, xs, h0)
        assert tree_rel_err(jax.tree.map(lambda a, i=i: a[i], grads), ref) <= 1e-10


def test_inside_lax_scan_over_chunks(x64):
    """Streaming over 4 chunks of 5 steps inside a scan equals one call over all 20 steps."""
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(5), steps=20)
    chunks = jnp.swapaxes(xs.reshape(3, 4, 5, 4), 0, 1)  # (chunks, B, 5, F)

    def chunked_loss(fn):
        def loss(p, h):
            def body(h_carry, x_chunk):
                hs, h_new = fn(p, x_chunk, h_carry)
                return h_new, jnp.sum(jnp.sin(hs))

            h_last, parts = jax.lax.scan(body, h, chunks)
            return jnp.sum(parts) + 0.5 * jnp.sum(h_last**2)

        return loss

    got = jax.jit(jax.grad(chunked_loss(jrnn.rnn), argnums=(0, 1)))(params, h0)
    ref = jax.grad(chunked_loss(jrnn.forward), argnums=(0, 1))(params, h0)
    assert tree_rel_err(got, ref) <= 1e-10
    one_shot = jax.grad(lambda p, h: _loss(jrnn.rnn)(p, xs, h), argnums=(0, 1))(params, h0)
    assert tree_rel_err(got, one_shot) <= 1e-10


@pytest.mark.parametrize("activation", ["tanh", "linear"])
def test_grad_of_grad_matches_forward(x64, activation):
    """Reverse-over-reverse: a gradient penalty and a Hessian-vector product."""
    params, xs, h0, lengths = random_problem(jax.random.PRNGKey(6), with_lengths=True)

    def penalty(fn):
        loss = _loss(fn, activation=activation)

        def f(p):
            gx = jax.grad(loss, argnums=1)(p, xs, h0, lengths)
            return jnp.sum(gx**2)

        return f

    got = jax.jit(jax.grad(penalty(jrnn.rnn)))(params)
    ref = jax.grad(penalty(jrnn.forward))(params)
    assert tree_rel_err(got, ref) <= 1e-10

    v = jax.tree.map(lambda a: jnp.ones_like(a), params)

    def hvp(fn):
        g = lambda p: jax.grad(_loss(fn, activation=activation))(p, xs, h0)
        return jax.grad(lambda p: sum(jnp.vdot(a, b) for a, b in zip(g(p), v, strict=True)))(params)

    assert tree_rel_err(hvp(jrnn.rnn), hvp(jrnn.forward)) <= 1e-10


def test_forward_mode_is_not_available_through_rnn(x64):
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(7))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda x: jrnn.rnn(params, x, h0)[1], (xs,), (jnp.ones_like(xs),))
    assert "forward mode" in jrnn.rnn.__doc__.lower() and "jrnn.forward" in jrnn.rnn.__doc__


def test_optax_step_on_rnn_params():
    import optax

    params, xs, h0, _ = random_problem(jax.random.PRNGKey(8), dtype=np.float32)
    opt = optax.adam(1e-2)
    state = opt.init(params)
    loss = _loss(jrnn.rnn)

    @jax.jit
    def step(p, s):
        value, g = jax.value_and_grad(loss)(p, xs, h0)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, value

    new, state, first = step(params, state)
    assert isinstance(new, jrnn.RNNParams)
    for _ in range(20):
        new, state, value = step(new, state)
    assert float(value) < float(first)
    assert rel_err(new.w_h, params.w_h) > 0


@pytest.mark.parametrize("fn", [jrnn.rnn, jrnn.forward], ids=["rnn", "forward"])
@pytest.mark.parametrize("reverse", [False, True])
def test_nan_in_padded_steps_reaches_no_value_or_gradient(x64, fn, reverse):
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(30), batch=3, steps=6)
    lengths = np.array([6, 2, 0])
    clean = np.asarray(xs).copy()
    clean[1, 2:], clean[2] = 0.0, 0.0
    dirty = clean.copy()
    dirty[1, 2:], dirty[2] = np.nan, np.inf
    loss = _loss(fn, reverse=reverse)
    grads = jax.grad(loss, argnums=(0, 1, 2))(params, dirty, h0, lengths)
    ref = jax.grad(loss, argnums=(0, 1, 2))(params, clean, h0, lengths)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert tree_rel_err(grads, ref) <= 1e-12
    np.testing.assert_array_equal(np.asarray(grads[1])[1, 2:], 0.0)  # padded inputs: no gradient


EAGER = {
    "forward": jrnn.forward,
    "rnn": jrnn.rnn,
    "rnn-remat": lambda *a, **k: jrnn.rnn(*a, remat=2, **k),
    "parallel.rnn": jrnn.parallel.rnn,
}


@pytest.mark.skipif(
    not hasattr(jax.monitoring, "unregister_event_duration_listener"),
    reason="counts compiles with a listener this jax cannot remove",
)
@pytest.mark.parametrize("name", EAGER)
def test_eager_calls_compile_once(name):
    """Called outside jit, the entry points (and jax.grad through them) compile their loops
    once per shape and options, not at every call (a loop body traced anew per call would
    give XLA a new program each time: ~0.5 s a call on CPU)."""
    params, xs, h0, lengths = random_problem(
        jax.random.PRNGKey(3), steps=6, dtype=np.float32, with_lengths=True
    )
    loss = _loss(EAGER[name], reverse=True)
    grad = jax.grad(loss)
    compiles = []

    def listener(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    for round_ in range(2):  # the first round compiles; the second must find it all cached
        if round_ == 1:
            jax.monitoring.register_event_duration_secs_listener(listener)
        try:
            jax.block_until_ready((loss(params, xs, h0, lengths), grad(params, xs, h0, lengths)))
        finally:
            if round_ == 1:
                jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == [], f"{name}: {len(compiles)} compiles in a second eager call"
