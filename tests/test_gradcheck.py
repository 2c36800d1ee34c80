"""jrnn.check_grads: agrees on a correct backward, and catches a wrong one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import enable_x64, random_problem

import jrnn
import jrnn.activations
import jrnn.gradcheck


def test_report_on_random_model_float32_inputs():
    params, xs, h0, lengths = random_problem(
        jax.random.PRNGKey(0),
        batch=4,
        steps=12,
        features=5,
        hidden=8,
        dtype=np.float32,
        with_lengths=True,
    )
    report = jrnn.check_grads(params, xs, h0, lengths=lengths, fd_entries=40, seed=1)
    assert [r.name for r in report.rows] == ["w_x", "w_h", "b", "xs", "h0"]
    assert report.ok()
    assert report.max_bptt_autodiff_rel <= 1e-10
    assert report.max_bptt_fd_rel <= 1e-8
    sampled = {r.name: r.fd_entries for r in report.rows}
    assert sampled == {"w_x": 40, "w_h": 40, "b": 8, "xs": 40, "h0": 32}
    assert report.bptt["w_h"].dtype == np.float64  # checked in float64 whatever came in
    assert int(np.sum(np.isfinite(report.fd["xs"]))) == 40
    text = str(report)
    assert "BPTT~autodiff" in text and "w_h" in text and "40/240" in text


# the notebook's derivative of tanh, written from the output: 1 - tanh(h)^2 instead of 1 - h^2
NOTEBOOK_TANH = jrnn.activations.Activation("tanh", jnp.tanh, lambda h: 1 - jnp.tanh(h) ** 2)


def test_catches_the_notebook_bug(x64):
    """The notebook's derivative fails the check loudly."""
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(1))
    assert jrnn.check_grads(params, xs, h0, activation=jnp.tanh).ok()
    report = jrnn.check_grads(params, xs, h0, activation=NOTEBOOK_TANH)
    assert not report.ok()
    assert report.max_bptt_autodiff_rel > 1e-3
    assert report.max_autodiff_fd_rel <= 1e-8  # autodiff and FD still agree with each other


def test_catches_a_one_step_backward(x64):
    """A backward that stops after one step (the notebook's other bug), wired in as a
    custom_vjp of the user's, fails the check against finite differences."""

    @jax.custom_vjp
    def layer(params, xs):
        return jrnn.forward(params, xs)[0]

    def layer_fwd(params, xs):
        hs, _ = jrnn.forward(params, xs)
        return hs, (params, xs, hs)

    def one_step(residuals, dhs):
        params, xs, hs = residuals
        last = (params, xs[:, -1:], hs[:, -2], hs[:, -1:], dhs[:, -1:], None)
        dparams, dxs, _ = jrnn.backward(*last)
        return dparams, jnp.zeros_like(xs).at[:, -1:].set(dxs)

    layer.defvjp(layer_fwd, one_step)
    params, xs, _, _ = random_problem(jax.random.PRNGKey(2))
    report = jrnn.check_grads(params, xs, objective=lambda p, x: jnp.sum(jnp.sin(layer(p, x))))
    assert not report.ok()
    assert report.max_bptt_fd_rel > 1e-2
    assert jrnn.check_grads(
        params, xs, objective=lambda p, x: jnp.sum(jnp.sin(jrnn.rnn(p, x)[0]))
    ).ok()


def test_verbose_prints_table(x64, capsys):
    params, xs, h0, _ = random_problem(
        jax.random.PRNGKey(3), batch=1, steps=2, features=2, hidden=2
    )
    report = jrnn.check_grads(params, xs[0], h0[0], activation="linear", reverse=True, verbose=True)
    out = capsys.readouterr().out
    assert out.strip() == report.table()
    assert "activation=linear, reverse=True" in out
    assert report.ok()


def test_no_finite_differences_reports_nan_not_zero(x64):
    params, xs, h0, _ = random_problem(
        jax.random.PRNGKey(4), batch=1, steps=2, features=2, hidden=2
    )
    report = jrnn.check_grads(params, xs, h0, fd_entries=0)
    assert all(np.isnan(r.bptt_fd_rel) and r.fd_entries == 0 for r in report.rows)
    assert np.isnan(report.max_bptt_fd_rel)
    assert report.ok()  # only the autodiff comparison ran, and it passes
    assert "nan" in report.table()


# --- exact zeros: T = 0 and identically zero blocks ------------------------------------


