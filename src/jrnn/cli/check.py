"""``jrnn check``: the seed notebook's example and the gradient checks."""

from __future__ import annotations

import jax
import numpy as np

from jrnn._src.compat import enable_x64
from jrnn._src.scan import forward
from jrnn.cli.notebook import SEED_H_LAST, seed_example, seed_loss
from jrnn.gradcheck import check_grads
from jrnn.params import init_params

__all__ = ["check"]


def check(
    batch: int = 8, steps: int = 64, features: int = 16, hidden: int = 32, seed: int = 0
) -> int:
    """``jrnn check``: prints the seed example's forward output (to compare with the
    notebook's printed numbers), then the gradient-check tables for that example (loss
    ``0.5 * ||h_T||^2``) and for a random model; returns 1 if a check fails."""
    # numpy's print options for this command's output only: restored after
    with enable_x64(), np.printoptions(precision=8, suppress=True):
        params, xs, h0 = seed_example()
        _, h_last = forward(params, xs, h0)
        print("seed notebook example: forward(x, h0 = 0), h_T =")
        print(np.asarray(h_last))
        print(f"notebook printed:\n{SEED_H_LAST}")
        print(f"max |difference| = {np.max(np.abs(np.asarray(h_last) - SEED_H_LAST)):.2e}\n")
        seed_report = check_grads(params, xs, h0, loss=seed_loss)
        print(seed_report.table())
        print("\ntrue gradients of L = 0.5 * ||h_T||^2 (hand-written BPTT):")
        for name in ("w_x", "w_h", "b", "xs", "h0"):
            print(f"d{name} =\n{seed_report.bptt[name]}")

    key_p, key_x, key_h = jax.random.split(jax.random.PRNGKey(seed), 3)
    rparams = init_params(key_p, features, hidden)
    rxs = jax.random.normal(key_x, (batch, steps, features))
    rh0 = 0.5 * jax.random.normal(key_h, (batch, hidden))
    print()
    random_report = check_grads(rparams, rxs, rh0)
    print(random_report.table())
    ok = seed_report.ok() and random_report.ok()
    print(
        f"\ngradient checks {'passed' if ok else 'FAILED'} "
        "(BPTT vs autodiff rel <= 1e-10, vs finite differences rel <= 1e-7)"
    )
    return 0 if ok else 1
