"""jrnn.layers: bidirectional and stacked RNNs, input dropout, streaming; gradients in float64."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rel_err, tree_rel_err

import jrnn
import jrnn.layers


def _xs(key, batch=3, steps=6, features=4, dtype=jnp.float64):
    return jax.random.normal(key, (batch, steps, features), dtype)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", "none"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_bidirectional_is_two_directions_merged(x64, merge_mode, with_lengths):
    (layer,) = jrnn.init_stack(jax.random.PRNGKey(0), 4, 5, bidirectional=True, dtype=jnp.float64)
    xs = _xs(jax.random.PRNGKey(1))
    lengths = np.array([6, 2, 0]) if with_lengths else None
    out, (h_f, h_b) = jrnn.bidirectional(layer, xs, merge_mode=merge_mode, lengths=lengths)
    hs_f, ref_f = jrnn.forward(layer.forward, xs, lengths=lengths)
    hs_b, ref_b = jrnn.forward(layer.backward, xs, lengths=lengths, reverse=True)
    expected = {
        "concat": jnp.concatenate([hs_f, hs_b], -1),
        "sum": hs_f + hs_b,
        "mul": hs_f * hs_b,
        "ave": (hs_f + hs_b) / 2,
        "none": (hs_f, hs_b),
    }[merge_mode]
    assert tree_rel_err(out, expected) <= 1e-14
    assert rel_err(h_f, ref_f) <= 1e-14 and rel_err(h_b, ref_b) <= 1e-14


def test_bidirectional_backward_direction_starts_at_last_valid_step(x64):
    (layer,) = jrnn.init_stack(jax.random.PRNGKey(2), 4, 5, bidirectional=True, dtype=jnp.float64)
    xs = _xs(jax.random.PRNGKey(3))
    out, (_, h_b) = jrnn.bidirectional(layer, xs, merge_mode="none", lengths=np.array([6, 4, 1]))
    # sequence 1 alone, truncated to its 4 valid steps, run backwards from step 3
    hs_alone, h_alone = jrnn.forward(layer.backward, xs[1, :4], reverse=True)
    assert rel_err(out[1][1, :4], hs_alone) <= 1e-13
    assert rel_err(h_b[1], h_alone) <= 1e-13
    np.testing.assert_array_equal(np.asarray(out[1][1, 4:]), 0.0)


@pytest.mark.parametrize(
    "bidirectional,merge_mode", [(False, "concat"), (True, "concat"), (True, "sum")]
)
def test_stack_equals_manual_chaining(x64, bidirectional, merge_mode):
    layers = jrnn.init_stack(
        jax.random.PRNGKey(4),
        4,
        5,
        3,
        bidirectional=bidirectional,
        merge_mode=merge_mode,
        dtype=jnp.float64,
    )
    width = 10 if bidirectional and merge_mode == "concat" else 5
    assert (
        layers[1].forward.w_x.shape[0] == width if bidirectional else layers[1].w_x.shape == (5, 5)
    )
    xs = _xs(jax.random.PRNGKey(5))
    out, finals = jrnn.stack(layers, xs, merge_mode=merge_mode, activation="relu")
    ref, ref_finals = xs, []
    for layer in layers:
        if bidirectional:
            ref, h = jrnn.bidirectional(layer, ref, merge_mode=merge_mode, activation="relu")
        else:
            ref, h = jrnn.rnn(layer, ref, activation="relu")
        ref_finals.append(h)
    assert rel_err(out, ref) <= 1e-14
    assert tree_rel_err(finals, tuple(ref_finals)) <= 1e-14
    assert jax.tree.structure(finals) == jax.tree.structure(jrnn.zero_state(layers, 3))


@pytest.mark.parametrize("time_major", [False, True])
def test_streaming_chunks_equal_one_shot(x64, time_major):
    layers = jrnn.init_stack(jax.random.PRNGKey(6), 4, 5, 2, dtype=jnp.float64)
    xs = _xs(jax.random.PRNGKey(7), steps=12)
    if time_major:
        xs = jnp.swapaxes(xs, 0, 1)
    one_shot, final = jrnn.stack(layers, xs, time_major=time_major)
    state, outs = jrnn.zero_state(layers, 3), []
    for start in (0, 5, 7):  # uneven chunks
        stop = {0: 5, 5: 7, 7: 12}[start]
        chunk = xs[start:stop] if time_major else xs[:, start:stop]
        hs, state = jrnn.stack(layers, chunk, state, time_major=time_major)
        outs.append(hs)
    streamed = jnp.concatenate(outs, axis=0 if time_major else 1)
    assert rel_err(streamed, one_shot) <= 1e-13
    assert tree_rel_err(state, final) <= 1e-13


def test_input_dropout_keras_semantics():
    xs = jnp.ones((4, 7, 50))
    dropped = jrnn.layers.input_dropout(jax.random.PRNGKey(8), xs, 0.3)
    kept = np.asarray(dropped[:, 0, :]) != 0
    # one mask per sequence and feature, the same at every step, inverted scaling
    for t in range(7):
        np.testing.assert_array_equal(np.asarray(dropped[:, t, :]) != 0, kept)
    np.testing.assert_allclose(np.asarray(dropped)[np.asarray(dropped) != 0], 1 / 0.7, rtol=1e-6)
    assert 0.5 < kept.mean() < 0.9
    again = jrnn.layers.input_dropout(jax.random.PRNGKey(8), xs, 0.3)
    other = jrnn.layers.input_dropout(jax.random.PRNGKey(9), xs, 0.3)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(dropped))
    assert not np.array_equal(np.asarray(other), np.asarray(dropped))
    tm = jrnn.layers.input_dropout(
        jax.random.PRNGKey(8), jnp.ones((7, 4, 50)), 0.3, time_major=True
    )
    for t in range(7):
        np.testing.assert_array_equal(np.asarray(tm[t]) != 0, np.asarray(tm[0]) != 0)


def test_stack_dropout_only_when_training(x64):
    layers = jrnn.init_stack(jax.random.PRNGKey(10), 4, 5, 2, dtype=jnp.float64)
    xs = _xs(jax.random.PRNGKey(11))
    plain, _ = jrnn.stack(layers, xs)
    evaluated, _ = jrnn.stack(layers, xs, dropout=0.5, key=jax.random.PRNGKey(0))
    trained, _ = jrnn.stack(layers, xs, dropout=0.5, key=jax.random.PRNGKey(0), training=True)
    np.testing.assert_array_equal(np.asarray(evaluated), np.asarray(plain))
    assert rel_err(trained, plain) > 1e-3
    with pytest.raises(ValueError, match="needs a PRNG key"):
        jrnn.stack(layers, xs, dropout=0.5, training=True)


COMPOSITES = list(itertools.product([False, True], ["concat", "ave"], [False, True]))


@pytest.mark.parametrize("bidirectional,merge_mode,with_lengths", COMPOSITES)
def test_stack_gradients_bptt_autodiff_fd(x64, bidirectional, merge_mode, with_lengths):
    """jax.grad through the composite (hand-written BPTT per layer) against the same composite
    on plain autodiff, and against fourth-order finite differences on 40 entries."""
    layers = jrnn.init_stack(
        jax.random.PRNGKey(12),
        3,
        4,
        2,
        bidirectional=bidirectional,
        merge_mode=merge_mode,
        dtype=jnp.float64,
        bias_init="pytorch",
    )
    xs = _xs(jax.random.PRNGKey(13), batch=2, steps=5, features=3)
    lengths = np.array([5, 3]) if with_lengths else None
    key = jax.random.PRNGKey(14)

    def loss(layers, xs):
        out, finals = jrnn.stack(
            layers,
            xs,
            merge_mode=merge_mode,
            lengths=lengths,
            dropout=0.25,
            recurrent_dropout=0.3,
            key=key,
            training=True,
        )
        return jnp.sum(jnp.sin(out)) + 0.5 * sum(jnp.sum(h**2) for h in jax.tree.leaves(finals))

    report = jrnn.check_grads(layers, xs, objective=loss, fd_entries=40)
    assert report.ok(), report
    assert report.max_bptt_autodiff_rel <= 1e-10 and report.max_bptt_fd_rel <= 1e-8


def test_bad_input():
    layers = jrnn.init_stack(jax.random.PRNGKey(15), 4, 5, 2, bidirectional=True)
    xs = jnp.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"merge_mode must be one of"):
        jrnn.stack(layers, xs, merge_mode="max")
    with pytest.raises(ValueError, match="only a last layer"):
        jrnn.stack(layers, xs, merge_mode="none")
    with pytest.raises(ValueError, match="cannot feed a next layer"):
        jrnn.init_stack(jax.random.PRNGKey(0), 4, 5, 2, bidirectional=True, merge_mode="none")
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        jrnn.init_stack(jax.random.PRNGKey(0), 4, 5, 0)
    with pytest.raises(ValueError, match=r"one state per layer \(2\); got 1"):
        jrnn.stack(layers, xs, (jnp.zeros((2, 5)),))
    with pytest.raises(TypeError, match="must be a pair"):
        jrnn.stack(layers, xs, (jnp.zeros((2, 5)), jnp.zeros((2, 5))))
    with pytest.raises(TypeError, match=r"layers\[0\] must be a jrnn.RNNParams"):
        jrnn.stack([{"w": 1}], xs)
    with pytest.raises(TypeError, match="BiRNNParams"):
        jrnn.bidirectional(layers[0].forward, xs)
    with pytest.raises(TypeError, match="no 'reverse' option"):
        jrnn.bidirectional(layers[0], xs, reverse=True)
    with pytest.raises(ValueError, match=r"rate must lie in \[0, 1\); got 1.0"):
        jrnn.layers.input_dropout(jax.random.PRNGKey(0), xs, 1.0)
    with pytest.raises(ValueError, match="xs has 4 features"):  # errors of rnn come through
        jrnn.stack(layers[1:], xs)


ACTS = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0), "linear": lambda a: a}


@pytest.mark.parametrize("activation", ["tanh", "relu", "linear"])
def test_recurrent_mask_equals_python_loop(x64, activation):
    params = jrnn.init_params(jax.random.PRNGKey(20), 3, 4, dtype=jnp.float64, bias_init="pytorch")
    xs = _xs(jax.random.PRNGKey(21), batch=2, steps=5, features=3)
    m = np.asarray(jrnn.layers.dropout_mask(jax.random.PRNGKey(22), (2, 4), 0.5, jnp.float64))
    hs, h_last = jrnn.rnn(params, xs, recurrent_mask=m, activation=activation)
    w_x, w_h, b = (np.asarray(a) for a in params)
    h = np.zeros((2, 4))
    for t in range(5):
        h = ACTS[activation](np.asarray(xs[:, t]) @ w_x + (h * m) @ w_h + b)
        np.testing.assert_allclose(np.asarray(hs[:, t]), h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(h_last), h, rtol=1e-12, atol=1e-14)
    ones = jrnn.rnn(params, xs, recurrent_mask=np.ones((2, 4)), activation=activation)
    # equal to rounding: with a mask XLA may pick another GEMM kernel for (h * m) @ W_h
    assert tree_rel_err(ones, jrnn.rnn(params, xs, activation=activation)) < 1e-15


@pytest.mark.parametrize(
    "reverse,with_lengths,remat,time_major",
    list(itertools.product([False, True], [False, True], [None, 3], [False, True])),
)
def test_recurrent_mask_gradients_match_autodiff(x64, reverse, with_lengths, remat, time_major):
    params = jrnn.init_params(jax.random.PRNGKey(23), 3, 4, dtype=jnp.float64, bias_init="pytorch")
    xs = _xs(jax.random.PRNGKey(24), batch=3, steps=7, features=3)
    h0 = 0.3 * jax.random.normal(jax.random.PRNGKey(25), (3, 4))
    lengths = np.array([7, 3, 0]) if with_lengths else None
    m = jrnn.layers.dropout_mask(jax.random.PRNGKey(26), (3, 4), 0.4, jnp.float64)
    if time_major:
        xs = jnp.swapaxes(xs, 0, 1)

    def loss(fn, **kw):
        def f(p, x, h):
            hs, h_last = fn(
                p,
                x,
                h,
                lengths=lengths,
                reverse=reverse,
                recurrent_mask=m,
                time_major=time_major,
                **kw,
            )
            return jnp.sum(jnp.sin(hs)) + jnp.sum(h_last**2)

        return f

    got = jax.jit(jax.grad(loss(jrnn.rnn, remat=remat), argnums=(0, 1, 2)))(params, xs, h0)
    ref = jax.grad(loss(jrnn.forward), argnums=(0, 1, 2))(params, xs, h0)
    assert tree_rel_err(got, ref) <= 1e-10
    hs, h_last = jrnn.forward(
        params, xs, h0, lengths=lengths, reverse=reverse, recurrent_mask=m, time_major=time_major
    )
    bp = jrnn.backward(
        params,
        xs,
        h0,
        hs,
        jnp.cos(hs),
        2 * h_last,
        lengths=lengths,
        reverse=reverse,
        recurrent_mask=m,
        time_major=time_major,
    )
    assert tree_rel_err(bp, ref) <= 1e-10


def test_stack_recurrent_dropout_semantics(x64):
    layers = jrnn.init_stack(jax.random.PRNGKey(27), 4, 5, 2, dtype=jnp.float64)
    xs = _xs(jax.random.PRNGKey(28))
    key = jax.random.PRNGKey(29)
    plain, _ = jrnn.stack(layers, xs)
    evaluated, _ = jrnn.stack(layers, xs, recurrent_dropout=0.5, key=key)
    trained, _ = jrnn.stack(layers, xs, recurrent_dropout=0.5, key=key, training=True)
    np.testing.assert_array_equal(np.asarray(evaluated), np.asarray(plain))
    assert rel_err(trained, plain) > 1e-3
    # one (B, H) mask per layer, the same at every step: the stack is rnn with those masks
    keys = jax.random.split(key, (2, 3))
    ref = xs
    for k, layer in enumerate(layers):
        m = jrnn.layers.dropout_mask(keys[k, 1], (3, 5), 0.5, jnp.float64)
        ref, _ = jrnn.rnn(layer, ref, recurrent_mask=m)
    assert rel_err(trained, ref) <= 1e-14
    with pytest.raises(ValueError, match="needs a PRNG key"):
        jrnn.stack(layers, xs, recurrent_dropout=0.5, training=True)
    with pytest.raises(ValueError, match=r"recurrent_dropout must lie in \[0, 1\)"):
        jrnn.stack(layers, xs, recurrent_dropout=1.5, key=key, training=True)
    with pytest.raises(
        ValueError,
        match=r"recurrent_mask must have shape \(batch, hidden_size\) = \(3, 5\); got \(5,\)",
    ):
        jrnn.rnn(layers[0], xs, recurrent_mask=jnp.ones(5))


# --- validation: directions, layer sizes, xs and rates -----------------------------------


@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_directions_of_different_hidden_sizes_are_refused(merge_mode):
    key = jax.random.PRNGKey(30)
    uneven = jrnn.BiRNNParams(jrnn.init_params(key, 4, 5), jrnn.init_params(key, 4, 4))
    xs = jnp.ones((2, 3, 4))
    message = r"directions differ in hidden size: forward.w_h is \(5, 5\), backward.w_h is \(4, 4\)"
    with pytest.raises(ValueError, match="params is a BiRNNParams whose " + message):
        jrnn.bidirectional(uneven, xs, merge_mode=merge_mode)
    with pytest.raises(ValueError, match=r"layers\[0\] is a BiRNNParams whose " + message):
        jrnn.stack((uneven,), xs, merge_mode=merge_mode)


@pytest.mark.parametrize(
    "bidirectional,merge_mode,message",
    [
        (
            False,
            "concat",
            r"layers\[1\] reads 6 input features \(its w_x is \(6, 5\)\) but layers\[0\] outputs 5 \(its hidden size\)",
        ),
        (
            True,
            "concat",
            r"layers\[1\] reads 6 input features \(its w_x is \(6, 5\)\) but layers\[0\] outputs 10 \(two directions of 5 concatenated\)",
        ),
        (
            True,
            "sum",
            r"layers\[1\] reads 10 input features \(its w_x is \(10, 5\)\) but layers\[0\] outputs 5 \(merge_mode='sum' keeps",
        ),
    ],
)
def test_stack_size_mismatch_names_the_layer(bidirectional, merge_mode, message):
    key = jax.random.PRNGKey(31)
    layers = jrnn.init_stack(key, 4, 5, 2, bidirectional=bidirectional)
    if merge_mode == "concat":  # a second layer that reads 6 features
        first = layers[0]
        second = jrnn.init_stack(key, 6, 5, bidirectional=bidirectional)[0]
        layers = (first, second, *layers[1:])
    with pytest.raises(
        ValueError, match=message + ".*input size must equal layer 0's output width"
    ):
        jrnn.stack(layers, jnp.ones((2, 3, 4)), merge_mode=merge_mode)


def test_stack_reads_a_nested_list(x64):
    layers = jrnn.init_stack(jax.random.PRNGKey(32), 4, 5, 2, dtype=jnp.float64)
    xs = _xs(jax.random.PRNGKey(33))
    out, finals = jrnn.stack(layers, np.asarray(xs).tolist())
    ref, ref_finals = jrnn.stack(layers, xs)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(finals[-1], ref_finals[-1])
    with pytest.raises(TypeError, match="xs must be an array; got list"):
        jrnn.stack(layers, [[[1.0, 2.0]], [[1.0]]])


def test_stack_refuses_one_layer_that_is_not_in_a_sequence():
    params = jrnn.init_params(jax.random.PRNGKey(34), 4, 5)
    with pytest.raises(
        TypeError,
        match=r"layers must be a sequence of layers; got a single RNNParams: pass \(params,\)",
    ):
        jrnn.stack(params, jnp.ones((2, 3, 4)))
    (bi,) = jrnn.init_stack(jax.random.PRNGKey(34), 4, 5, bidirectional=True)
    with pytest.raises(TypeError, match="got a single BiRNNParams"):
        jrnn.stack(bi, jnp.ones((2, 3, 4)))
    with pytest.raises(TypeError, match=r"layers must be a sequence .*; got dict"):
        jrnn.stack({"w": params}, jnp.ones((2, 3, 4)))


def test_rates_and_num_layers_of_the_wrong_type():
    layers = jrnn.init_stack(jax.random.PRNGKey(35), 4, 5)
    xs = jnp.ones((2, 3, 4))
    key = jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match=r"dropout must be a number in \[0, 1\); got str '0.5'"):
        jrnn.stack(layers, xs, dropout="0.5", key=key, training=True)
    with pytest.raises(TypeError, match="recurrent_dropout must be a number"):
        jrnn.stack(layers, xs, recurrent_dropout="0.1")
    with pytest.raises(TypeError, match="rate must be a number"):
        jrnn.layers.input_dropout(key, xs, "0.3")
    with pytest.raises(TypeError, match="rate must be a number"):
        jrnn.layers.dropout_mask(key, (2, 4), True, jnp.float32)
    with pytest.raises(TypeError, match=r"num_layers must be a positive int; got float 2\.0"):
        jrnn.init_stack(key, 4, 5, 2.0)
