"""Shared test helpers: the tolerance table, error measures, a NumPy reference RNN and the
hypothesis strategy that draws random problems."""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import jax
import numpy as np
from hypothesis import strategies as st

import jrnn

# jax.enable_x64 (newer jax) or its earlier experimental form (the floor CI runs)
if hasattr(jax, "enable_x64"):
    enable_x64 = jax.enable_x64
else:
    from jax.experimental import enable_x64  # noqa: F401

# Normwise relative tolerances, per dtype: max|a - ref| / max|ref|.
TOL = {
    np.dtype(np.float64): {"forward": 1e-12, "grad": 1e-10, "fd": 1e-8},
    np.dtype(np.float32): {"forward": 1e-5, "grad": 1e-5},
}

ACTS = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0), "linear": lambda a: a}


XLA_TEST_FLAG = "--xla_backend_optimization_level=0"
"""Added to ``XLA_FLAGS`` for the test session (conftest.py): LLVM compiles the CPU programs
without optimising them, a fifth less compile time, which is most of the suite's time. The
tests check the programs' results (at every optimisation level XLA's own passes run the
same), never their speed."""

XLA_CACHE = "JRNN_TEST_XLA_CACHE"
"""The environment variable holding the session's compilation cache folder (conftest.py)."""


def xla_cache_options() -> dict:
    """JAX's options for the session's persistent compilation cache: every executable is
    kept. The size stays unbounded: a bound makes JAX scan the whole folder at every write
    (quadratic in the thousands of entries of a run). Empty without the folder."""
    path = os.environ.get(XLA_CACHE)
    if not path:
        return {}
    return {
        "jax_compilation_cache_dir": path,
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }


def xla_cache_env() -> dict[str, str]:
    """:func:`xla_cache_options` as environment variables, for a subprocess's JAX."""
    return {name.upper(): str(value) for name, value in xla_cache_options().items()}


def tol(dtype, kind: str) -> float:
    return TOL[np.dtype(dtype)][kind]