def _linear_loss(hs, h_last):
    return jnp.sum(h_last) + jnp.sum(hs)


@pytest.mark.parametrize(
    "dtype,loss", [(np.float64, _linear_loss), (np.float32, None)], ids=["linear", "f32"]
)
def test_zero_steps_with_h0_passes(x64, dtype, loss):
    """T = 0: the loss reads only h0, so dW_x, dW_h, db are exactly zero; that passes."""
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(5), 2, 3, 2, 3, dtype=dtype)
    report = jrnn.check_grads(params, xs[:, :0], h0, loss=loss)
    assert report.ok()
    rows = {r.name: r for r in report.rows}
    for name in ("w_x", "w_h", "b"):
        assert rows[name].scale == 0.0 and rows[name].fd_entries > 0
        # the finite differences of a loss that does not move are exactly zero
        assert rows[name].bptt_fd_abs == 0.0 and rows[name].autodiff_fd_rel == 0.0
    assert rows["h0"].scale > 0 and rows["h0"].bptt_fd_rel <= 1e-9


def test_identically_zero_block_passes(x64):
    """xs = 0 makes dW_x identically zero while every other block is not."""
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(6), 2, 3, 2, 3)
    report = jrnn.check_grads(params, jnp.zeros_like(xs), h0, loss=_linear_loss)
    assert report.ok()
    w_x = report.rows[0]
    assert w_x.name == "w_x" and w_x.scale == 0.0
    assert w_x.bptt_autodiff_rel == 0.0 and w_x.bptt_fd_rel == 0.0


def test_relative_error_is_measured_against_the_gradient_scale(x64):
    """Rounding noise on a zero gradient reads as noise, not as a relative error of 1."""
    abs_err, rel = jrnn.gradcheck.scaled_error(np.zeros(4), np.full(4, 3e-14), floor=2.0)
    assert abs_err == 3e-14 and rel == pytest.approx(1.5e-14)
    assert jrnn.gradcheck.scaled_error(np.zeros(3), np.zeros(3), floor=0.0) == (0.0, 0.0)
    # above the floor, an array is measured against its own scale
    assert jrnn.gradcheck.scaled_error(np.array([4.0]), np.array([5.0]), floor=1.0)[1] == 0.2
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(7), 2, 3, 2, 3)
    report = jrnn.check_grads(params, xs, h0, fd_entries=0)
    assert report.grad_scale == max(r.scale for r in report.rows) > 0
    assert f"G = max|grad| over all arrays = {report.grad_scale:.3e}" in report.table()


