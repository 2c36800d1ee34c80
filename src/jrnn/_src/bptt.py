"""Hand-written backpropagation through time for the Elman cell ``h_t = act(a_t)``.

Here ``a_t = x_t W_x + h_{t-1} W_h + b``. With ``g_t = dL/dh_t`` the gradient
reaching ``h_t`` from the loss directly and ``dA_t = dL/da_t``, the adjoint
recurrence, run backwards from ``t = T`` with ``dA_{T+1} W_h^T := dL/dh_T`` (the
cotangent of ``h_last``), is::

    dA_t      = (g_t + dA_{t+1} W_h^T) * act'(a_t)       # act'(a_t) from h_t: 1 - h_t**2 for tanh
    dL/dW_x   = sum_t x_t^T dA_t
    dL/dW_h   = sum_t h_{t-1}^T dA_t
    dL/db     = sum_t dA_t
    dL/dx_t   = dA_t W_x^T
    dL/dh_0   = dA_1 W_h^T

(The seed notebook's backward cell gets these wrong: docs/seed.md.) One reverse loop
(a ``lax.fori_loop``, which JAX lowers to ``lax.scan``) carries ``dA_{t+1} W_h^T``
and stores ``dA_t``; the four gradients are then single GEMMs/reductions over all
``T * B`` rows. With ``lengths``, padded steps pass the carried gradient through
unchanged and have ``dA_t = 0``.

:mod:`jrnn._src.rnn` wires this backward into ``jax.custom_vjp`` (:func:`jrnn.rnn`), so
that ``jax.grad`` of any loss built on it runs the hand-written BPTT.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, Unpack

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from jrnn._src import fused
from jrnn._src.compat import dot_general_like, explicit_sharding, reshard_like
from jrnn._src.options import Operands, Options, ScanOptions, prepare, prepare_cotangents
from jrnn._src.scan import index_step, update_step
from jrnn._src.scopes import scoped
from jrnn.params import RNNParams

__all__ = ["adjoint_loop", "backward", "gram", "weight_grads"]


def weight_grads(
    xs_read: jax.Array, h_read: jax.Array, das: jax.Array, params: RNNParams
) -> RNNParams:
    """``dW_x``, ``dW_h``, ``db``, each one contraction over all ``T * B`` rows of ``dA``
    (the sequential BPTT's and the parallel one's): ``xs_read`` and ``h_read`` hold, in the
    slots of ``das``, the input and the state (times the mask) that each ``dA_t``'s step
    read."""
    dw_x = gram(xs_read, das, params.w_x)  # (F, H)
    dw_h = gram(h_read, das, params.w_h)  # (H, H)
    db = reshard_like(jnp.sum(das, axis=(0, 1)), params.b)  # (H,)
    return RNNParams(dw_x, dw_h, db)


def gram(a: jax.Array, b: jax.Array, like: Any) -> jax.Array:
    """``a2^T @ b2`` over all rows (``T * B`` or ``B``) of two same-layout arrays, as one 2-D
    GEMM: the gradient of ``like``, and typed as it (its sharding on an Explicit mesh).

    Contracting the flattened rows of row-major arrays lets XLA call a transposed-lhs GEMM
    with no copy of either operand (a 3-D ``einsum`` over ``(t, b)`` copies one or both).
    """
    if explicit_sharding(a) is not None:  # a sharded batch: no reshape across its shards
        lead = tuple(range(a.ndim - 1))
        return dot_general_like(a, b, ((lead, lead), ((), ())), like)
    rows_a, rows_b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return dot_general_like(rows_a, rows_b, (((0,), (0,)), ((), ())), like)


class _FirstSlot(NamedTuple):
    """Slot ``p`` of each sequence: the step that read ``h0`` stored its ``dA`` there."""

    pick: Callable[[jax.Array], jax.Array]
    """``a`` -> each sequence's `(B, ...)` row of slot ``p``."""
    add: Callable[[jax.Array, jax.Array], jax.Array]
    """``(a, v)`` -> ``a`` with the `(B, ...)` ``v`` added at each sequence's slot ``p``."""