def rel_err(a, ref) -> float:
    """Normwise relative error ``max|a - ref| / max|ref|`` (absolute if ``ref`` is zero)."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    if a.size == 0:
        return 0.0
    err = float(np.max(np.abs(a - ref)))
    scale = float(np.max(np.abs(ref)))
    return err / scale if scale > 0 else err


def tree_rel_err(a, ref) -> float:
    errs = jax.tree.map(rel_err, a, ref)
    return max(jax.tree.leaves(errs))


def reference_forward(params, xs, h0=None, *, activation="tanh", reverse=False, lengths=None):
    """A plain Python loop over time in float64 NumPy; xs `(B, T, F)` batch-first."""
    w_x, w_h, b = (np.asarray(p, np.float64) for p in params)
    xs = np.asarray(xs, np.float64)
    batch, steps, _ = xs.shape
    hidden = w_h.shape[0]
    h0 = np.zeros((batch, hidden)) if h0 is None else np.asarray(h0, np.float64)
    lengths = np.full(batch, steps) if lengths is None else np.asarray(lengths)
    act = ACTS[activation]
    hs = np.zeros((batch, steps, hidden))
    h_last = np.zeros((batch, hidden))
    for i in range(batch):
        h = h0[i]
        order = range(lengths[i] - 1, -1, -1) if reverse else range(lengths[i])
        for t in order:
            h = act(xs[i, t] @ w_x + h @ w_h + b)
            hs[i, t] = h
        h_last[i] = h
    return hs, h_last


def random_problem(
    key,
    batch=3,
    steps=5,
    features=4,
    hidden=6,
    *,
    dtype=np.float64,
    with_h0=True,
    with_lengths=False,
    recurrent_scale=1.0,
):
    """Random params `(F, H)`, xs `(B, T, F)`, h0 `(B, H)` or None, lengths `(B,)` or None."""
    kp, kx, kh, kl, _kb = jax.random.split(key, 5)
    params = jrnn.init_params(kp, features, hidden, dtype=dtype, bias_init="pytorch")
    params = params._replace(w_h=params.w_h * recurrent_scale)
    xs = jax.random.normal(kx, (batch, steps, features), dtype)
    h0 = 0.5 * jax.random.normal(kh, (batch, hidden), dtype) if with_h0 else None
    lengths = None
    if with_lengths:
        lengths = np.array(jax.random.randint(kl, (batch,), 0, steps + 1))
        lengths[0] = steps  # always one full-length and, when batch > 1, one empty sequence
        if batch > 1:
            lengths[-1] = 0
    return params, xs, h0, lengths


def numpy_problem(
    seed,
    batch=3,
    steps=5,
    features=4,
    hidden=6,
    *,
    dtype=np.float64,
    with_h0=True,
    with_lengths=False,
    recurrent_scale=1.0,
    time_major=False,
):
    """``random_problem``'s draws (the same initialisers and options) made by NumPy from an
    int ``seed``: a property test's shapes are new at each example, and ``jax.random``
    compiles its draws for every new shape. ``xs`` is `(T, B, F)` if ``time_major``."""
    rng = np.random.default_rng(seed)
    limit = np.sqrt(6.0 / (features + hidden))  # glorot_uniform, init_params' default
    w_x = rng.uniform(-limit, limit, (features, hidden))
    q, r = np.linalg.qr(rng.standard_normal((hidden, hidden)))  # orthogonal
    w_h = recurrent_scale * q * np.where(np.diag(r) < 0, -1.0, 1.0)
    bound = 1.0 / np.sqrt(hidden)  # PyTorch's two biases, summed
    b = rng.uniform(-bound, bound, hidden) + rng.uniform(-bound, bound, hidden)
    xs = rng.standard_normal((batch, steps, features))
    if time_major:
        xs = np.swapaxes(xs, 0, 1)
    h0 = 0.5 * rng.standard_normal((batch, hidden)) if with_h0 else None
    lengths = None
    if with_lengths:
        lengths = rng.integers(0, steps + 1, batch).astype(np.int32)
        lengths[0] = steps  # always one full-length and, when batch > 1, one empty sequence
        if batch > 1:
            lengths[-1] = 0
    as_jax = lambda a: None if a is None else jax.numpy.asarray(a.astype(dtype))
    params = jrnn.RNNParams(as_jax(w_x), as_jax(w_h), as_jax(b))
    return params, as_jax(xs), as_jax(h0), lengths


class Spec(NamedTuple):
    """One drawn problem: sizes, options and the seed its arrays are drawn from."""

    batch: int
    steps: int
    features: int
    hidden: int
    activation: str
    reverse: bool
    with_lengths: bool
    with_h0: bool
    time_major: bool
    seed: int

    def problem(self, dtype=np.float64, **kw):
        """``numpy_problem`` for this spec; ``xs`` is `(T, B, F)` if ``time_major``."""
        return numpy_problem(
            self.seed,
            self.batch,
            self.steps,
            self.features,
            self.hidden,
            dtype=dtype,
            with_h0=self.with_h0,
            with_lengths=self.with_lengths,
            time_major=self.time_major,
            **kw,
        )

    def options(self, lengths=None) -> dict:
        """The keyword options of this spec (``lengths`` as drawn by :meth:`problem`)."""
        return {
            "activation": self.activation,
            "reverse": self.reverse,
            "lengths": lengths,
            "time_major": self.time_major,
        }


def _flag(allowed: bool):
    return st.booleans() if allowed else st.just(False)


def specs(
    *,
    batch=(1, 4),
    steps=(1, 8),
    features=(1, 4),
    hidden=(1, 5),
    activations=("tanh", "relu", "linear"),
    reverse=True,
    lengths=True,
    h0=False,
    time_major=False,
):
    """The hypothesis strategy of :class:`Spec`: sizes in the given ``(min, max)`` ranges;
    ``reverse``, ``lengths``, ``h0`` and ``time_major`` drawn when ``True``, else off
    (``h0`` is always given when ``h0=False``)."""
    return st.builds(
        Spec,
        batch=st.integers(*batch),
        steps=st.integers(*steps),
        features=st.integers(*features),
        hidden=st.integers(*hidden),
        activation=st.sampled_from(activations),
        reverse=_flag(reverse),
        with_lengths=_flag(lengths),
        with_h0=st.booleans() if h0 else st.just(True),
        time_major=_flag(time_major),
        seed=st.integers(0, 2**16),
    )


# the flax linen and NNX adapters' cases (tests/test_flax.py, test_nnx.py):
# (activation, reverse, keep_order, seq_lengths, time_major, initial_carry, return_carry): each
# direction/order with and without lengths, in both layouts; the other options vary across them
FLAX_CASES = [
    ("tanh", False, False, False, False, True, True),
    ("relu", False, False, True, True, False, True),
    ("linear", False, False, True, False, True, False),
    ("tanh", True, False, True, False, False, True),
    ("relu", True, False, False, True, True, False),
    ("linear", True, True, True, True, True, True),
    ("tanh", True, True, False, False, False, True),
    ("relu", True, True, True, False, True, True),
]


def scopes(fn, *args) -> set[str]:
    """The jrnn named scopes (``jrnn.forward``, ``jrnn.bptt``, ...: jrnn._src.scopes) in the
    compiled program of ``fn(*args)``: which of jrnn's loops a computation runs, seen from
    outside, as a profile shows them."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return set(re.findall(r"jrnn\.[a-z]+(?:\.[a-z]+)?", text))
