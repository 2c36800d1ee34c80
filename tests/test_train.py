"""The model (readout), the losses, the train step, evaluation and truncated BPTT."""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import enable_x64, reference_forward, rel_err, tol, tree_rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

import jrnn
from jrnn.losses import accuracy, mean_squared_error, sequence_mask, softmax_cross_entropy
from jrnn.model import Dense, ModelParams, apply, init_model
from jrnn.tasks import get_task
from jrnn.train import (
    Batch,
    evaluate,
    global_norm,
    loss_and_metrics,
    make_train_step,
    tbptt_gradients,
    truncated_bptt,
)

# the digits task's data comes with scikit-learn (the train extra; the floor CI runs without)
NEEDS_SKLEARN = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="the digits task needs scikit-learn"
)


def _model(key, f=3, h=5, o=2, layers=1, dtype=jnp.float64):
    params = init_model(key, f, h, o, num_layers=layers, dtype=dtype, bias_init="pytorch")
    head = params.head._replace(b=0.1 * jnp.arange(o, dtype=dtype))
    return params._replace(head=head)


def _reference_outputs(params, xs, *, activation="tanh", lengths=None, return_sequences=False):
    out = np.asarray(xs, np.float64)
    for layer in params.layers:
        out, h_last = reference_forward(layer, out, activation=activation, lengths=lengths)
    top = out if return_sequences else h_last
    return top @ np.asarray(params.head.w, np.float64) + np.asarray(params.head.b, np.float64)


# --- model -----------------------------------------------------------------------------


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_apply_matches_a_python_loop(x64, layers, return_sequences, activation):
    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    params = _model(key_p, layers=layers)
    xs = jax.random.normal(key_x, (4, 7, 3), jnp.float64)
    lengths = np.array([7, 3, 0, 5])
    out, finals = apply(
        params, xs, activation=activation, return_sequences=return_sequences, lengths=lengths
    )
    ref = _reference_outputs(
        params, xs, activation=activation, lengths=lengths, return_sequences=return_sequences
    )
    assert out.shape == ref.shape
    assert rel_err(out, ref) < tol(np.float64, "forward")
    assert len(finals) == layers and finals[-1].shape == (4, 5)


def test_init_model_shapes_and_defaults():
    params = init_model(jax.random.PRNGKey(0), 2, 8, 3, num_layers=2)
    assert isinstance(params, ModelParams) and isinstance(params.head, Dense)
    assert [p.w_x.shape for p in params.layers] == [(2, 8), (8, 8)]
    assert params.head.w.shape == (8, 3) and params.head.b.shape == (3,)
    assert (params.input_size, params.hidden_size, params.output_size) == (2, 8, 3)
    assert not np.any(params.head.b)
    irnn = init_model(jax.random.PRNGKey(0), 2, 8, 1, recurrent_init="identity")
    np.testing.assert_array_equal(irnn.layers[0].w_h, np.eye(8))


def test_model_bad_input():
    params = init_model(jax.random.PRNGKey(0), 2, 4, 1)
    xs = jnp.ones((2, 3, 2))
    with pytest.raises(TypeError, match=r"params must be a jrnn\.ModelParams"):
        apply(params.layers[0], xs)
    with pytest.raises(ValueError, match=r"params.head.w must be \(hidden_size=4"):
        apply(params._replace(head=Dense(jnp.ones((3, 1)), jnp.ones(1))), xs)
    with pytest.raises(ValueError, match="output_size must be a positive int"):
        init_model(jax.random.PRNGKey(0), 2, 4, 0)
    with pytest.raises(ValueError, match="xs"):
        apply(params, jnp.ones((2, 3, 5)))


# --- losses ----------------------------------------------------------------------------


def test_mse_and_cross_entropy_match_numpy():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    assert np.isclose(mean_squared_error(pred, target), np.mean((pred - target) ** 2))
    logits, labels = rng.normal(size=(4, 5)), np.array([0, 4, 2, 2])
    logp = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
    assert np.isclose(softmax_cross_entropy(logits, labels), -np.mean(logp[np.arange(4), labels]))
    assert np.isclose(accuracy(logits, labels), np.mean(np.argmax(logits, -1) == labels))


