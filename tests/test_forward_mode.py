"""grad="autodiff": forward mode (jvp, jacfwd, linearize) through every layer, the model,
the train functions and the modules; grad="bptt" keeps reverse mode on the hand-written
BPTT. And the named scopes a profile shows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from helpers import enable_x64, scopes, tree_rel_err

import jrnn
from jrnn import layers, model, parallel

K = jax.random.split(jax.random.PRNGKey(11), 4)
XS = 0.5 * jax.random.normal(K[0], (3, 6, 2))
LENGTHS = jnp.array([6, 2, 0])


def _runs():
    """name -> (params, f(params, xs, grad) -> outputs)."""
    rnn_p = jrnn.init_params(K[1], 2, 4)
    stack_p = jrnn.init_stack(K[2], 2, 4, 2, bidirectional=True)
    model_p = jrnn.init_model(K[3], 2, 4, 3, num_layers=2)
    return {
        "rnn": (rnn_p, lambda p, x, g: jrnn.rnn(p, x, lengths=LENGTHS, grad=g)[0]),
        "rnn_remat": (rnn_p, lambda p, x, g: jrnn.rnn(p, x, remat=4, grad=g)[1]),
        "bidirectional": (
            jrnn.BiRNNParams(rnn_p, rnn_p),
            lambda p, x, g: layers.bidirectional(p, x, lengths=LENGTHS, grad=g)[0],
        ),
        "stack": (stack_p, lambda p, x, g: layers.stack(p, x, grad=g)[0]),
        "model": (
            model_p,
            lambda p, x, g: model.apply(p, x, lengths=LENGTHS, return_sequences=True, grad=g)[0],
        ),
    }


@pytest.mark.parametrize("name", ["rnn", "rnn_remat", "bidirectional", "stack", "model"])
def test_forward_mode_equals_reverse_mode(name):
    """jacfwd with grad="autodiff" equals jacrev through the hand-written BPTT (float64),
    and jvp / linearize give the same tangent."""
    with enable_x64():
        params, run = _runs()[name]
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        xs = jnp.asarray(XS, jnp.float64)
        forward_mode = jax.jacfwd(lambda x: run(params, x, "autodiff"))(xs)
        reverse_mode = jax.jacrev(lambda x: run(params, x, "bptt"))(xs)
        assert tree_rel_err(forward_mode, reverse_mode) <= 1e-12
        tangent = jnp.ones_like(xs)
        _, jvp = jax.jvp(lambda x: run(params, x, "autodiff"), (xs,), (tangent,))
        _, linear = jax.linearize(lambda x: run(params, x, "autodiff"), xs)
        want = jnp.tensordot(reverse_mode, tangent, axes=xs.ndim)
        assert tree_rel_err(jvp, want) <= 1e-12 and tree_rel_err(linear(tangent), want) <= 1e-12
        # with respect to the params too
        p_tangent = jax.tree.map(jnp.ones_like, params)
        _, p_jvp = jax.jvp(lambda p: run(p, xs, "autodiff"), (params,), (p_tangent,))
        p_rev = jax.jacrev(lambda p: run(p, xs, "bptt"))(params)
        want = sum(
            jnp.tensordot(j, t, axes=t.ndim)
            for j, t in zip(jax.tree.leaves(p_rev), jax.tree.leaves(p_tangent), strict=True)
        )
        assert tree_rel_err(p_jvp, want) <= 1e-12


def test_bptt_refuses_forward_mode_and_keeps_the_hessian():
    params, run = _runs()["rnn"]
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda x: run(params, x, "bptt"), (XS,), (XS,))
    with enable_x64():
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        xs = jnp.asarray(XS, jnp.float64)

        def loss(x, grad):
            return jnp.sum(run(params, x, grad) ** 2)

        bptt = jax.hessian(loss)(xs, "bptt")  # forward-over-reverse through the BPTT
        assert tree_rel_err(bptt, jax.hessian(loss)(xs, "autodiff")) <= 1e-10


def test_train_functions_and_modules_take_grad():
    params = jrnn.init_model(K[3], 2, 4, 3)
    batch = jrnn.Batch(XS, jnp.ones((3, 3)), LENGTHS)
    optimizer = optax.adam(1e-2)
    state = optimizer.init(params)
    steps = {
        g: jrnn.make_train_step(optimizer, grad=g)(params, state, batch)
        for g in ("bptt", "autodiff")
    }
    assert tree_rel_err(steps["autodiff"][0], steps["bptt"][0]) <= 1e-5
    metrics = jrnn.evaluate(params, batch, grad="autodiff", unroll=2)
    assert abs(float(metrics["loss"]) - float(steps["bptt"][2]["loss"])) <= 1e-5
    with pytest.raises(ValueError, match=r"grad must be one of \('bptt', 'autodiff'\)"):
        jrnn.make_train_step(optimizer, grad="forward")(params, state, batch)
    with pytest.raises(TypeError, match="takes lengths from the batch"):
        jrnn.make_train_step(optimizer, lengths=LENGTHS)
    with pytest.raises(
        TypeError, match=r"make_train_step\(\) got an unexpected keyword argument 'lenghts'"
    ):
        jrnn.make_train_step(optimizer, lenghts=LENGTHS)


def test_model_options_reach_every_layer():
    """tuning, unroll and a recurrent mask per layer reach a model's layers."""
    params = jrnn.init_model(K[3], 2, 4, 3, num_layers=2)
    masks = (jnp.full((3, 4), 0.5), None)
    got, _ = model.apply(params, XS, recurrent_mask=masks, unroll=3)
    h1, _ = jrnn.rnn(params.layers[0], XS, recurrent_mask=masks[0])
    _, h2 = jrnn.rnn(params.layers[1], h1)
    assert tree_rel_err(got, h2 @ params.head.w + params.head.b) <= 1e-6
    with pytest.raises(TypeError, match=r"apply\(\) takes no 'reverse' option"):
        model.apply(params, XS, reverse=True)