def _first_slot(num_steps: int, axis: int, reverse: bool, lengths: jax.Array | None) -> _FirstSlot:
    """Slot ``p``: ``T - 1`` forward, ``0`` in reverse, ``lengths mod T`` in reverse with
    lengths. A static slice where ``p`` is one step for all (free, and any sharding of the
    batch stays as it is); a gather along time otherwise."""
    if not reverse or lengths is None:
        step = num_steps - 1 if not reverse else 0

        def pick(a: jax.Array) -> jax.Array:
            return lax.index_in_dim(a, step, axis, keepdims=False)

        return _FirstSlot(pick, lambda a, v: update_step(a, pick(a) + v, step, axis))
    first = jnp.clip(lengths, 0, num_steps) % num_steps  # traced lengths may lie outside
    index = first[:, None, None] if axis == 1 else first[None, :, None]
    at_first = jnp.expand_dims(jnp.arange(num_steps), 1 - axis) == index[..., 0]  # (B, T)/(T, B)

    def add(a: jax.Array, v: jax.Array) -> jax.Array:
        return a + jnp.where(at_first[..., None], jnp.expand_dims(v, axis), 0)

    return _FirstSlot(lambda a: jnp.squeeze(jnp.take_along_axis(a, index, axis=axis), axis), add)


@partial(jax.jit, static_argnums=4)
@scoped("jrnn.bptt")
def adjoint_loop(
    ops: Operands,
    hs: jax.Array,
    dhs: jax.Array | None,
    dh_last: jax.Array | None,
    opts: Options,
) -> tuple[RNNParams, jax.Array, jax.Array]:
    """BPTT on validated operands, in their layout (see :func:`jrnn._src.scan.forward_loop`).

    Args:
        ops: as given to ``forward_loop``; the recurrent mask is a constant here (no
            gradient flows to it).
        hs: the outputs of ``forward_loop``, layout of ``xs`` with ``H`` last.
        dhs: cotangent of ``hs`` or ``None`` (zero).
        dh_last: `(B, H)` cotangent of ``h_last`` or ``None`` (zero).
        opts: as given to ``forward_loop``.

    Returns:
        ``(dparams, dxs, dh0)`` with ``dxs`` in the layout of ``xs``.
    """
    params, xs, h0, lengths, recurrent_mask = ops
    reverse, axis = opts.reverse, opts.axis
    w_x = params.w_x
    num_steps = xs.shape[axis]
    carry0 = jnp.zeros_like(h0, hs.dtype) if dh_last is None else dh_last
    if num_steps == 0:
        return jax.tree.map(jnp.zeros_like, params), jnp.zeros_like(xs), carry0
    # Step t read the state of step t - 1 (t + 1 in reverse): dA_t is stored in that state's
    # slot sigma(t) = (t + shift) mod T (see _scan_recurrence), so every weight gradient is one
    # contraction over all T * B rows. The step that read h0 wraps around to slot p: the GEMM
    # pairs it with hs[p], so h0 is swapped in (hs[p] is 0 if padded).
    shift = 1 if reverse else -1
    first = _first_slot(num_steps, axis, reverse, lengths)
    h_read, h0_read = hs, h0 - first.pick(hs)  # what W_h multiplied: the states (times the mask)
    if recurrent_mask is not None:
        h_read = hs * jnp.expand_dims(recurrent_mask, axis)  # (layout of hs)
        h0_read = h0_read * recurrent_mask
    xs_read = jnp.roll(xs, shift, axis)  # x_t in slot sigma(t)
    slopes = None
    if not opts.act.from_output:  # act'(a_t) by JAX, at a_t recomputed in slot sigma(t)
        pre = jnp.einsum(f"{opts.layout},fh->{opts.h_layout}", xs_read, w_x) + params.b
        pre = first.add(pre + h_read @ params.w_h, h0_read @ params.w_h)  # (layout of hs)
        slopes = opts.act.slope(pre)
    if opts.impl == "pallas":
        dh0, das = _kernel_recurrence(ops, hs, dhs, carry0, opts)
    else:
        dh0, das = _scan_recurrence(ops, hs, dhs, carry0, opts, slopes)
    grads = weight_grads(xs_read, h_read, das, params)
    # ... and the step that read h0, in slot p
    grads = grads._replace(w_h=grads.w_h + gram(h0_read, first.pick(das), params.w_h))
    dxs = jnp.roll(jnp.einsum(f"{opts.h_layout},fh->{opts.layout}", das, w_x), -shift, axis)
    return grads, dxs, dh0