def test_sequence_losses_ignore_padding_in_value_and_gradient():
    rng = np.random.default_rng(1)
    lengths = np.array([5, 2, 0])
    mask = np.asarray(sequence_mask(lengths, 5))
    np.testing.assert_array_equal(mask.sum(1), lengths)
    pred, target = rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 5, 2))
    manual = np.sum(np.mean((pred - target) ** 2, -1) * mask) / mask.sum()
    assert np.isclose(mean_squared_error(pred, target, lengths), manual)
    junk = np.where(mask[..., None] > 0, target, 1e6)
    assert np.isclose(mean_squared_error(pred, junk, lengths), manual)
    g1 = jax.grad(mean_squared_error)(jnp.asarray(pred), target, lengths)
    g2 = jax.grad(mean_squared_error)(jnp.asarray(pred), junk, lengths)
    np.testing.assert_allclose(g1, g2)
    assert not np.any(np.asarray(g1)[2])  # an empty sequence gets no gradient

    logits, labels = rng.normal(size=(3, 5, 4)), rng.integers(0, 4, size=(3, 5))
    logp = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
    picked = np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    assert np.isclose(softmax_cross_entropy(logits, labels, lengths), -np.sum(picked * mask) / 7)
    hits = (np.argmax(logits, -1) == labels) * mask
    assert np.isclose(accuracy(logits, labels, lengths), hits.sum() / 7)
    # a batch with no valid step scores 0, not NaN
    assert float(mean_squared_error(pred, target, np.zeros(3, int))) == 0.0


