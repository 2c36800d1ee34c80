"""The Hopper form of the fused kernels: Pallas **Mosaic GPU**, one warpgroup per 64 rows.

The same two recurrences as the other forms (stated in :mod:`.common`), for the
GPUs that run ``wgmma`` (compute capability 9.0: H100, H200, GH200). One CTA of one
warpgroup (128 threads) runs all ``T`` steps for a tile of 64 batch rows, the ``M`` of a
Hopper ``wgmma``; the grid is the batch tiles. Per step::

    (float32: store the state, split in two, to SMEM; bfloat16 stays in registers)
    wgmma   acc = state @ W          W (W_h, or W_h^T for the adjoint) resident in SMEM
    load    xw_t                     GMEM -> registers while the wgmma runs (the adjoint
                                     loads its h_t, g_t before: its operand needs them)
    h_t     = act(acc + xw_t)        registers (the wgmma accumulator layout), float32
    store   h_t (or dA_t)            registers -> GMEM

What stays on chip, per CTA: ``W`` in SMEM for the whole call (swizzled, loaded once by
TMA), the 64 x H state in registers (float32; bfloat16 is the ``wgmma``'s left operand
from registers, float32 as TF32 must come from SMEM), the lengths of the tile's rows
and, with a mask, the tile's mask in registers. Lowered with Lane semantics (jax 0.11's
default is Warpgroup; only Lane is verified).

Precision. bfloat16 operands go to one bfloat16 ``wgmma`` with float32 accumulation.
float32 operands would be read as TF32 (10 mantissa bits) by the tensor cores, so the
float32 form splits both operands, ``x = x_hi + x_lo`` with ``x_hi`` exact in TF32, and
accumulates ``a_hi W_hi + a_hi W_lo + a_lo W_hi`` in three ``wgmma``: about 2^-21
relative error per product, float32's own order (the scan path's 1e-5 contract).

Registers, per thread of the warpgroup: a `(64, H)` float32 array is ``H / 2`` of them.
The accumulator is live across the ``wgmma`` (and the forward's ``xw_t`` being loaded);
the state too with ``lengths`` (a padded step keeps it), the mask for the whole call. A
thread has 255. An earlier form loaded the next step's operands during the ``wgmma``,
which kept two steps' operands live at once; ptxas (12.9, sm_90a) then spilled in 16 of
the 22 builds of ``benchmarks/gpu_compile.py``, now in 12: the float32 adjoint with
``lengths`` or a mask, float32 with both, and bfloat16 at ``H = 256`` (the table:
``benchmarks/RESULTS-gpu-compile.md``). Those spill to local memory: correct, slower by
an amount no GPU has measured yet.

SMEM (of Hopper's 227 KiB per CTA): bfloat16 ``H <= 256``: ``W`` 128 KiB (``wgmma``'s
``N`` is at most 256); float32 ``H <= 128``: ``W_hi``, ``W_lo`` 128 KiB + the two state
operands 64 KiB.
These are :data:`.common.MAX_HIDDEN`. ``H`` is padded to a multiple of 128 bytes
(the swizzle), ``B`` to a multiple of 64.

Interpret mode (``interpret=`` the Mosaic GPU interpret params; the tests): the same
kernel runs on CPU with three differences its emulator needs: the streamed arrays are
read with a plain load instead of ``plgpu.load(..., layout=WGMMA)``; float32's ``W`` is
given untransposed instead of K-major through ``plgpu.transpose_ref`` (TF32 ``wgmma``
takes no transposed operand; the interpreter takes no transposed ref); and bfloat16's
state operand goes through SMEM (the interpreter's ``wgmma`` reads no registers). Its
``wgmma`` is a float32 matmul, so the TF32 split's accuracy is tested apart, by
emulating TF32.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from jrnn._src.kernels.common import Call, pad, round_up, split_tf32, tf32_hi, unrolled_loop

__all__ = ["ROWS", "adjoint", "forward"]

ROWS = 64
"""Batch rows per CTA: the ``M`` of one Hopper ``wgmma`` (one warpgroup)."""
_SWIZZLE = 128  # bytes: H is padded to whole 128-byte rows, the widest swizzle


@functools.cache
def _load_takes_index() -> bool:
    """plgpu.load's index: required in jax 0.10, optional (and deprecated) from 0.11."""
    idx = inspect.signature(plgpu.load).parameters.get("idx")
    return idx is not None and idx.default is inspect.Parameter.empty


