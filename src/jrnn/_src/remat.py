"""``jrnn.rnn(..., remat=k)``: keep one state per segment of ``k`` steps, recompute the rest.

The forward pass keeps only the state entering each segment (``ceil(T / k)`` states);
the backward pass walks the segments in reverse, re-runs each segment's forward from its
stored state and runs the adjoint loop (:func:`jrnn._src.bptt.adjoint_loop`) on it,
carrying ``dL/dh`` across segment boundaries and summing the weight gradients. When
``T`` is not a multiple of ``k``, the time axis is padded to one and the padded steps are
masked out as with ``lengths``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jrnn._src.bptt import adjoint_loop
from jrnn._src.custom import operands_vjp
from jrnn._src.options import Operands, Options
from jrnn._src.scan import forward_loop
from jrnn._src.scopes import scoped
from jrnn._src.validate import known

__all__ = ["remat_loop", "remat_rnn"]


def _segment(a: jax.Array, s: jax.Array, k: int, axis: int) -> jax.Array:
    """Steps ``s * k .. s * k + k - 1`` of ``a`` along its time ``axis`` (a multiple of
    ``k`` long): the time axis split in (segments, k), a free reshape, and one segment
    indexed, which also holds where the length is symbolic (``jax.export``)."""
    shape = a.shape
    split = (*shape[:axis], shape[axis] // k, k, *shape[axis + 1 :])
    return lax.dynamic_index_in_dim(a.reshape(split), s, axis, keepdims=False)


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
@scoped("jrnn.remat.forward")
def _segments_forward(ops: Operands, opts: Options, k: int):
    """Runs the segments in order; returns (hs, h_last, states entering each segment)."""
    axis = opts.axis
    n = ops.xs.shape[axis] // k

    def seg(h, s):
        hs_s, h_out = forward_loop(_segment_ops(ops, h, s, k, axis), opts)
        return h_out, (hs_s, h)

    h_last, (hs, entering) = lax.scan(seg, ops.h0, jnp.arange(n), reverse=opts.reverse)
    return _stack_to_sequence(hs, axis), h_last, entering


def _forward(ops: Operands, static: tuple[Options, int]):
    hs, h_last, entering = _segments_forward(ops, *static)
    return (hs, h_last), (ops, entering)


def _adjoint(residuals, dhs, dh_last, static: tuple[Options, int]):
    ops, entering = residuals
    return _segments_adjoint(ops, entering, dhs, dh_last, *static)


@partial(jax.jit, static_argnums=(4, 5))
@scoped("jrnn.remat.bptt")
def _segments_adjoint(ops, entering, dhs, dh_last, opts: Options, k: int):
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
        hs_s, _ = forward_loop(seg_ops, opts)
        dhs_s = None if dhs is None else _segment(dhs, s, k, axis)
        dp, dxs_s, dh_in = adjoint_loop(seg_ops, hs_s, dhs_s, dh_out, opts)
        return (dh_in, jax.tree.map(jnp.add, acc, dp)), dxs_s

    zeros = jax.tree.map(jnp.zeros_like, ops.params)
    (dh0, dparams), dxs = lax.scan(
        seg, (dh_last, zeros), (jnp.arange(n), entering), reverse=not opts.reverse
    )
    return dparams, _stack_to_sequence(dxs, axis), dh0


_remat_core = operands_vjp(_forward, _adjoint)


def remat_rnn(ops: Operands, opts: Options, k: int) -> tuple[jax.Array, jax.Array]:
    """``rnn``'s core with segment-wise rematerialisation, on validated operands.

    Args:
        ops, opts: as :func:`jrnn._src.scan.forward_loop`.
        k: segment length, a positive int.

    Returns:
        ``(hs, h_last)`` as ``forward_loop``.
    """
    return _segmented(ops, opts, k, lambda ops, k: _remat_core(ops, (opts, k)))


def remat_loop(ops: Operands, opts: Options, k: int) -> tuple[jax.Array, jax.Array]:
    """:func:`remat_rnn` for ``grad="autodiff"``: the segments as ``jax.checkpoint``-ed runs
    of the plain loop, which JAX differentiates in either mode (reverse mode keeps the state
    entering each segment and recomputes the rest)."""
    return _segmented(ops, opts, k, lambda ops, k: _checkpointed_segments(ops, opts, k))


def _checkpointed_segments(ops: Operands, opts: Options, k: int) -> tuple[jax.Array, jax.Array]:
    axis = opts.axis
    n = ops.xs.shape[axis] // k

    @jax.checkpoint
    def seg(h, s):
        hs_s, h_out = forward_loop(_segment_ops(ops, h, s, k, axis), opts)
        return h_out, hs_s

    h_last, hs = lax.scan(seg, ops.h0, jnp.arange(n), reverse=opts.reverse)
    return _stack_to_sequence(hs, axis), h_last


def _segmented(ops: Operands, opts: Options, k: int, run) -> tuple[jax.Array, jax.Array]:
    """``run(ops, k)`` on a time axis padded to a multiple of ``k`` (``k`` at most ``T``;
    padded steps masked out)."""
    axis = opts.axis
    num_steps = ops.xs.shape[axis]
    if num_steps == 0:
        return forward_loop(ops, opts)
    if known(num_steps):  # (a symbolic T, under jax.export, keeps k as given)
        k = max(1, min(k, num_steps))
    # (not -T % k: with a symbolic T, jax.export can then prove the segment count >= 1)
    pad = (num_steps + k - 1) // k * k - num_steps
    if pad:
        # padded steps are masked out like those past a sequence's length
        lengths = ops.lengths
        if lengths is None:
            lengths = jnp.full_like(ops.h0[:, 0], num_steps, jnp.int32)  # h0's type
        widths = [(0, 0)] * ops.xs.ndim
        widths[axis] = (0, pad)
        ops = ops._replace(xs=jnp.pad(ops.xs, widths), lengths=jnp.minimum(lengths, num_steps))
    hs, h_last = run(ops, k)
    if pad:
        hs = lax.slice_in_dim(hs, 0, num_steps, axis=axis)
    return hs, h_last