def test_losses_bad_input():
    with pytest.raises(ValueError, match=r"targets must have the predictions' shape \(2, 3\)"):
        mean_squared_error(jnp.ones((2, 3)), jnp.ones((2, 1)))
    with pytest.raises(ValueError, match=r"labels must be integer class indices of shape \(2,\)"):
        softmax_cross_entropy(jnp.ones((2, 3)), jnp.ones((2, 1), int))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*got values in \[-1, 2\]"):
        softmax_cross_entropy(jnp.ones((2, 3)), jnp.array([-1, 2]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        accuracy(jnp.ones((2, 3)), jnp.array([0, 3]))
    with pytest.raises(TypeError, match="labels must be integer"):
        softmax_cross_entropy(jnp.ones((2, 3)), jnp.ones((2,)))
    with pytest.raises(ValueError, match=r"lengths must be \(2,\)"):
        mean_squared_error(jnp.ones((2, 4, 1)), jnp.ones((2, 4, 1)), jnp.ones(3, int))


# --- train step ------------------------------------------------------------------------


def _plain_loss(params, batch, activation="tanh", return_sequences=False):
    """The same objective through jrnn.forward (plain autodiff, no hand-written BPTT)."""
    out = batch.inputs
    for layer in params.layers:
        out, h_last = jrnn.forward(layer, out, activation=activation, lengths=batch.lengths)
    top = out if return_sequences else h_last
    return mean_squared_error(top @ params.head.w + params.head.b, batch.targets, batch.lengths)


@pytest.mark.parametrize("jit", [True, False])
def test_train_step_is_an_optax_step_on_the_bptt_gradient(x64, jit):
    key_p, key_x, key_y = jax.random.split(jax.random.PRNGKey(2), 3)
    params = _model(key_p, layers=2)
    batch = Batch(
        jax.random.normal(key_x, (4, 6, 3), jnp.float64),
        jax.random.normal(key_y, (4, 2), jnp.float64),
        np.array([6, 4, 1, 6]),
    )
    lr = 0.1
    step = make_train_step(optax.sgd(lr), jit=jit)
    new_params, _, metrics = step(params, optax.sgd(lr).init(params), batch)
    grads = jax.grad(_plain_loss)(params, batch)
    expected = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    assert tree_rel_err(new_params, expected) < 1e-12
    assert np.isclose(metrics["loss"], _plain_loss(params, batch))
    assert np.isclose(metrics["grad_norm"], global_norm(grads))
    assert type(new_params) is ModelParams


def test_train_step_uses_the_callers_chain():
    params = init_model(jax.random.PRNGKey(0), 2, 8, 1)
    batch = get_task("adding").sample(jax.random.PRNGKey(1), 16, 20)
    chain = optax.chain(optax.clip_by_global_norm(1e-3), optax.sgd(1.0))
    new_params, state, metrics = make_train_step(chain)(params, chain.init(params), batch)
    moved = global_norm(jax.tree.map(jnp.subtract, new_params, params))
    assert metrics["grad_norm"] > 1e-3  # the raw gradient is larger than the clip ...
    assert np.isclose(moved, 1e-3, rtol=1e-4)  # ... and the update was clipped to it
    assert jax.tree.structure(state) == jax.tree.structure(chain.init(params))


def test_train_step_and_evaluate_bad_input():
    with pytest.raises(TypeError, match=r"optimizer must be an optax\.GradientTransformation"):
        make_train_step("adam")
    with pytest.raises(ValueError, match="loss must be one of"):
        make_train_step(optax.adam(1e-3), loss="hinge")
    params = init_model(jax.random.PRNGKey(0), 2, 4, 1)
    with pytest.raises(TypeError, match=r"batch must be a jrnn\.train\.Batch"):
        evaluate(params, {"inputs": 1})


@NEEDS_SKLEARN
def test_evaluate_reports_loss_and_accuracy():
    task = get_task("digits")
    params = init_model(jax.random.PRNGKey(0), 8, 16, 10)
    test = task.test_set()
    metrics = evaluate(params, test, loss="cross_entropy")
    value, (expected, _) = loss_and_metrics(params, test, loss="cross_entropy")
    assert set(metrics) == {"loss", "accuracy"}
    assert np.isclose(metrics["loss"], value) and np.isclose(
        metrics["accuracy"], expected["accuracy"]
    )


@NEEDS_SKLEARN
def test_training_learns_digits():
    """A few hundred Adam steps take sequential digits far above chance (0.1)."""
    task = get_task("digits")
    params = init_model(jax.random.PRNGKey(0), 8, 64, 10)
    optimizer = optax.adam(3e-3)
    step = make_train_step(optimizer, loss="cross_entropy")
    state = optimizer.init(params)
    key = jax.random.PRNGKey(1)
    for i in range(300):
        params, state, _ = step(params, state, task.sample(jax.random.fold_in(key, i), 64, 8))
    assert evaluate(params, task.test_set(), loss="cross_entropy")["accuracy"] > 0.85


# --- truncated BPTT --------------------------------------------------------------------


def _stream(key, batch=3, steps=10, f=3, o=2, lengths=None):
    kx, ky = jax.random.split(key)
    return Batch(
        jax.random.normal(kx, (batch, steps, f), jnp.float64),
        jax.random.normal(ky, (batch, steps, o), jnp.float64),
        lengths,
    )


@jax.jit
def _chunk_value_and_grad(params, piece, h):
    """One chunk's loss and gradient from the state ``h`` (no gradient through it), its final
    states as aux; compiled once per chunk shape."""

    def loss(p):
        value, (_, finals) = loss_and_metrics(
            p, piece, jax.lax.stop_gradient(h), return_sequences=True
        )
        return value, finals

    return jax.value_and_grad(loss, has_aux=True)(params)


def _manual_chunks(params, batch, k, h0=None):
    """Truncated BPTT by hand: a Python loop over chunks, the state stop-gradiented."""
    t = batch.inputs.shape[1]
    h = (
        h0
        if h0 is not None
        else tuple(jnp.zeros((batch.inputs.shape[0], p.w_h.shape[0])) for p in params.layers)
    )
    grads, losses = [], []
    for start in range(0, t, k):
        stop = min(start + k, t)
        lengths = None if batch.lengths is None else np.clip(batch.lengths - start, 0, stop - start)
        piece = Batch(batch.inputs[:, start:stop], batch.targets[:, start:stop], lengths)
        (value, h), g = _chunk_value_and_grad(params, piece, h)
        grads.append(g)
        losses.append(value)
    return grads, np.array(losses), h


def test_tbptt_with_one_chunk_is_full_bptt(x64):
    params = _model(jax.random.PRNGKey(3), layers=2)
    batch = _stream(jax.random.PRNGKey(4), lengths=np.array([10, 7, 3]))
    grads, losses, _ = tbptt_gradients(params, batch, chunk=10)
    full = jax.grad(_plain_loss)(params, batch, return_sequences=True)
    assert losses.shape == (1,)
    assert tree_rel_err(jax.tree.map(lambda g: g[0], grads), full) < tol(np.float64, "grad")


@settings(max_examples=8)  # each example compiles a scan per chunk shape
@given(
    steps=st.integers(1, 12),
    chunk=st.integers(1, 12),
    with_lengths=st.booleans(),
    layers=st.integers(1, 2),
)
def test_tbptt_matches_a_loop_over_chunks(steps, chunk, with_lengths, layers):
    with enable_x64(True):
        params = _model(jax.random.PRNGKey(steps), layers=layers)
        lengths = np.array([steps, steps // 2, 0]) if with_lengths else None
        batch = _stream(jax.random.PRNGKey(chunk), steps=steps, lengths=lengths)
        grads, losses, h = tbptt_gradients(params, batch, chunk=chunk)
        ref_grads, ref_losses, ref_h = _manual_chunks(params, batch, chunk)
        assert losses.shape == (len(ref_grads),)
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)
        for i, ref in enumerate(ref_grads):
            assert tree_rel_err(jax.tree.map(lambda g, i=i: g[i], grads), ref) < tol(
                np.float64, "grad"
            )
        assert tree_rel_err(h, ref_h) < tol(np.float64, "forward")


def test_truncated_bptt_with_one_chunk_is_a_train_step(x64):
    params = _model(jax.random.PRNGKey(5))
    batch = _stream(jax.random.PRNGKey(6), steps=8)
    opt = optax.adam(1e-2)
    p1, s1, _, m1 = truncated_bptt(params, opt.init(params), batch, optimizer=opt, chunk=8)
    p2, s2, m2 = make_train_step(opt, return_sequences=True)(params, opt.init(params), batch)
    assert tree_rel_err(p1, p2) < 1e-12 and tree_rel_err(s1, s2) < 1e-12
    assert np.isclose(m1["loss"][0], m2["loss"])


def test_truncated_bptt_updates_between_chunks(x64):
    params = _model(jax.random.PRNGKey(7))
    batch = _stream(jax.random.PRNGKey(8), steps=11)
    opt = optax.sgd(0.05)
    new, _, h, metrics = jax.jit(truncated_bptt, static_argnames=("optimizer", "chunk"))(
        params, opt.init(params), batch, optimizer=opt, chunk=4
    )
    p, h_ref = params, None
    for start in (0, 4, 8):
        piece = Batch(batch.inputs[:, start : start + 4], batch.targets[:, start : start + 4])
        [g], _, h_ref = _manual_chunks(p, piece, 4, h_ref)
        p = jax.tree.map(lambda a, b: a - 0.05 * b, p, g)
    assert metrics["loss"].shape == (3,)
    assert tree_rel_err(new, p) < 1e-12 and tree_rel_err(h, h_ref) < 1e-12


def test_truncated_bptt_skips_chunks_with_no_valid_step(x64):
    params = _model(jax.random.PRNGKey(9))
    lengths = np.array([4, 3])
    batch = _stream(jax.random.PRNGKey(10), batch=2, steps=12, lengths=lengths)
    opt = optax.adam(1e-2)
    p1, s1, _, m1 = truncated_bptt(params, opt.init(params), batch, optimizer=opt, chunk=4)
    first = Batch(batch.inputs[:, :4], batch.targets[:, :4], lengths)
    p2, s2, _, _ = truncated_bptt(params, opt.init(params), first, optimizer=opt, chunk=4)
    np.testing.assert_array_equal(m1["steps"], [7, 0, 0])
    assert tree_rel_err(p1, p2) == 0.0 and tree_rel_err(s1, s2) == 0.0


def test_tbptt_mixed_precision():
    params = jax.tree.map(
        lambda p: p.astype(jnp.bfloat16), _model(jax.random.PRNGKey(11), dtype=jnp.float32)
    )
    batch = Batch(jnp.ones((2, 6, 3)), jnp.ones((2, 6, 2)))
    _grads, losses, h = tbptt_gradients(params, batch, chunk=4)
    assert losses.shape == (2,) and h[0].dtype == jnp.float32
    opt = optax.sgd(0.1)
    truncated_bptt(params, opt.init(params), batch, optimizer=opt, chunk=4)


def test_tbptt_bad_input():
    params = _model(jax.random.PRNGKey(0), dtype=jnp.float32)
    batch = Batch(jnp.ones((2, 6, 3)), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"batch.targets must be \(B, T, ...\)"):
        tbptt_gradients(params, batch, chunk=2)
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        tbptt_gradients(params, batch._replace(targets=jnp.ones((2, 6, 2))), chunk=0)
    with pytest.raises(TypeError, match="chunk must be a positive int"):
        tbptt_gradients(params, batch._replace(targets=jnp.ones((2, 6, 2))), chunk=2.0)
    with pytest.raises(ValueError, match="needs at least one step"):
        tbptt_gradients(params, Batch(jnp.ones((2, 0, 3)), jnp.ones((2, 0, 2))), chunk=2)
    grads, _, _ = tbptt_gradients(
        params, batch._replace(targets=jnp.ones((2, 6, 2))), chunk=np.int64(3)
    )
    assert grads.head.w.shape[0] == 2  # two chunks