def _swizzled(itemsize: int) -> tuple[Any, ...]:
    return plgpu.TilingTransform((8, _SWIZZLE // itemsize)), plgpu.SwizzleTransform(_SWIZZLE)


class _Kernel:
    """The parts every step kernel shares, bound to one call's static options.

    Args:
        act: the activation (:class:`jrnn.activations.Activation`).
        reverse: walk time from the last step to the first.
        unroll: steps per iteration of the time loop.
        interpret: ``None`` to compile, else the Mosaic GPU interpret params.
        split: float32 operands, split in two for three TF32 ``wgmma``.
    """

    def __init__(self, act: Any, reverse: bool, unroll: int, interpret: Any, split: bool):
        self.act, self.reverse, self.unroll = act, reverse, unroll
        self.interpret, self.split = interpret, split
        # a custom_jvp's primal function (jax.nn.relu): the kernels are never
        # differentiated, and Mosaic GPU's lowering takes no custom_jvp_call
        self.fn = getattr(act.fn, "fun", act.fn)

    @staticmethod
    def rows() -> Any:
        """This CTA's 64 rows."""
        return pl.ds(lax.axis_index("rows") * ROWS, ROWS)

    def load(self, ref: Any, layout: Any = None) -> jax.Array:
        """``ref[...]`` (in GMEM) into registers in the ``wgmma`` accumulator layout (or
        ``layout``), so it meets the accumulator without a relayout."""
        if self.interpret is not None:
            return ref[...]
        index = ((),) if _load_takes_index() else ()
        return plgpu.load(ref, *index, layout=layout or plgpu.Layout.WGMMA, optimized=False)

    def valid_fn(self, len_ref: Any, width: int) -> Callable[[jax.Array], jax.Array] | None:
        """``t -> (64, width)`` bool: step ``t`` is within each row's length (the
        lengths held in registers, two a thread); ``None`` without lengths."""
        if len_ref is None:
            return None
        lengths = self.load(len_ref.at[self.rows()], plgpu.Layout.WGMMA.reduce(1))
        return lambda t: t < lax.broadcast_in_dim(lengths, (ROWS, width), (0,))

    def matmul(self, w_smem: list[Any], a_smem: list[Any]) -> Callable[..., Any]:
        """``(a, during) -> (a @ W, during())``: gives ``a`` `(64, H)` float32 to the
        ``wgmma`` (float32: split and stored to SMEM; bfloat16: from registers, compiled,
        or SMEM, interpreted), issues it, runs ``during()`` (the loads that overlap it) and
        waits for the product; float32 accumulation."""
        if self.interpret is not None:  # W given untransposed (see the module docstring)
            ws = list(w_smem)
        else:
            ws = [plgpu.transpose_ref(w, (1, 0)) if self.split else w for w in w_smem]
        # the two small products first: they accumulate before the large one joins
        pairs = [(0, 1), (1, 0), (0, 0)] if self.split else [(0, 0)]

        def run(a: jax.Array, during: Callable[[], Any]) -> tuple[jax.Array, Any]:
            operands: list[Any] = list(a_smem)
            if self.split:
                hi = tf32_hi(a)
                a_smem[0][...] = hi
                a_smem[1][...] = a - hi
            elif a_smem:  # interpreted: its wgmma reads operands from SMEM only
                a_smem[0][...] = a.astype(a_smem[0].dtype)
            else:  # bfloat16 from registers: no store, no fence, no barrier
                operands = [a.astype(w_smem[0].dtype)]
            if a_smem:
                plgpu.commit_smem()  # the stores are visible to the tensor cores

            def scoped(acc_ref):
                for i, j in pairs:
                    plgpu.wgmma(acc_ref, operands[i], ws[j])
                loaded = during()
                return plgpu.wgmma_accumulator_load(acc_ref), loaded

            return pl.run_scoped(scoped, plgpu.ACC((ROWS, a.shape[1]), jnp.float32))

        return run

    def time_loop(self, step: Callable[..., Any], state: jax.Array, streams: list[Any], n: int):
        """Runs ``step(t, state, load) -> state`` over ``t`` in this call's direction and
        returns the final state; ``load()`` reads the ``streams``' rows at step ``t`` (in
        their dtype), for the step to call where it needs them: the forward while its
        ``wgmma`` runs, the adjoint before it (its operand is made of them)."""
        rows = self.rows()

        def at(j, state):
            t = n - 1 - j if self.reverse else j
            return step(t, state, lambda: tuple(self.load(ref.at[t, rows]) for ref in streams))

        return unrolled_loop(at, state, n, self.unroll)


def _prologue(k: _Kernel, w_refs, scratch, len_ref, mask_ref, width: int):
    """Loads the weights into SMEM (TMA, every copy in flight at once) and the tile's
    lengths and mask into registers; returns ``(valid_at, mask, matmul)``."""
    nw = len(w_refs)
    w_smem, a_smem, barriers = scratch[:nw], scratch[nw:-1], scratch[-1]
    for i, (src, dst) in enumerate(zip(w_refs, w_smem, strict=True)):
        plgpu.copy_gmem_to_smem(src, dst, barriers.at[i])
    for i in range(nw):
        plgpu.barrier_wait(barriers.at[i])
    mask = None if mask_ref is None else k.load(mask_ref.at[k.rows()]).astype(jnp.float32)
    return k.valid_fn(len_ref, width), mask, k.matmul(w_smem, a_smem)


def _forward_kernel(*refs, k: _Kernel, has_lengths: bool, has_mask: bool, nw: int) -> None:
    len_ref, *rest = refs if has_lengths else [None, *refs]
    xw_ref, *rest = rest
    w_refs, (h0_ref, *rest) = rest[:nw], rest[nw:]
    mask_ref, *rest = rest if has_mask else [None, *rest]
    hs_ref, h_last_ref, *scratch = rest
    num_steps, _, width = hs_ref.shape
    rows = k.rows()
    valid_at, mask, matmul = _prologue(k, w_refs, scratch, len_ref, mask_ref, width)

    def step(t, h, load):
        # this step's xw is loaded while its wgmma runs (no earlier: a prefetched next
        # step's operand would be live across the wgmma too, and pass the registers)
        product, (xw,) = matmul(h if mask is None else h * mask, load)
        h_new = k.fn(product + xw.astype(jnp.float32))
        if valid_at is None:  # every step valid: the old state is not kept
            hs_ref[t, rows] = h_new.astype(hs_ref.dtype)
            return h_new
        valid = valid_at(t)
        hs_ref[t, rows] = jnp.where(valid, h_new, 0).astype(hs_ref.dtype)
        return jnp.where(valid, h_new, h)

    h0 = k.load(h0_ref.at[rows]).astype(jnp.float32)
    h_last_ref[rows] = k.time_loop(step, h0, [xw_ref], num_steps)


def _adjoint_kernel(
    *refs, k: _Kernel, has_lengths: bool, has_mask: bool, has_dhs: bool, nw: int
) -> None:
    len_ref, *rest = refs if has_lengths else [None, *refs]
    hs_ref, *rest = rest
    dhs_ref, *rest = rest if has_dhs else [None, *rest]
    w_refs, (dh_last_ref, *rest) = rest[:nw], rest[nw:]
    mask_ref, *rest = rest if has_mask else [None, *rest]
    das_ref, dh0_ref, *scratch = rest
    num_steps, _, width = das_ref.shape
    rows = k.rows()
    valid_at, mask, matmul = _prologue(k, w_refs, scratch, len_ref, mask_ref, width)
    act_grad = k.act.grad_from_output
    streams = ([] if act_grad is None else [hs_ref]) + ([] if dhs_ref is None else [dhs_ref])

    # dA_t = (g_t + c_t) * act'(h_t); c_{t-1} = (dA_t W_h^T) * m; padded steps pass c on
    def step(t, c, load):
        now = list(load())  # before the wgmma: its operand is made of them
        h = None if act_grad is None else now.pop(0).astype(jnp.float32)
        g = c if dhs_ref is None else c + now.pop(0).astype(jnp.float32)
        valid = None if valid_at is None else valid_at(t)
        da = g if valid is None else jnp.where(valid, g, 0)
        if h is not None:
            da = da * act_grad(h)
        das_ref[t, rows] = da.astype(das_ref.dtype)
        c_new, _ = matmul(da, lambda: None)
        if mask is not None:
            c_new = c_new * mask
        return c_new if valid is None else jnp.where(valid, c_new, c)

    dh_last = k.load(dh_last_ref.at[rows]).astype(jnp.float32)
    dh0_ref[rows] = k.time_loop(step, dh_last, streams, num_steps)


def _sequential_call(
    name: str,
    kernel: Callable[..., None],
    call: Call,
    lengths: jax.Array | None,
    streamed: list[jax.Array],
    weight: jax.Array,
    per_row: list[jax.Array],
) -> tuple[jax.Array, jax.Array]:
    """One Mosaic GPU kernel over a grid of 64-row tiles; arguments as
    :func:`jrnn._src.kernels.tpu`'s ``_sequential_call`` takes them (``weight`` is the ``B`` of
    ``state @ B``). The `(T, B, H)` output has ``streamed[0]``'s dtype."""
    t, b, h = streamed[0].shape
    dtype = jnp.dtype(streamed[0].dtype)
    if t == 0:  # nothing to run: no steps, the state passes through
        return jnp.zeros((0, b, h), dtype), per_row[0].astype(jnp.float32)
    split = dtype == jnp.float32
    hp = round_up(h, _SWIZZLE // dtype.itemsize)
    bp = round_up(b, ROWS)
    streamed = [pad(x, (t, bp, hp)) for x in streamed]
    per_row = [pad(x, (bp, hp)) for x in per_row]
    # padded rows have length 0; without lengths they run on zeros (act(0) = 0)
    given = [] if lengths is None else [pad(lengths.astype(jnp.int32), (bp,))]
    weight = pad(weight.astype(dtype), (hp, hp))
    interpret = None if call.form.interpret is False else call.form.interpret
    if split:
        w_parts = list(split_tf32(weight))
        if interpret is None:  # K-major: TF32 wgmma reads B transposed (see the docstring)
            w_parts = [w.T for w in w_parts]
    else:
        w_parts = [weight]
    k = _Kernel(call.act, call.reverse, call.unroll, interpret, split)
    operand = plgpu.SMEM((ROWS, hp), dtype, transforms=_swizzled(dtype.itemsize))
    seq_out, row_out = plgpu.kernel(
        partial(kernel, k=k, has_lengths=lengths is not None, nw=len(w_parts)),
        out_type=(
            jax.ShapeDtypeStruct((t, bp, hp), dtype),
            jax.ShapeDtypeStruct((bp, hp), jnp.float32),
        ),
        scratch_types=[
            *[plgpu.SMEM((hp, hp), dtype, transforms=_swizzled(dtype.itemsize))] * len(w_parts),
            # the wgmma's state operand: float32 split in two; bfloat16 compiled: registers
            *[operand] * (2 if split else 0 if interpret is None else 1),
            plgpu.Barrier(num_barriers=len(w_parts)),
        ],
        grid=(bp // ROWS,),
        grid_names=("rows",),
        # Lane semantics, the form verified here (jax 0.11 defaults to Warpgroup)
        compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Lane),
        interpret=interpret,
        kernel_name=f"jrnn_{name}",
    )(*given, *streamed, *w_parts, *per_row)
    return seq_out[:, :b, :h], row_out[:b, :h]


def forward(
    xw: jax.Array,
    w_h: jax.Array,
    h0: jax.Array,
    lengths: jax.Array | None,
    mask: jax.Array | None,
    call: Call,
) -> tuple[jax.Array, jax.Array]:
    """The forward recurrence on Hopper; contract of :func:`.common.launch_forward`."""
    kernel = partial(_forward_kernel, has_mask=mask is not None)
    per_row = [h0.astype(jnp.float32)] + ([] if mask is None else [mask.astype(jnp.float32)])
    return _sequential_call("forward", kernel, call, lengths, [xw], w_h, per_row)


def adjoint(
    hs: jax.Array,
    dhs: jax.Array | None,
    dh_last: jax.Array,
    w_h: jax.Array,
    lengths: jax.Array | None,
    mask: jax.Array | None,
    call: Call,
) -> tuple[jax.Array, jax.Array]:
    """The adjoint recurrence on Hopper; contract of :func:`.common.launch_adjoint`."""
    kernel = partial(_adjoint_kernel, has_mask=mask is not None, has_dhs=dhs is not None)
    streamed = [hs] if dhs is None else [hs, dhs]
    per_row = [dh_last.astype(jnp.float32)]
    per_row += [] if mask is None else [mask.astype(jnp.float32)]
    back = call._replace(reverse=not call.reverse)
    return _sequential_call("adjoint", kernel, back, lengths, streamed, w_h.T, per_row)
