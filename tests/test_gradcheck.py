"""jrnn.check_grads: agrees on a correct backward, and catches a wrong one."""

import jax
import jax.numpy as jnp
import numpy as np
from helpers import random_problem

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


def test_catches_the_notebook_bug(x64, monkeypatch):
    """The notebook's derivative (1 - tanh(h)^2 instead of 1 - h^2) fails the check loudly."""
    wrong = jrnn.activations.Activation("tanh", jnp.tanh, lambda h: 1 - jnp.tanh(h) ** 2)
    monkeypatch.setitem(jrnn.activations.ACTIVATIONS, "tanh", wrong)
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(1))
    report = jrnn.check_grads(params, xs, h0)
    assert not report.ok()
    assert report.max_bptt_autodiff_rel > 1e-3
    assert report.max_autodiff_fd_rel <= 1e-8  # autodiff and FD still agree with each other


def test_catches_a_one_step_backward(x64, monkeypatch):
    """A backward that stops after one step (the notebook's other bug) fails the check."""

    def truncated(params, xs, h0, hs, dhs, dh_last, **kw):
        dparams, dxs, dh0 = jrnn.backward(
            params,
            xs[:, -1:],
            hs[:, -2],
            hs[:, -1:],
            None if dhs is None else dhs[:, -1:],
            dh_last,
            **kw,
        )
        return dparams, jnp.zeros_like(xs).at[:, -1:].set(dxs), jnp.zeros_like(dh0)

    monkeypatch.setattr(jrnn.gradcheck, "backward", truncated)
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(2))
    report = jrnn.check_grads(params, xs, h0)
    assert not report.ok()
    assert report.max_bptt_autodiff_rel > 1e-2


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