def test_named_scopes_show_in_the_compiled_program():
    params = jrnn.init_params(K[1], 2, 4)

    def names(fn):
        return scopes(jax.grad(fn), params)

    assert {"jrnn.forward", "jrnn.bptt"} <= names(lambda p: jnp.sum(jrnn.rnn(p, XS)[0]))
    assert {"jrnn.remat.forward", "jrnn.remat.bptt"} <= names(
        lambda p: jnp.sum(jrnn.rnn(p, XS, remat=2)[1])
    )
    assert {"jrnn.parallel.forward", "jrnn.parallel.bptt"} <= names(
        lambda p: jnp.sum(parallel.rnn(p, XS)[0])
    )
    assert {"jrnn.kernel.forward", "jrnn.kernel.adjoint"} <= names(
        lambda p: jnp.sum(jrnn.rnn(p, XS, impl="pallas")[0])
    )


def test_the_modules_take_grad_and_any_activation():
    """equinox and NNX: forward mode with grad="autodiff", a callable activation, equal to
    reverse mode through the BPTT."""
    from flax import nnx

    import jrnn.equinox
    import jrnn.nnx

    module = jrnn.equinox.SimpleRNN(2, 4, activation=jax.nn.gelu, key=K[1])
    forward_mode = jrnn.equinox.SimpleRNN.from_params(
        module.params, activation=jax.nn.gelu, grad="autodiff"
    )
    jac = jax.jacfwd(lambda x: forward_mode(x)[1])(XS)
    assert tree_rel_err(jac, jax.jacrev(lambda x: module(x)[1])(XS)) <= 1e-5

    cell = nnx.SimpleCell(2, 4, activation_fn=nnx.gelu, rngs=nnx.Rngs(0))
    h0 = jnp.zeros((3, 4))  # (no carry drawn inside the transforms)

    def outputs(grad):
        graph, state = nnx.split(jrnn.nnx.SimpleRNN(cell, grad=grad))
        return lambda x: nnx.merge(graph, state)(x, initial_carry=h0)

    forward_mode, reverse_mode = (
        jax.jacfwd(outputs("autodiff"))(XS),
        jax.jacrev(outputs("bptt"))(XS),
    )
    assert tree_rel_err(forward_mode, reverse_mode) <= 1e-5
