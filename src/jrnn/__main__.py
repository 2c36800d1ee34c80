"""The ``jrnn`` command (also ``python -m jrnn``).

* ``jrnn train [options]``: train a model on a task (see :mod:`jrnn.cli`, ``jrnn train -h``).
* ``jrnn check [options]`` (or ``jrnn`` with only these options): the seed notebook's
  example and gradient checks.

``jrnn check`` prints the forward output of the notebook's example (to compare with the
notebook's printed numbers), then the gradient-check tables for that example
(loss ``0.5 * ||h_T||^2``) and for a random model of batch 8, 64 steps,
16 features and 32 hidden units.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from jrnn.forward import forward
from jrnn.gradcheck import check_grads
from jrnn.params import init_params
from jrnn.seed import SEED_H_LAST, seed_example, seed_loss


def demo(
    batch: int = 8, steps: int = 64, features: int = 16, hidden: int = 32, seed: int = 0
) -> int:
    """Runs the demo; returns a process exit code (1 if a gradient check fails)."""
    with jax.enable_x64(True):
        params, xs, h0 = seed_example()
        _, h_last = forward(params, xs, h0)
        np.set_printoptions(precision=8, suppress=True)
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "train":
        from jrnn.cli import main as train_main

        return train_main(argv[1:])
    if argv and argv[0] == "check":
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="jrnn check",
        description="The seed notebook's example and the gradient checks (BPTT vs autodiff "
        "vs finite differences). Training is `jrnn train` (see `jrnn train --help`).",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("batch", "steps", "features", "hidden"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive; got {getattr(args, name)}")
    return demo(args.batch, args.steps, args.features, args.hidden, args.seed)


if __name__ == "__main__":
    sys.exit(main())