def _scan_recurrence(
    ops: Operands,
    hs: jax.Array,
    dhs: jax.Array | None,
    carry0: jax.Array,
    opts: Options,
    slopes: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The adjoint recurrence as a reverse ``lax.fori_loop``; returns ``(dh0, das)``.

    ``carry0`` is ``dL/dh_last`` (zeros where the loss does not read it); ``das`` holds
    ``dA_t`` in slot ``sigma(t)`` of a buffer in the layout of ``hs`` (see below).
    ``slopes``: ``act'(a_t)`` in slot ``sigma(t)``, for an activation whose derivative is
    not written from ``h_t`` (a callable of the user's), else ``None``.
    """
    _, xs, _, lengths, recurrent_mask = ops
    reverse, axis, w_h = opts.reverse, opts.axis, ops.params.w_h
    num_steps = xs.shape[axis]
    act_grad = opts.act.grad_from_output
    w_h_t = w_h.T  # (H, H), transposed once outside the loop
    # Step t read the state of step t - 1 (t + 1 in reverse). dA_t is stored in that state's
    # slot, sigma(t) = (t + shift) mod T, so dW_h is one GEMM of hs against the stored dA over
    # all rows, with no shifted copy of either; the step that read h0 wraps around (below).
    shift = 1 if reverse else -1

    # Adjoint recurrence: dA_t = (dL/dh_t + dA_{t+1} W_h^T) * act'(a_t).
    def step(i, carry):
        c, das = carry  # (B, H), layout of hs
        t = i if reverse else num_steps - 1 - i
        slot = (t + shift) % num_steps  # sigma(t)
        g = c if dhs is None else c + index_step(dhs, t, axis)  # (B, H)
        if lengths is not None:
            valid = (t < lengths)[:, None]  # (B, 1)
            g = jnp.where(valid, g, 0)
        if slopes is not None:
            da = g * index_step(slopes, slot, axis)  # (B, H)
        else:
            da = g if act_grad is None else g * act_grad(index_step(hs, t, axis))  # (B, H)
        new_c = da @ w_h_t  # (B, H)
        if recurrent_mask is not None:
            new_c = new_c * recurrent_mask  # the step read h_{t-1} * m
        if lengths is not None:
            new_c = new_c + jnp.where(valid, 0, c)  # padded steps pass the gradient through
        return new_c, update_step(das, da, slot, axis)

    return lax.fori_loop(0, num_steps, step, (carry0, jnp.zeros_like(hs)), unroll=opts.unroll)


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def _kernel_recurrence(
    ops: Operands, hs: jax.Array, dhs: jax.Array | None, carry0: jax.Array, opts: Options
) -> tuple[jax.Array, jax.Array]:
    """:func:`_scan_recurrence` by the adjoint kernel (:func:`jrnn._src.fused.adjoint`)."""
    return fused.adjoint(ops, hs, dhs, carry0, opts)


@_kernel_recurrence.defjvp
def _kernel_recurrence_jvp(opts: Options, primals: tuple, tangents: tuple):
    # as scan's forward kernel: values from the kernel, derivatives from the reference loop
    _, tangent_out = jax.jvp(partial(_scan_recurrence, opts=opts), primals, tangents)
    ops, hs, dhs, carry0 = primals
    return fused.adjoint(ops, hs, dhs, carry0, opts), tangent_out


def backward(
    params: RNNParams,
    xs: Float[ArrayLike, "*lead features"],
    h0: Float[ArrayLike, "*batch hidden"] | None,
    hs: Float[ArrayLike, "*lead hidden"],
    dhs: Float[ArrayLike, "*lead hidden"] | None,
    dh_last: Float[ArrayLike, "*batch hidden"] | None,
    **options: Unpack[ScanOptions],
) -> tuple[RNNParams, Float[Array, "*lead features"], Float[Array, "*batch hidden"]]:
    """The hand-written BPTT: gradients of a loss given its cotangents on ``forward``'s outputs.

    Shapes in the annotations as :func:`jrnn.forward`'s (``*lead``: `(B, T)`, `(T, B)` or
    `(T,)`; ``*batch``: `(B,)` or `()`).

    Args:
        params: as given to :func:`jrnn.forward` (``h0=None`` means zeros).
        xs: as given to :func:`jrnn.forward` (``h0=None`` means zeros).
        h0: as given to :func:`jrnn.forward` (``h0=None`` means zeros).
        hs: the ``hs`` that ``forward`` returned for these arguments, same layout.
        dhs: ``dL/dhs``, shaped as ``hs``, or ``None`` when the loss does not read ``hs``.
        dh_last: ``dL/dh_last``, shaped as ``h_last``, or ``None`` when the loss does not
            read it.
        **options: the keyword options given to ``forward`` (see :func:`jrnn.forward`).

    Returns:
        ``(dparams, dxs, dh0)``: an ``RNNParams`` of gradients, ``dL/dxs`` shaped as ``xs``
        and ``dL/dh0`` shaped as ``h_last`` (also when ``h0`` is ``None``).

    Raises:
        TypeError, ValueError: as :func:`jrnn.forward`, and for ``hs``/``dhs``/``dh_last``
            whose shapes do not match.
    """
    p = prepare(params, xs, h0, options, caller="backward")
    hs, dhs, dh_last = prepare_cotangents(p, hs, dhs, dh_last)
    dparams, dxs, dh0 = adjoint_loop(p.ops, hs, dhs, dh_last, p.opts)
    return dparams, p.to_caller(dxs), p.state_to_caller(dh0)
