"""The Hopper form of the fused kernels: Pallas **Mosaic GPU**, warpgroups over 64-row tiles.

The same two recurrences as the other forms (stated in :mod:`.common`), for the
GPUs that run ``wgmma`` (compute capability 9.0: H100, H200, GH200). One CTA runs all
``T`` steps for a tile of 64 batch rows, the ``M`` of a Hopper ``wgmma``; the grid is the
batch tiles. A CTA has one warpgroup (128 threads) per 64 columns of ``H`` in float32, per
128 in bfloat16 (:func:`_groups`: two at the limits): each holds its columns of the state,
the accumulator and the streamed rows, and issues the ``wgmma`` of its columns of the
product. Per step::

    store   the state to SMEM      each warpgroup its columns (float32 split in two); one
                                   warpgroup alone in bfloat16 keeps it in registers
    sync    the warpgroups         every part of the operand is written (a barrier)
    wgmma   acc = state @ W[:, c]  W (W_h, or W_h^T for the adjoint) resident in SMEM
    load    xw_t                   GMEM -> registers while the wgmma runs (the adjoint
                                   loads its h_t, g_t before: its operand needs them)
    sync    the warpgroups         every wgmma has read the operand (a barrier)
    h_t     = act(acc + xw_t)      registers (the wgmma accumulator layout), float32
    store   h_t (or dA_t)          registers -> GMEM

What stays on chip, per CTA: ``W`` in SMEM for the whole call (swizzled, loaded once by
TMA), the state in registers (float32), the lengths of the tile's rows and, with a mask,
the tile's mask in registers (in the operands' dtype). Lowered with Lane semantics, the
ones verified here.

Precision. bfloat16 operands go to one bfloat16 ``wgmma`` with float32 accumulation.
float32 operands would be read as TF32 (10 mantissa bits) by the tensor cores, so the
float32 form splits both operands, ``x = x_hi + x_lo`` with ``x_hi`` exact in TF32, and
accumulates ``a_hi W_hi + a_hi W_lo + a_lo W_hi`` in three ``wgmma``: about 2^-21
relative error per product, float32's own order (the scan path's 1e-5 contract).

Registers. A `(64, n)` float32 array is ``n / 2`` registers a thread: one warpgroup
holding all of ``H = 128`` float32 or ``H = 256`` bfloat16 (the accumulator, the kept
state, the mask and the step's operands) passes a thread's 255, hence the columns split
over warpgroups; and the step loop unrolls only with one warpgroup (two leave no
registers for several steps). The forward loads ``xw_t`` during its own ``wgmma`` (not
the next step's, which would keep two steps' operands live), except bfloat16 with both
lengths and a mask, which loads it after. What ptxas reports of every build,
compile-only: ``benchmarks/RESULTS-gpu-compile.md``.

SMEM (of Hopper's 227 KiB per CTA): bfloat16 ``H <= 256``: ``W`` 128 KiB (``wgmma``'s
``N`` is at most 256) + the shared state operand 32 KiB; float32 ``H <= 128``: ``W_hi``,
``W_lo`` 128 KiB + the two state operands 64 KiB.
These are :data:`.common.MAX_HIDDEN`. ``H`` is padded to a multiple of 128 bytes
(the swizzle), ``B`` to a multiple of 64.

Interpret mode (``interpret=`` the Mosaic GPU interpret params; the tests): the same
kernel runs on CPU with three differences its emulator needs: the streamed arrays are
read with a plain load instead of ``plgpu.load(..., layout=WGMMA)``; float32's ``W`` is
given untransposed instead of K-major through ``plgpu.transpose_ref`` (TF32 ``wgmma``
takes no transposed operand; the interpreter takes no transposed ref); and bfloat16's
state operand goes through SMEM with one warpgroup too (the interpreter's ``wgmma`` reads
no registers; compiled, one warpgroup gives it from registers). Its
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

from jrnn._src.compat import struct_like
from jrnn._src.kernels.common import pad, present, round_up, split_refs, split_tf32, unrolled_loop

__all__ = ["ROWS", "recurrence"]

ROWS = 64
"""Batch rows per CTA: the ``M`` of one Hopper ``wgmma`` (one warpgroup)."""
_SWIZZLE = 128  # bytes: H is padded to whole 128-byte rows, the widest swizzle


@functools.cache
def _load_takes_index() -> bool:
    """Whether this jax's ``plgpu.load`` requires an index (newer ones deprecate it)."""
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
        groups: warpgroups per CTA; each holds ``width`` of the ``H`` columns.
        width: the columns of the state, the accumulator and the streamed rows that one
            warpgroup holds.
    """

    def __init__(
        self,
        act: Any,
        reverse: bool,
        unroll: int,
        interpret: Any,
        split: bool,
        groups: int,
        width: int,
    ):
        self.act, self.reverse, self.unroll = act, reverse, unroll
        self.interpret, self.split = interpret, split
        self.groups, self.width = groups, width
        self.fn = act.kernel_fn

    @staticmethod
    def rows() -> Any:
        """This CTA's 64 rows."""
        return pl.ds(lax.axis_index("rows") * ROWS, ROWS)

    def cols(self) -> Any:
        """This warpgroup's columns."""
        if self.groups == 1:
            return pl.ds(0, self.width)
        return pl.ds(lax.axis_index("wg") * self.width, self.width)

    def tile(self, ref: Any, t: Any = None) -> Any:
        """This warpgroup's part of a `(B, H)` ref (or of step ``t`` of a `(T, B, H)` one)."""
        return (
            ref.at[self.rows(), self.cols()] if t is None else ref.at[t, self.rows(), self.cols()]
        )

    def sync(self, barrier: Any) -> None:
        """Every warpgroup of the CTA waits for the others here (none with one)."""
        if self.groups > 1:
            plgpu.barrier_arrive(barrier)
            plgpu.barrier_wait(barrier)

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

    def matmul(self, w_smem: list[Any], a_smem: list[Any], syncs: Any) -> Callable[..., Any]:
        """``(a, during) -> (a @ W, during())``: gives this warpgroup's columns ``a`` of the
        `(64, H)` float32 state to the ``wgmma`` (float32: split and stored to SMEM;
        bfloat16: SMEM with several warpgroups or interpreted, else from registers), waits
        for every warpgroup's part, issues the ``wgmma`` of its columns of the product,
        runs ``during()`` (the loads that overlap it) and waits for the product; float32
        accumulation. ``syncs``: two barriers of the warpgroups (operand written, read)."""
        cols = self.cols()
        if self.split and self.interpret is None:
            # stored K-major (see the module docstring): this warpgroup's columns are rows
            ws = [plgpu.transpose_ref(w.at[cols, :], (1, 0)) for w in w_smem]
        else:
            ws = [w.at[:, cols] for w in w_smem]
        # the two small products first: they accumulate before the large one joins
        pairs = [(0, 1), (1, 0), (0, 0)] if self.split else [(0, 0)]

        def run(a: jax.Array, during: Callable[[], Any]) -> tuple[jax.Array, Any]:
            operands: list[Any] = list(a_smem)
            if self.split:
                a_smem[0][:, cols], a_smem[1][:, cols] = split_tf32(a)
            elif a_smem:  # several warpgroups, or interpreted (its wgmma reads SMEM only)
                a_smem[0][:, cols] = a.astype(a_smem[0].dtype)
            else:  # bfloat16 from registers: no store, no fence, no barrier
                operands = [a.astype(w_smem[0].dtype)]
            if a_smem:
                plgpu.commit_smem()  # the stores are visible to the tensor cores
                self.sync(syncs.at[0])  # ... and every warpgroup's part is there

            def scoped(acc_ref):
                for i, j in pairs:
                    plgpu.wgmma(acc_ref, operands[i], ws[j])
                loaded = during()
                return plgpu.wgmma_accumulator_load(acc_ref), loaded

            out = pl.run_scoped(scoped, plgpu.ACC((ROWS, self.width), jnp.float32))
            if a_smem:
                self.sync(syncs.at[1])  # every wgmma read the operand: it may be rewritten
            return out

        return run

    def time_loop(self, step: Callable[..., Any], state: jax.Array, streams: list[Any], n: int):
        """Runs ``step(t, state, load) -> state`` over ``t`` in this call's direction and
        returns the final state; ``load()`` reads the ``streams``' rows at step ``t`` (in
        their dtype), for the step to call where it needs them: the forward while its
        ``wgmma`` runs, the adjoint before it (its operand is made of them)."""

        def at(t, state):
            return step(t, state, lambda: tuple(self.load(self.tile(ref, t)) for ref in streams))

        return unrolled_loop(at, state, n, self.unroll, self.reverse)


