"""The forward recurrence ``h_t = act(x_t W_x + h_{t-1} W_h + b)`` as a scan loop.

``forward`` is plain JAX: ordinary autodiff differentiates it in reverse and in
forward mode. ``jrnn.rnn`` computes the same values but differentiates with the
hand-written BPTT of :mod:`jrnn._src.bptt`.

Hot path: the input projection ``xs @ W_x`` is one GEMM over all ``T * B`` rows
before the loop, so the loop body holds only the recurrent matmul
``h_{t-1} @ W_h``, the bias add and the nonlinearity. The loop writes each state
into the GEMM's own buffer, in the caller's layout: one `(T, B, H)` buffer and no
transposes.
"""

from __future__ import annotations

from functools import partial
from typing import Unpack

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from jrnn._src import fused
from jrnn._src.options import Operands, Options, ScanOptions, prepare
from jrnn._src.scopes import scoped
from jrnn._src.validate import known
from jrnn.params import RNNParams

__all__ = ["forward", "forward_loop", "index_step", "update_step"]


def index_step(buf: jax.Array, t: jax.Array | int, axis: int) -> jax.Array:
    """Step ``t`` of a `(B, T, ...)`/`(T, B, ...)` buffer along its time ``axis``."""
    # t is always in range: skipping negative-index wrapping saves a select per step
    return lax.dynamic_index_in_dim(buf, t, axis, keepdims=False, allow_negative_indices=False)


def update_step(buf: jax.Array, value: jax.Array, t: jax.Array | int, axis: int) -> jax.Array:
    """``buf`` with step ``t`` along ``axis`` set to ``value`` (in place inside a loop)."""
    return lax.dynamic_update_index_in_dim(buf, value, t, axis, allow_negative_indices=False)


# Jitted, the options static: called eagerly (outside any jit) the loop compiles once per
# shapes and options, not at every call (its body is a new closure each time, so XLA would
# see a new program). Inside a caller's jit it is inlined. The other loops (bptt, remat,
# jrnn.parallel) are jitted so for the same reason.
@partial(jax.jit, static_argnums=1)
@scoped("jrnn.forward")
def forward_loop(ops: Operands, opts: Options) -> tuple[jax.Array, jax.Array]:
    """The recurrence on validated operands, in their layout, by ``opts.impl``.

    ``"scan"``: a ``lax.fori_loop`` (:func:`_scan_loop`); ``"pallas"``: the forward
    kernel (:func:`jrnn._src.fused.forward`), whose derivatives are the scan loop's.
    """
    if ops.xs.shape[opts.axis] == 0:  # no steps: no loop, no kernel; hs is empty
        return jnp.einsum(f"{opts.layout},fh->{opts.h_layout}", ops.xs, ops.params.w_x), ops.h0
    if opts.impl == "pallas":
        return _kernel_forward(ops, opts)
    return _scan_loop(ops, opts)


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _kernel_forward(ops: Operands, opts: Options) -> tuple[jax.Array, jax.Array]:
    return fused.forward(ops, opts)


@_kernel_forward.defjvp
def _kernel_forward_jvp(opts: Options, primals: tuple, tangents: tuple):
    # Values from the kernel, tangents from the reference loop: autodiff of forward(),
    # grad-of-grad and forward-over-reverse through rnn() all differentiate the loop that
    # the kernel equals (a Pallas kernel has no derivative rule of its own).
    (ops,), (dops,) = primals, tangents
    _, tangent_out = jax.jvp(partial(_scan_loop, opts=opts), (ops,), (dops,))
    return fused.forward(ops, opts), tangent_out