def test_bad_eps_and_fd_entries():
    params = jrnn.RNNParams(np.ones((2, 3)), np.eye(3), np.zeros(3))
    xs, h0 = np.ones((1, 4, 2)), np.zeros((1, 3))
    with pytest.raises(TypeError, match=r"eps must be a finite positive number; got str '1e-3'"):
        jrnn.check_grads(params, xs, h0, eps="1e-3")
    for eps in (0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be a finite positive number"):
            jrnn.check_grads(params, xs, h0, eps=eps)
    with pytest.raises(TypeError, match="fd_entries must be a non-negative int; got float"):
        jrnn.check_grads(params, xs, h0, fd_entries=2.0)


# The model form: any params pytree, any objective built on jrnn.rnn.


def _model_problem(key):
    k1, k2 = jax.random.split(key)
    return jrnn.init_model(k1, 3, 6, 2, num_layers=2), jax.random.normal(k2, (2, 7, 3))


@pytest.mark.parametrize("kind", ["model", "stack", "bidirectional"])
def test_a_whole_model_checks_leaf_by_leaf(kind):
    key = jax.random.PRNGKey(4)
    model, xs = _model_problem(key)
    params = {
        "model": model,
        "stack": jrnn.init_stack(key, 3, 5, num_layers=2, bidirectional=True),
        "bidirectional": jrnn.init_stack(key, 3, 5, bidirectional=True)[0],
    }[kind]
    report = jrnn.check_grads(params, xs, fd_entries=12, lengths=jnp.array([7, 4]))
    assert report.ok(), report.table()
    names = [r.name for r in report.rows]
    assert names[-1] == "xs" and len(names) == len(jax.tree.leaves(params)) + 1
    if kind == "model":
        assert names[:3] == ["params.layers[0].w_x", "params.layers[0].w_h", "params.layers[0].b"]
        assert "params.head.w" in names
    # two computations, not one: BPTT and the autodiff reference differ by rounding only
    assert 0 < report.max_bptt_autodiff_rel <= 1e-12
    assert "agree" in report.table().splitlines()[-1]


def test_the_model_form_catches_a_wrong_bptt(x64):
    """The notebook's derivative in the BPTT of every layer: the model form fails loudly,
    also for an objective jitted (and traced) before the check."""
    model, xs = _model_problem(jax.random.PRNGKey(5))

    @jax.jit
    def objective(p, xs):
        outputs, _ = jrnn.model.apply(p, xs, activation=NOTEBOOK_TANH)
        return jnp.sum(jnp.sin(outputs))

    jax.grad(objective)(model, xs)  # a trace with the wrong BPTT in the jit cache
    report = jrnn.check_grads(model, xs, objective=objective)
    assert not report.ok() and report.max_bptt_autodiff_rel > 1e-3
    assert report.max_autodiff_fd_rel <= 1e-8
    assert report.diagnosis().startswith("BPTT disagrees with autodiff")


def test_a_non_smooth_loss_is_explained():
    params = jrnn.init_params(jax.random.PRNGKey(6), 3, 4)
    xs = jax.random.normal(jax.random.PRNGKey(7), (2, 6, 3))

    def objective(p, xs):  # |b| at b = 0 (the default init): a kink under every b entry
        return jnp.sum(jnp.abs(jrnn.rnn(p, xs)[1])) + jnp.sum(jnp.abs(p.b))

    report = jrnn.check_grads(params, xs, objective=objective)
    assert not report.ok() and report.max_bptt_autodiff_rel <= 1e-12
    row = {r.name: r for r in report.rows}["params.b"]
    assert row.bptt_fd_rel > 0.1
    assert "not smooth" in report.diagnosis() and report.table().endswith(report.diagnosis())


def test_the_model_form_refuses_what_it_cannot_use():
    model, xs = _model_problem(jax.random.PRNGKey(8))
    with pytest.raises(TypeError, match="takes no h0 or loss"):
        jrnn.check_grads(model, xs, jnp.zeros((2, 6)))
    with pytest.raises(TypeError, match="with an objective takes no model options"):
        jrnn.check_grads(model, xs, objective=lambda p, x: 0.0, activation="relu")
    with pytest.raises(TypeError, match=r"pass objective=.params, xs. -> scalar; got dict"):
        jrnn.check_grads({"w": jnp.ones(3)}, xs)
    report = jrnn.check_grads(
        {"w": jnp.ones((3, 4))},
        xs,
        objective=lambda p, x: jnp.sum(jnp.tanh(x @ p["w"])),
        fd_entries=4,
    )
    assert report.ok() and [r.name for r in report.rows] == ["params['w']", "xs"]


def test_a_wrong_derivative_is_told_from_a_kink_and_a_large_step():
    """BPTT and autodiff agree, both miss the finite differences: a second step size and
    the one-sided slopes tell which of three it is."""
    params = jrnn.init_params(jax.random.PRNGKey(6), 3, 4)
    xs = jax.random.normal(jax.random.PRNGKey(7), (2, 6, 3))

    @jax.custom_vjp
    def sin_twice_wrong(x):
        return jnp.sin(x)

    sin_twice_wrong.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (2 * jnp.cos(x) * g,))
    wrong = jrnn.check_grads(
        params, xs, objective=lambda p, x: jnp.sum(sin_twice_wrong(jrnn.rnn(p, x)[0]))
    )
    assert not wrong.ok() and wrong.max_bptt_autodiff_rel <= 1e-12
    assert "derivative, as JAX computes it, is wrong" in wrong.diagnosis()
    assert "custom_vjp" in wrong.diagnosis()

    with enable_x64():
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        at = float(jnp.sum(jrnn.rnn(p64, jnp.asarray(xs, jnp.float64))[0]))

    def kinked(p, x):  # |s - s0 - 1e-5|: a kink 1e-5 away, inside every step tried
        return jnp.abs(jnp.sum(jrnn.rnn(p, x)[0]) - (at + 1e-5))

    kink = jrnn.check_grads(params, xs, objective=kinked)
    assert not kink.ok() and "not smooth at this point" in kink.diagnosis()

    def steep(p, x):
        return jnp.sum(jnp.exp(10 * jrnn.rnn(p, x)[0]))

    large = jrnn.check_grads(params, xs, objective=steep, eps=0.3)
    assert not large.ok() and "eps is too large" in large.diagnosis()
    assert jrnn.check_grads(params, xs, objective=steep).ok()