def _prologue(k: _Kernel, r: dict[str, Any]):
    """Loads the weights into SMEM (TMA, every copy in flight at once, issued by the first
    warpgroup) and this warpgroup's lengths and mask into registers; returns
    ``(valid_at, mask, matmul)``."""
    w_refs = [w for w in (r["w"], r["w_lo"]) if w is not None]
    nw, scratch = len(w_refs), r["scratch"]
    w_smem, a_smem, (barriers, syncs) = scratch[:nw], scratch[nw:-2], scratch[-2:]

    def copy():
        for i, (src, dst) in enumerate(zip(w_refs, w_smem, strict=True)):
            plgpu.copy_gmem_to_smem(src, dst, barriers.at[i])

    if k.groups == 1:
        copy()
    else:
        pl.when(lax.axis_index("wg") == 0)(copy)
    for i in range(nw):
        plgpu.barrier_wait(barriers.at[i])
    # the mask in its own dtype (the operands': bfloat16 holds it in half the registers),
    # made float32 where it multiplies
    mask = None if r["mask"] is None else k.load(k.tile(r["mask"]))
    return k.valid_fn(r["lengths"], k.width), mask, k.matmul(w_smem, a_smem, syncs)


def _forward_kernel(*refs, k: _Kernel, flags: tuple[bool, ...]) -> None:
    r = split_refs(refs, "forward", flags)
    xw_ref, hs_ref = r["xw"], r["hs"]
    valid_at, mask, matmul = _prologue(k, r)

    # this step's xw is loaded while its wgmma runs (no earlier: a prefetched next step's
    # operand would be live across the wgmma too, and pass the registers); bfloat16 with
    # lengths and a mask loads it after (during, its registers spill)
    overlap = not (valid_at is not None and mask is not None and not k.split)

    def step(t, h, load):
        h_in = h if mask is None else h * mask.astype(jnp.float32)
        if overlap:
            product, (xw,) = matmul(h_in, load)
        else:  # the registers hold no xw beside the kept state and the mask
            product, _ = matmul(h_in, lambda: None)
            (xw,) = load()
        h_new = k.fn(product + xw.astype(jnp.float32))
        if valid_at is None:  # every step valid: the old state is not kept
            k.tile(hs_ref, t)[...] = h_new.astype(hs_ref.dtype)
            return h_new
        valid = valid_at(t)
        k.tile(hs_ref, t)[...] = jnp.where(valid, h_new, 0).astype(hs_ref.dtype)
        return jnp.where(valid, h_new, h)

    h0 = k.load(k.tile(r["h0"])).astype(jnp.float32)
    k.tile(r["h_last"])[...] = k.time_loop(step, h0, [xw_ref], hs_ref.shape[0])