def _scan_loop(ops: Operands, opts: Options) -> tuple[jax.Array, jax.Array]:
    """The recurrence on validated operands, in their layout: a ``lax.fori_loop``.

    Args:
        ops: params, ``xs`` (layout ``opts.layout``), ``h0`` `(B, H)`, ``lengths`` `(B,)`
            or ``None`` and the recurrent ``mask`` `(B, H)` or ``None``.
        opts: the activation, direction, unroll and layout.

    Returns:
        ``(hs, h_last)``: outputs in the layout of ``xs`` with ``H`` last (zero at padded
        steps), and the `(B, H)` final state.
    """
    (w_x, w_h, b), xs, h0, lengths, mask = ops
    axis, reverse = opts.axis, opts.reverse
    num_steps = xs.shape[axis]
    act_fn = opts.act.fn
    # The hoisted input GEMM over all T * B rows. The loop then overwrites its buffer in place,
    # step by step, with the hidden states: the forward pass allocates one (T, B, H) buffer in
    # all, in the caller's layout, so nothing is transposed. The bias is added per step for the
    # same reason (a separate `+ b` pass over the GEMM output would need a second buffer).
    buf = jnp.einsum(f"{opts.layout},fh->{opts.h_layout}", xs, w_x)

    # the carry read back from `buf` for a cheap activation (Activation.read_back: XLA
    # would otherwise copy the whole buffer twice per step)
    read_back = opts.act.read_back
    # Batch 1 runs the loop on vectors: carry (H,), buffer (T, H), both free reshapes. A
    # (1, H) carry costs XLA:CPU a copy per step to feed the matmul as (H, 1); as a vector it
    # feeds the matvec as it lies.
    batch_one = h0.shape[0] == 1
    out_shape = buf.shape
    if batch_one:
        buf, h0, axis = buf.reshape(num_steps, -1), h0[0], 0
        lengths = None if lengths is None else lengths[0]
        mask = None if mask is None else mask[0]

    def step(i, carry):
        h, buf = carry
        t = num_steps - 1 - i if reverse else i
        h_in = h if mask is None else h * mask  # (B, H), or (H,) at batch 1
        h_new = act_fn(index_step(buf, t, axis) + b + h_in @ w_h)  # (B, H)
        if lengths is None:
            buf = update_step(buf, h_new, t, axis)
            return (index_step(buf, t, axis) if read_back else h_new), buf
        # Padded steps keep the state and emit zeros. Running in reverse, the padded tail
        # comes first and leaves h0 untouched, so each sequence starts at its last valid step.
        valid = (t < lengths)[..., None]  # (B, 1), or (1,) at batch 1
        buf = update_step(buf, jnp.where(valid, h_new, 0), t, axis)
        return jnp.where(valid, index_step(buf, t, axis) if read_back else h_new, h), buf

    h_last, hs = _loop(num_steps, step, (h0, buf), opts.unroll)
    if batch_one:
        return hs.reshape(out_shape), h_last[None]
    return hs, h_last


def _loop(num_steps, step, init, unroll):
    """``lax.fori_loop(0, num_steps, step, init)``; over a symbolic number of steps
    (``jax.export``) a ``lax.scan`` over the step indices, which reverse-mode autodiff
    takes (a ``fori_loop`` with a non-constant bound lowers to a ``while_loop``, which it
    does not)."""
    if known(num_steps):
        return lax.fori_loop(0, num_steps, step, init, unroll=unroll)
    steps = jnp.arange(num_steps, dtype=jnp.int32)
    return lax.scan(lambda c, i: (step(i, c), None), init, steps, unroll=unroll)[0]


def forward(
    params: RNNParams,
    xs: Float[ArrayLike, "*lead features"],
    h0: Float[ArrayLike, "*batch hidden"] | None = None,
    **options: Unpack[ScanOptions],
) -> tuple[Float[Array, "*lead hidden"], Float[Array, "*batch hidden"]]:
    """Runs the Elman RNN over a sequence (a ``lax.fori_loop``, lowered to ``lax.scan``).

    Plain JAX: ordinary autodiff differentiates it in reverse and forward mode.

    Shapes in the annotations: ``*lead`` is `(B, T)`, `(T, B)` with ``time_major``, or
    `(T,)` unbatched; ``*batch`` is `(B,)`, or `()` unbatched.

    Args:
        params: ``RNNParams(w_x (F, H), w_h (H, H), b (H,))``.
        xs: `(B, T, F)` (`(T, B, F)` if ``time_major``) or unbatched `(T, F)`; a real
            float dtype. Params, ``xs`` and ``h0`` are promoted to a common dtype.
        h0: initial state `(B, H)` (unbatched: `(H,)`); zeros if ``None``.
        **options: the keyword options of :class:`jrnn.ScanOptions` (``activation``,
            ``reverse``, ``lengths``, ``unroll``, ``time_major``, ``recurrent_mask``,
            ``impl``), each with its default; :func:`jrnn.rnn` and :func:`jrnn.backward`
            take the same ones.

    Returns:
        ``(hs, h_last)``: ``hs`` `(B, T, H)` (or `(T, B, H)`, or unbatched `(T, H)`) and
        ``h_last`` `(B, H)` (unbatched `(H,)`). With ``T = 0``, ``hs`` is empty and
        ``h_last`` equals ``h0``.

    Raises:
        TypeError: params not an ``RNNParams``; a non-float ``xs``/``h0``/param; integer
            ``lengths`` expected; an unknown keyword option.
        ValueError: a shape that does not match ``params``, ``lengths`` out of range, an
            unknown activation or ``impl``; ``impl="pallas"`` for a dtype or hidden size
            the kernels do not hold.
    """
    p = prepare(params, xs, h0, options, caller="forward")
    hs, h_last = forward_loop(p.ops, p.opts)
    return p.to_caller(hs), p.state_to_caller(h_last)
