"""The seed notebook's worked example: its forward numbers are ground truth, its backward is not."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rel_err

import jrnn
from jrnn.cli.notebook import (
    SEED_H_LAST,
    SEED_NOTEBOOK_DH,
    SEED_NOTEBOOK_DX,
    seed_example,
    seed_loss,
)

# The true gradients of L = 0.5 * ||h_T||^2 for the seed example, as printed by
# `python -m jrnn` (hand-written BPTT; autodiff and finite differences agree to the last digit).
TRUE_DXS = np.array(
    [[[0.00028861, 0.00039817], [0.00290763, 0.00408686], [0.03946000, 0.05796616]]]
)
TRUE_DH0 = np.array([[0.00028861, 0.00035379, 0.00039817, 0.00048416]])
TRUE_DB = np.array([0.30850676, 0.28857766, 0.26732320, 0.25068110])
TRUE_DH_PREV = np.array([[0.03946000, 0.04985792, 0.05796616, 0.07065375]])  # dL/dh_{T-1}


@pytest.mark.parametrize("fn", [jrnn.forward, jrnn.rnn])
@pytest.mark.parametrize("jit", [False, True])
def test_seed_forward_matches_notebook(x64, fn, jit):
    params, xs, h0 = seed_example()
    f = jax.jit(fn) if jit else fn
    hs, h_last = f(params, xs, h0)
    assert hs.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(h_last), SEED_H_LAST, rtol=0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(hs[:, -1]), SEED_H_LAST, rtol=0, atol=1e-8)


def test_seed_forward_default_h0_and_numpy_loop(x64):
    params, xs, _ = seed_example()
    # the notebook's own loop, verbatim in spirit
    h = np.zeros((1, 4))
    for i in range(3):
        h = np.tanh(xs[:, i, :] @ params.w_x + h @ params.w_h + params.b)
    _, h_last = jrnn.forward(params, xs)
    np.testing.assert_allclose(np.asarray(h_last), h, rtol=1e-14, atol=0)


def _seed_grads_three_ways():
    params, xs, h0 = seed_example()
    hs, h_last = jrnn.forward(params, xs, h0)
    # L = 0.5 ||h_T||^2: dL/dh_T = h_T, no loss on the other steps.
    bptt = jrnn.backward(params, xs, h0, hs, None, h_last)

    def loss(p, x, h):
        return seed_loss(*jrnn.forward(p, x, h))

    autodiff = jax.grad(loss, argnums=(0, 1, 2))(params, xs, h0)
    report = jrnn.check_grads(params, xs, h0, loss=seed_loss)
    return bptt, autodiff, report


def test_seed_true_gradients_bptt_autodiff_fd_agree(x64):
    bptt, autodiff, report = _seed_grads_three_ways()
    assert rel_err(bptt[0].w_x, autodiff[0].w_x) <= 1e-12
    assert rel_err(bptt[0].w_h, autodiff[0].w_h) <= 1e-12
    assert rel_err(bptt[0].b, autodiff[0].b) <= 1e-12
    assert rel_err(bptt[1], autodiff[1]) <= 1e-12
    assert rel_err(bptt[2], autodiff[2]) <= 1e-12
    # every entry checked by finite differences (the example is tiny)
    assert all(r.fd_entries == int(np.prod(r.shape)) for r in report.rows)
    assert report.max_bptt_fd_rel <= 1e-9
    assert report.ok(autodiff_rtol=1e-12, fd_rtol=1e-9)
    np.testing.assert_allclose(np.asarray(bptt[1]), TRUE_DXS, atol=5e-9, rtol=0)
    np.testing.assert_allclose(np.asarray(bptt[2]), TRUE_DH0, atol=5e-9, rtol=0)
    np.testing.assert_allclose(np.asarray(bptt[0].b), TRUE_DB, atol=5e-9, rtol=0)


def test_notebook_backward_numbers_are_not_gradients(x64):
    """The notebook's printed dx/dh (from 1 - tanh(dh)^2, one step back) differ from the truth.

    Its dx and dh stand for dL/dx_T and dL/dh_{T-1}. The true values come from running the
    first T - 1 steps, then BPTT through the last step alone from h_{T-1}.
    """
    params, xs, h0 = seed_example()
    _, h_prev = jrnn.forward(params, xs[:, :2], h0)  # h_{T-1}
    hs_last, h_last = jrnn.forward(params, xs[:, 2:], h_prev)
    _, dx_last, dh_prev = jrnn.backward(params, xs[:, 2:], h_prev, hs_last, None, h_last)
    bptt, _, _ = _seed_grads_three_ways()
    np.testing.assert_allclose(np.asarray(dx_last[:, 0]), np.asarray(bptt[1][:, -1]), rtol=1e-14)
    assert rel_err(SEED_NOTEBOOK_DX, dx_last[:, 0]) > 0.5
    assert rel_err(SEED_NOTEBOOK_DH, dh_prev) > 0.5
    np.testing.assert_allclose(np.asarray(dh_prev), TRUE_DH_PREV, atol=5e-9, rtol=0)


def test_notebook_backward_reproduced_and_explained(x64):
    """Recompute the notebook's deterministic outputs to show where they come from.

    Its dA = h_T * (1 - tanh(h_T)^2) (tanh' applied to the output, one step only); the
    printed dx = dA @ w_x.T and dh = dA @ w_h.T follow, independent of the random
    parameter-gradient seeds, which are then discarded.
    """
    params, _, _ = seed_example()
    h_t = SEED_H_LAST
    da = h_t * (1 - np.tanh(h_t) ** 2)
    np.testing.assert_allclose(da @ params.w_x.T, SEED_NOTEBOOK_DX, atol=1e-8)
    np.testing.assert_allclose(da @ params.w_h.T, SEED_NOTEBOOK_DH, atol=1e-8)