def _adjoint_kernel(*refs, k: _Kernel, flags: tuple[bool, ...]) -> None:
    r = split_refs(refs, "adjoint", flags)
    hs_ref, dhs_ref, das_ref = r["hs"], r["dhs"], r["das"]
    valid_at, mask, matmul = _prologue(k, r)
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
        k.tile(das_ref, t)[...] = da.astype(das_ref.dtype)
        c_new, _ = matmul(da, lambda: None)
        if mask is not None:
            c_new = c_new * mask.astype(jnp.float32)
        return c_new if valid is None else jnp.where(valid, c_new, c)

    dh_last = k.load(k.tile(r["dh_last"])).astype(jnp.float32)
    k.tile(r["dh0"])[...] = k.time_loop(step, dh_last, streams, das_ref.shape[0])


def _groups(hp: int, dtype: Any) -> int:
    """Warpgroups per CTA: each holds 64 columns (float32) or 128 (bfloat16) of the
    state, the accumulator and the streamed rows, so that their registers fit a thread's
    255 (one warpgroup holding all of ``H = 128`` float32 or ``H = 256`` bfloat16 spilled)."""
    return max(1, hp // (64 if jnp.dtype(dtype) == jnp.float32 else 128))


def recurrence(
    kind: str,
    lengths: jax.Array | None,
    streamed: list[jax.Array | None],
    weight: jax.Array,
    per_row: list[jax.Array | None],
    *,
    act: Any,
    reverse: bool,
    unroll: int,
    interpret: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """One ``kind`` recurrence in one Mosaic GPU kernel over a grid of 64-row tiles;
    arguments and results as :func:`jrnn._src.kernels.tpu.recurrence`'s (``interpret``:
    ``None`` to compile, else the Mosaic GPU interpret params)."""
    first = streamed[0]
    assert first is not None, "the first streamed array is always given"
    t, b, h = first.shape
    dtype = jnp.dtype(first.dtype)
    split = dtype == jnp.float32
    hp = round_up(h, _SWIZZLE // dtype.itemsize)
    bp = round_up(b, ROWS)
    weight = pad(weight.astype(dtype), (hp, hp))
    w_parts: list[Any] = list(split_tf32(weight)) if split else [weight, None]
    if split and interpret is None:  # K-major: TF32 wgmma reads B transposed (see above)
        w_parts = [w.T for w in w_parts]
    state, mask = per_row
    assert state is not None, "the initial state is always given"
    # padded rows have length 0; without lengths they run on zeros (act(0) = 0)
    inputs = [
        None if lengths is None else pad(lengths.astype(jnp.int32), (bp,)),
        *[None if x is None else pad(x, (t, bp, hp)) for x in streamed],
        *w_parts,
        pad(state.astype(jnp.float32), (bp, hp)),
        None if mask is None else pad(mask.astype(dtype), (bp, hp)),
    ]
    groups = _groups(hp, dtype)
    # unrolled, two warpgroups' step loop passes a thread's registers (ptxas spills)
    k = _Kernel(act, reverse, unroll if groups == 1 else 1, interpret, split, groups, hp // groups)
    nw = 2 if split else 1
    operand = plgpu.SMEM((ROWS, hp), dtype, transforms=_swizzled(dtype.itemsize))
    # the wgmma's state operand: float32 split in two; bfloat16: registers, unless several
    # warpgroups share it (or interpreted)
    operands = 2 if split else 0 if interpret is None and groups == 1 else 1
    kernel = _forward_kernel if kind == "forward" else _adjoint_kernel
    seq_out, row_out = plgpu.kernel(
        partial(kernel, k=k, flags=present(inputs)),
        out_type=(
            struct_like((t, bp, hp), dtype, first),
            struct_like((bp, hp), jnp.float32, first),
        ),
        scratch_types=[
            *[plgpu.SMEM((hp, hp), dtype, transforms=_swizzled(dtype.itemsize))] * nw,
            *[operand] * operands,
            plgpu.Barrier(num_barriers=nw),
            plgpu.Barrier(num_arrivals=groups, num_barriers=2),  # the warpgroups' syncs
        ],
        grid=(bp // ROWS,),
        grid_names=("rows",),
        num_threads=groups,
        thread_name="wg",
        compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Lane),
        interpret=interpret,
        kernel_name=f"jrnn_{kind}",
    )(*[x for x in inputs if x is not None])
    return seq_out[:, :b, :h], row_out[:b, :h]
