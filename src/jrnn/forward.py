"""The forward recurrence ``h_t = act(x_t W_x + h_{t-1} W_h + b)`` as a ``lax.scan``.

``forward`` is plain JAX: ordinary autodiff differentiates it in reverse and in
forward mode. ``jrnn.rnn`` computes the same values but differentiates with the
hand-written BPTT of :mod:`jrnn.bptt`.

Hot path: the input projection ``xs @ W_x + b`` is one GEMM over all ``T * B``
rows before the loop, so the scan body holds only the recurrent matmul
``h_{t-1} @ W_h``, one add and the nonlinearity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jrnn._checks import prepare
from jrnn.activations import Activation
from jrnn.params import RNNParams

__all__ = ["forward", "step_mask"]


def step_mask(lengths: jax.Array, num_steps: int) -> jax.Array:
    """`(T, B, 1)` bool: step ``t`` of sequence ``b`` is valid iff ``t < lengths[b]``."""
    return (jnp.arange(num_steps, dtype=jnp.int32)[:, None] < lengths[None, :])[..., None]


def scan_forward(
    params: RNNParams,
    xs: jax.Array,
    h0: jax.Array,
    lengths: jax.Array | None,
    act: Activation,
    reverse: bool,
    unroll: int | bool,
    x_layout: str,
) -> tuple[jax.Array, jax.Array]:
    """The recurrence on validated arguments, in the internal layout.

    Args:
        params: `w_x (F, H)`, `w_h (H, H)`, `b (H,)`.
        xs: `(B, T, F)` if ``x_layout == "btf"``, `(T, B, F)` if ``"tbf"``.
        h0: `(B, H)`.
        lengths: `(B,)` int32 or ``None``.
        act: the activation.
        reverse: run from the last (valid) step to the first.
        unroll: passed to ``lax.scan``.
        x_layout: ``"btf"`` or ``"tbf"``.

    Returns:
        ``(hs, h_last)``: `(T, B, H)` outputs (zero at padded steps), `(B, H)` final state.
    """
    w_x, w_h, b = params
    xw = jnp.einsum(f"{x_layout},fh->tbh", xs, w_x) + b  # (T, B, H), the hoisted input GEMM
    act_fn = act.fn

    if lengths is None:

        def step(h, xw_t):
            h = act_fn(xw_t + h @ w_h)
            return h, h

        h_last, hs = lax.scan(step, h0, xw, reverse=reverse, unroll=unroll)
        return hs, h_last

    # Padded steps keep the state and emit zeros. Scanning in reverse, the padded tail
    # comes first and leaves h0 untouched, so each sequence starts at its last valid step.
    def masked_step(h, inp):
        xw_t, m_t = inp
        h_new = act_fn(xw_t + h @ w_h)
        return jnp.where(m_t, h_new, h), jnp.where(m_t, h_new, 0)

    mask = step_mask(lengths, xw.shape[0])
    h_last, hs = lax.scan(masked_step, h0, (xw, mask), reverse=reverse, unroll=unroll)
    return hs, h_last


def forward(
    params: RNNParams,
    xs: jax.Array,
    h0: jax.Array | None = None,
    *,
    activation: str = "tanh",
    reverse: bool = False,
    lengths: jax.Array | None = None,
    unroll: int | bool = 1,
    time_major: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Runs the Elman RNN over a sequence with ``lax.scan`` (ordinary autodiff).

    Args:
        params: ``RNNParams(w_x (F, H), w_h (H, H), b (H,))``.
        xs: `(B, T, F)` (`(T, B, F)` if ``time_major``) or unbatched `(T, F)`; a real
            float dtype. Params, ``xs`` and ``h0`` are promoted to a common dtype.
        h0: initial state `(B, H)` (unbatched: `(H,)`); zeros if ``None``.
        activation: ``"tanh"``, ``"relu"`` or ``"linear"``.
        reverse: run from the end; with ``lengths``, each sequence starts at its last
            valid step. ``hs`` is returned in input order either way.
        lengths: `(B,)` integers in ``[0, T]`` (unbatched: a scalar): right-padded
            variable lengths. Padded steps leave the state unchanged and output zeros;
            ``h_last`` is each sequence's last valid state (``h0`` if the length is 0).
            Values are range-checked when concrete; traced values outside ``[0, T]``
            act as if clipped to it.
        unroll: scan unroll factor (an int >= 1 or a bool), as in ``lax.scan``.
        time_major: ``xs`` and ``hs`` are `(T, B, ...)` instead of `(B, T, ...)`.

    Returns:
        ``(hs, h_last)``: ``hs`` `(B, T, H)` (or `(T, B, H)`, or unbatched `(T, H)`) and
        ``h_last`` `(B, H)` (unbatched `(H,)`). With ``T = 0``, ``hs`` is empty and
        ``h_last`` equals ``h0``.

    Raises:
        TypeError: params not an ``RNNParams``; a non-float ``xs``/``h0``/param; integer
            ``lengths`` expected.
        ValueError: a shape that does not match ``params``, ``lengths`` out of range, an
            unknown activation.
    """
    p = prepare(
        params,
        xs,
        h0,
        activation=activation,
        reverse=reverse,
        lengths=lengths,
        unroll=unroll,
        time_major=time_major,
    )
    hs, h_last = scan_forward(
        p.params, p.xs, p.h0, p.lengths, p.act, bool(reverse), unroll, p.x_layout
    )
    return p.hs_to_caller(hs), p.state_to_caller(h_last)
