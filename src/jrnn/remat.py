"""Rematerialised BPTT for long sequences: keep one state per segment, recompute the rest.

``jrnn.rnn(..., remat=k)`` cuts the sequence into segments of ``k`` steps. The
forward pass keeps only the state entering each segment (``ceil(T / k)``
states); the backward pass walks the segments in reverse, re-runs each
segment's forward from its stored state and runs the hand-written BPTT
(:func:`jrnn.bptt.bptt`) on it, carrying ``dL/dh`` across segment boundaries and
summing the weight gradients. The results equal the plain BPTT's (up to the
order of floating-point sums).

Memory: the backward pass then holds ``ceil(T / k) + O(k)`` states instead of
``T`` (``k ~ sqrt(T)`` minimises the sum), at the cost of one more forward pass.
The saving is real when the loss does not read every output (many-to-one
models): a loss on all of ``hs`` holds its own ``(T, B, H)`` cotangent anyway.
When ``T`` is not a multiple of ``k``, the time axis is padded to one and the
padded steps are masked out as with ``lengths``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jrnn.activations import Activation
from jrnn.bptt import bptt, primal_values
from jrnn.forward import scan_forward
from jrnn.params import RNNParams

__all__ = ["remat_rnn"]


def _segment(a: jax.Array, s: jax.Array, k: int, axis: int) -> jax.Array:
    return lax.dynamic_slice_in_dim(a, s * k, k, axis)


def _segment_lengths(lengths: jax.Array | None, s: jax.Array, k: int) -> jax.Array | None:
    return None if lengths is None else jnp.clip(lengths - s * k, 0, k)


def _stack_to_sequence(stacked: jax.Array, axis: int) -> jax.Array:
    """`(n, B, k, ...)`/`(n, k, B, ...)` segments back to one `(B, n*k, ...)`/`(n*k, B, ...)`."""
    if axis == 0:
        return stacked.reshape(-1, *stacked.shape[2:])
    n, b, k = stacked.shape[:3]
    return jnp.swapaxes(stacked, 0, 1).reshape(b, n * k, *stacked.shape[3:])


def _segments_forward(params, xs, h0, lengths, mask, act, reverse, unroll, x_layout, k):
    """Runs the segments in order; returns (hs, h_last, states entering each segment)."""
    axis = x_layout.index("t")
    n = xs.shape[axis] // k

    def seg(h, s):
        xs_s = _segment(xs, s, k, axis)
        hs_s, h_out = scan_forward(
            params, xs_s, h, _segment_lengths(lengths, s, k), act, reverse, unroll, x_layout, mask
        )
        return h_out, (hs_s, h)

    h_last, (hs, entering) = lax.scan(seg, h0, jnp.arange(n), reverse=reverse)
    return _stack_to_sequence(hs, axis), h_last, entering


@partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9))
def _remat_core(params, xs, h0, lengths, mask, act, reverse, unroll, x_layout, k):
    hs, h_last, _ = _segments_forward(
        params, xs, h0, lengths, mask, act, reverse, unroll, x_layout, k
    )
    return hs, h_last


def _remat_fwd(params, xs, h0, lengths, mask, act, reverse, unroll, x_layout, k):
    params, xs, h0, lengths, mask = primal_values((params, xs, h0, lengths, mask))
    hs, h_last, entering = _segments_forward(
        params, xs, h0, lengths, mask, act, reverse, unroll, x_layout, k
    )
    return (hs, h_last), (params, xs, lengths, mask, entering)


def _remat_bwd(act, reverse, unroll, x_layout, k, residuals, cotangents):
    params, xs, lengths, mask, entering = residuals
    dhs, dh_last = cotangents
    axis = x_layout.index("t")
    n = xs.shape[axis] // k
    batch, hidden = entering.shape[1:]
    if isinstance(dhs, SymbolicZero):
        dhs = None
    if isinstance(dh_last, SymbolicZero):
        dh_last = jnp.zeros((batch, hidden), entering.dtype)

    def seg(carry, inp):
        dh_out, acc = carry
        s, h_in = inp
        xs_s = _segment(xs, s, k, axis)
        len_s = _segment_lengths(lengths, s, k)
        hs_s, _ = scan_forward(params, xs_s, h_in, len_s, act, reverse, unroll, x_layout, mask)
        dhs_s = None if dhs is None else _segment(dhs, s, k, axis)
        dp, dxs_s, dh_in = bptt(
            params, xs_s, h_in, len_s, hs_s, dhs_s, dh_out, act, reverse, unroll, x_layout, mask
        )
        return (dh_in, jax.tree.map(jnp.add, acc, dp)), dxs_s

    zeros = RNNParams(*(jnp.zeros_like(p) for p in params))
    (dh0, dparams), dxs = lax.scan(
        seg, (dh_last, zeros), (jnp.arange(n), entering), reverse=not reverse
    )
    return dparams, _stack_to_sequence(dxs, axis), dh0, None, None


_remat_core.defvjp(_remat_fwd, _remat_bwd, symbolic_zeros=True)


def remat_rnn(
    params: RNNParams,
    xs: jax.Array,
    h0: jax.Array,
    lengths: jax.Array | None,
    act: Activation,
    reverse: bool,
    unroll: int | bool,
    x_layout: str,
    k: int,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``rnn``'s core with segment-wise rematerialisation, on validated arguments.

    Args:
        params, xs, h0, lengths, act, reverse, unroll, x_layout: as ``scan_forward``.
        k: segment length, a positive int.
        mask: the recurrent mask, as ``scan_forward``'s ``recurrent_mask``.

    Returns:
        ``(hs, h_last)`` as ``scan_forward``.
    """
    axis = x_layout.index("t")
    num_steps, batch = xs.shape[axis], h0.shape[0]
    k = max(1, min(k, num_steps)) if num_steps else 1
    pad = -num_steps % k
    if num_steps == 0:
        return scan_forward(params, xs, h0, lengths, act, reverse, unroll, x_layout, mask)
    if pad:
        # padded steps are masked out like those past a sequence's length
        if lengths is None:
            lengths = jnp.full((batch,), num_steps, jnp.int32)
        lengths = jnp.minimum(lengths, num_steps)
        widths = [(0, 0)] * xs.ndim
        widths[axis] = (0, pad)
        xs = jnp.pad(xs, widths)
    hs, h_last = _remat_core(params, xs, h0, lengths, mask, act, reverse, unroll, x_layout, k)
    if pad:
        hs = lax.slice_in_dim(hs, 0, num_steps, axis=axis)
    return hs, h_last
