"""The Triton form of the fused kernels (the recurrences: :mod:`.common`), for GPUs
without ``wgmma`` (Ampere, Ada, Blackwell, ROCm) or by choice (``$JRNN_GPU_KERNELS``).

One program per batch tile of :data:`TILE` rows runs all ``T`` steps: ``W_h`` is loaded
once into registers and the state stays in registers; each step loads ``xw_t`` (or
``h_t``, ``g_t``) and stores ``h_t`` (or ``dA_t``). ``B`` and ``H`` are padded to powers
of two (at least 16, Triton's smallest dot). float32 multiplies as three TF32 products of
split operands (:func:`_matmul`): a float32 dot at full precision takes Triton's FMA
path, whose registers pass ptxas' limit. Two pipeline stages, not Triton's three, so that
bfloat16 ``H = 256`` fits an A100's shared memory. The step loop unrolls only where
``W_h`` takes at most :data:`UNROLL_BYTES` of registers (:func:`kernel_unroll`). What
ptxas reports of every build (registers, spills, shared memory), compile-only:
``benchmarks/RESULTS-gpu-compile.md``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from jrnn._src.compat import struct_like
from jrnn._src.kernels.common import (
    Matmul,
    adjoint_step,
    dot,
    forward_step,
    lengths_or_all,
    padded_inputs,
    present,
    roles,
    round_up,
    split_refs,
    split_tf32,
    unrolled_loop,
)

__all__ = ["TILE", "UNROLL_BYTES", "Tiling", "kernel_unroll", "num_warps", "recurrence", "tiling"]

TILE = 16
"""Batch rows per program."""
UNROLL_BYTES = 32 << 10
"""The largest ``W_h`` in registers (float32: its two TF32 parts) beside which the step
loop unrolls: a larger one leaves no registers for several steps' operands (ptxas spills)
nor shared memory for their pipelined loads (an A100's runs out)."""


def kernel_unroll(unroll: int, hp: int, dtype: Any) -> int:
    """The unroll of the step loop for ``unroll`` asked, on ``hp`` (padded) units of
    ``dtype``: ``unroll`` where ``W_h`` fits :data:`UNROLL_BYTES`, else 1."""
    per_unit = 8 if jnp.dtype(dtype) == jnp.float32 else jnp.dtype(dtype).itemsize
    return unroll if hp * hp * per_unit <= UNROLL_BYTES else 1


class Tiling(NamedTuple):
    """``B`` and ``H`` padded to ``bp`` and ``hp``; tiles of ``bt`` rows."""

    bp: int
    hp: int
    bt: int


def tiling(b: int, h: int) -> Tiling:
    """The tiles of a call on ``B`` rows of ``H`` units."""
    return Tiling(round_up(b, TILE), max(16, 1 << (h - 1).bit_length()), TILE)


def num_warps(hp: int) -> int:
    """The warps of one program on ``hp`` (padded) units."""
    return 4 if hp <= 64 else 8


def _matmul(w: jax.Array) -> Matmul:
    """``a -> a @ w`` on the tensor cores, ``w`` loaded once, before the loop, into
    registers; float32 as three TF32 products of the split operands
    (:func:`.common.split_tf32`)."""
    if w.dtype != jnp.float32:
        return lambda a: dot(a, w)
    w_hi, w_lo = split_tf32(w)
    tf32 = partial(jnp.dot, preferred_element_type=jnp.float32)

    def matmul(a: jax.Array) -> jax.Array:
        a_hi, a_lo = split_tf32(a)
        # the two small products first: they add up before the large one joins
        return (tf32(a_hi, w_lo) + tf32(a_lo, w_hi)) + tf32(a_hi, w_hi)

    return matmul


def _kernel(*refs, kind: str, flags: tuple[bool, ...], act, reverse: bool, unroll: int, t: int):
    """The step kernel of one batch tile: all ``t`` steps of ``kind``'s recurrence."""
    r = split_refs(refs, kind, flags)
    matmul, start = _matmul(r["w"][...]), jnp.int32(0)
    if kind == "forward":
        step = forward_step(r, matmul, start, act.kernel_fn)
        state_in, state_out = r["h0"], r["h_last"]
    else:
        step = adjoint_step(r, matmul, start, act.grad_from_output)
        state_in, state_out = r["dh_last"], r["dh0"]
    h = unrolled_loop(step, state_in[...].astype(jnp.float32), t, unroll, reverse)
    state_out[...] = h.astype(state_out.dtype)


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
    """One ``kind`` recurrence in one Triton kernel over a grid of batch tiles (the whole
    sequence one block); arguments and results as :func:`jrnn._src.kernels.tpu.recurrence`'s
    (``interpret``: ``None`` to compile, ``True`` for Pallas' HLO interpreter)."""
    first = streamed[0]
    assert first is not None, "the first streamed array is always given"
    t, b, h = first.shape
    dtype = first.dtype
    bp, hp, bt = tiling(b, h)
    inputs = [lengths_or_all(lengths, (t, b, h)), *streamed, weight, None, *per_row]
    flags = present(inputs)
    seq_spec = pl.BlockSpec((t, bt, hp), lambda i: (0, i, 0))
    row_spec = pl.BlockSpec((bt, hp), lambda i: (i, 0))
    args, in_specs = padded_inputs(
        inputs,
        roles(streamed, per_row),
        shapes={"l": (bp,), "s": (t, bp, hp), "w": (hp, hp), "r": (bp, hp)},
        specs={
            "l": pl.BlockSpec((bt, 1), lambda i: (i, 0)),
            "s": seq_spec,
            "w": pl.BlockSpec((hp, hp), lambda i: (0, 0)),
            "r": row_spec,
        },
    )
    seq_out, row_out = pl.pallas_call(
        partial(
            _kernel,
            kind=kind,
            flags=flags,
            act=act,
            reverse=reverse,
            t=t,
            unroll=kernel_unroll(unroll, hp, weight.dtype),
        ),
        out_shape=(
            struct_like((t, bp, hp), dtype, first),
            struct_like((bp, hp), jnp.float32, first),
        ),
        grid=(bp // bt,),
        in_specs=in_specs,
        out_specs=(seq_spec, row_spec),
        compiler_params=pltriton.CompilerParams(num_warps=num_warps(hp), num_stages=2),
        interpret=interpret is not None,
        name=f"jrnn_{kind}",
    )(*args)
    return seq_out[:, :b, :h], row_out[:b, :h]
