"""Rematerialised BPTT for long sequences: keep one state per segment, recompute the rest.

``jrnn.rnn(..., remat=k)`` cuts the sequence into segments of ``k`` steps. The
forward pass keeps only the state entering each segment (``ceil(T / k)``
states); the backward pass walks the segments in reverse, re-runs each
segment's forward from its stored state and runs the hand-written BPTT
(``jrnn.bptt._adjoint_loop``) on it, carrying ``dL/dh`` across segment boundaries and
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

from jrnn._checks import Operands, Options
from jrnn.bptt import _adjoint_loop, _primal_values, _zeros_as_none
from jrnn.forward import _forward_loop

__all__: list[str] = []  # used through jrnn.rnn(..., remat=k)


def _segment(a: jax.Array, s: jax.Array, k: int, axis: int) -> jax.Array:
    return lax.dynamic_slice_in_dim(a, s * k, k, axis)


def _segment_ops(ops: Operands, h: jax.Array, s: jax.Array, k: int, axis: int) -> Operands:
    """Segment ``s`` of ``k`` steps, entered with state ``h``."""
    lengths = None if ops.lengths is None else jnp.clip(ops.lengths - s * k, 0, k)
    return ops._replace(xs=_segment(ops.xs, s, k, axis), h0=h, lengths=lengths)


def _stack_to_sequence(stacked: jax.Array, axis: int) -> jax.Array:
    """`(n, B, k, ...)`/`(n, k, B, ...)` segments back to one `(B, n*k, ...)`/`(n*k, B, ...)`."""
    if axis == 0:
        return stacked.reshape(-1, *stacked.shape[2:])
    n, b, k = stacked.shape[:3]
    return jnp.swapaxes(stacked, 0, 1).reshape(b, n * k, *stacked.shape[3:])


@partial(jax.jit, static_argnums=(1, 2))
def _segments_forward(ops: Operands, opts: Options, k: int):
    """Runs the segments in order; returns (hs, h_last, states entering each segment)."""
    axis = opts.axis
    n = ops.xs.shape[axis] // k

    def seg(h, s):
        hs_s, h_out = _forward_loop(_segment_ops(ops, h, s, k, axis), opts)
        return h_out, (hs_s, h)

    h_last, (hs, entering) = lax.scan(seg, ops.h0, jnp.arange(n), reverse=opts.reverse)
    return _stack_to_sequence(hs, axis), h_last, entering


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _remat_core(ops: Operands, opts: Options, k: int):
    hs, h_last, _ = _segments_forward(ops, opts, k)
    return hs, h_last


def _remat_fwd(ops, opts, k):
    ops = _primal_values(ops)
    hs, h_last, entering = _segments_forward(ops, opts, k)
    return (hs, h_last), (ops, entering)


def _remat_bwd(opts, k, residuals, cotangents):
    ops, entering = residuals
    dhs, dh_last = _zeros_as_none(cotangents)
    return (_segments_adjoint(ops, entering, dhs, dh_last, opts, k),)


@partial(jax.jit, static_argnums=(4, 5))
def _segments_adjoint(ops, entering, dhs, dh_last, opts: Options, k: int) -> Operands:
    """The segments' BPTT in reverse (each segment's forward re-run from its entering
    state); ``dhs``/``dh_last``: the cotangents or ``None`` (zero)."""
    axis = opts.axis
    n = ops.xs.shape[axis] // k
    if dh_last is None:
        dh_last = jnp.zeros(entering.shape[1:], entering.dtype)

    def seg(carry, inp):
        dh_out, acc = carry
        s, h_in = inp
        seg_ops = _segment_ops(ops, h_in, s, k, axis)
        hs_s, _ = _forward_loop(seg_ops, opts)
        dhs_s = None if dhs is None else _segment(dhs, s, k, axis)
        dp, dxs_s, dh_in = _adjoint_loop(seg_ops, hs_s, dhs_s, dh_out, opts)
        return (dh_in, jax.tree.map(jnp.add, acc, dp)), dxs_s

    zeros = jax.tree.map(jnp.zeros_like, ops.params)
    (dh0, dparams), dxs = lax.scan(
        seg, (dh_last, zeros), (jnp.arange(n), entering), reverse=not opts.reverse
    )
    # lengths and the mask get no gradient
    return Operands(dparams, _stack_to_sequence(dxs, axis), dh0, None, None)


_remat_core.defvjp(_remat_fwd, _remat_bwd, symbolic_zeros=True)


def _remat_rnn(ops: Operands, opts: Options, k: int) -> tuple[jax.Array, jax.Array]:
    """``rnn``'s core with segment-wise rematerialisation, on validated operands.

    Args:
        ops, opts: as ``jrnn.forward._forward_loop``.
        k: segment length, a positive int.

    Returns:
        ``(hs, h_last)`` as ``_forward_loop``.
    """
    axis = opts.axis
    num_steps, batch = ops.xs.shape[axis], ops.h0.shape[0]
    if num_steps == 0:
        return _forward_loop(ops, opts)
    k = max(1, min(k, num_steps))
    pad = -num_steps % k
    if pad:
        # padded steps are masked out like those past a sequence's length
        lengths = ops.lengths
        if lengths is None:
            lengths = jnp.full((batch,), num_steps, jnp.int32)
        widths = [(0, 0)] * ops.xs.ndim
        widths[axis] = (0, pad)
        ops = ops._replace(xs=jnp.pad(ops.xs, widths), lengths=jnp.minimum(lengths, num_steps))
    hs, h_last = _remat_core(ops, opts, k)
    if pad:
        hs = lax.slice_in_dim(hs, 0, num_steps, axis=axis)
    return hs, h_last
