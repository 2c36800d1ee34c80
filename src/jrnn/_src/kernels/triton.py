"""The Triton form of the fused kernels (the recurrences: :mod:`.common`), for GPUs
without ``wgmma`` (Ampere, Ada, Blackwell, ROCm) or by choice (``$JRNN_GPU_KERNELS``).

One program per batch tile of :data:`TILE` rows runs all ``T`` steps: ``W_h`` is loaded
once into registers and the state stays in registers; each step loads ``xw_t`` (or
``h_t``, ``g_t``) and stores ``h_t`` (or ``dA_t``). ``B`` and ``H`` are padded to powers
of two (at least 16, Triton's smallest dot). float32 multiplies as three TF32 products of
split operands (:func:`_matmul`).

What ptxas (12.9) reports of it, compile-only (``benchmarks/gpu_compile.py``): no spill in
any build on sm_90a or sm_80; float32 ``H = 128`` 179-193 registers a thread (8 warps),
bfloat16 ``H = 256`` 78-110. Before the split, the float32 forward took Triton's FMA path
and spilled about 3 KB a thread in every variant; with three pipeline stages, bfloat16
``H = 256`` asked an A100 for 180 KB of shared memory (it has 163) and did not compile.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from jrnn._src.compat import struct_like
from jrnn._src.kernels.common import (
    ADJOINT_REFS,
    FORWARD_REFS,
    Call,
    Matmul,
    adjoint_step,
    dot,
    forward_step,
    launch_adjoint,
    launch_forward,
    load_mask,
    pad,
    round_up,
    split_refs,
    split_tf32,
    unrolled_loop,
)

__all__ = ["TILE", "Tiling", "adjoint", "forward", "tiling"]

TILE = 16
"""Batch rows per program."""


class Tiling(NamedTuple):
    """``B`` and ``H`` padded to ``bp`` and ``hp``; tiles of ``bt`` rows."""

    bp: int
    hp: int
    bt: int


def tiling(b: int, h: int) -> Tiling:
    """The tiles of a call on ``B`` rows of ``H`` units."""
    return Tiling(round_up(b, TILE), max(16, 1 << (h - 1).bit_length()), TILE)


def _all_steps(step, state_in, state_out, t: int, call: Call) -> None:
    """Runs ``step(j, state)`` over all ``t`` steps in ``call``'s direction, from
    ``state_in``, and stores the final state in ``state_out``."""

    def at(j, h):
        return step(t - 1 - j if call.reverse else j, h)

    h = unrolled_loop(at, state_in[...].astype(jnp.float32), t, call.unroll)
    state_out[...] = h.astype(state_out.dtype)


def _matmul(w: jax.Array) -> Matmul:
    """``a -> a @ w`` on the tensor cores, ``w`` loaded once, before the loop, into
    registers. float32 as three TF32 products of the split operands
    (:func:`.common.split_tf32`): a float32 dot at full precision takes Triton's FMA path,
    whose registers pass ptxas' limit (it spilled ~3 KB a thread at ``H = 128``)."""
    if w.dtype != jnp.float32:
        return lambda a: dot(a, w)
    w_hi, w_lo = split_tf32(w)
    tf32 = partial(jnp.dot, preferred_element_type=jnp.float32)

    def matmul(a: jax.Array) -> jax.Array:
        a_hi, a_lo = split_tf32(a)
        # the two small products first: they add up before the large one joins
        return (tf32(a_hi, w_lo) + tf32(a_lo, w_hi)) + tf32(a_hi, w_hi)

    return matmul


def _forward_kernel(*refs, call: Call, t: int, has_mask: bool) -> None:
    r = split_refs(refs, FORWARD_REFS, {"mask": has_mask})
    matmul, start = _matmul(r["w"][...]), jnp.int32(0)
    step = forward_step(
        r["xw"], r["hs"], matmul, r["lengths"][...], load_mask(r["mask"]), start, call.act.fn
    )
    _all_steps(step, r["h0"], r["h_last"], t, call)


def _adjoint_kernel(*refs, call: Call, t: int, has_mask: bool, has_dhs: bool) -> None:
    r = split_refs(refs, ADJOINT_REFS, {"mask": has_mask, "dhs": has_dhs})
    matmul, start = _matmul(r["w_t"][...]), jnp.int32(0)
    step = adjoint_step(
        r["hs"], r["dhs"], r["das"], matmul, r["lengths"][...], load_mask(r["mask"]), start,
        call.act.grad_from_output,
    )  # fmt: skip
    _all_steps(step, r["dh_last"], r["dh0"], t, call)


def _sequential_call(
    name: str,
    kernel: Callable[..., None],
    call: Call,
    lengths: jax.Array,
    streamed: list[jax.Array],
    weight: jax.Array,
    per_row: list[jax.Array],
    dtype: Any,
) -> tuple[jax.Array, jax.Array]:
    """One ``pallas_call`` of a step kernel over a grid of batch tiles; arguments and
    results as :func:`jrnn._src.kernels.tpu`'s (the whole sequence is one block)."""
    t, b, h = streamed[0].shape
    bp, hp, bt = tiling(b, h)
    streamed = [pad(x, (t, bp, hp)) for x in streamed]
    per_row = [pad(x, (bp, hp)) for x in per_row]
    lengths = pad(lengths, (bp,))[:, None]  # padded rows have length 0
    seq_spec = pl.BlockSpec((t, bt, hp), lambda i: (0, i, 0))
    row_spec = pl.BlockSpec((bt, hp), lambda i: (i, 0))
    seq_out, row_out = pl.pallas_call(
        partial(kernel, call=call, t=t),
        out_shape=(
            struct_like((t, bp, hp), dtype, streamed[0]),
            struct_like((bp, hp), jnp.float32, streamed[0]),
        ),
        grid=(bp // bt,),
        in_specs=[
            pl.BlockSpec((bt, 1), lambda i: (i, 0)),
            *[seq_spec] * len(streamed),
            pl.BlockSpec((hp, hp), lambda i: (0, 0)),
            *[row_spec] * len(per_row),
        ],
        out_specs=(seq_spec, row_spec),
        # two pipeline stages: three (Triton's default) pass an A100's shared memory at
        # bfloat16 H = 256 (180 KB of 163)
        compiler_params=pltriton.CompilerParams(num_warps=4 if hp <= 64 else 8, num_stages=2),
        interpret=call.form.interpret,
        name=f"jrnn_{name}",
    )(lengths, *streamed, pad(weight, (hp, hp)), *per_row)
    return seq_out[:, :b, :h], row_out[:b, :h]


def forward(xw, w_h, h0, lengths, mask, call: Call) -> tuple[jax.Array, jax.Array]:
    """The forward recurrence in one Triton kernel (:func:`.common.launch_forward`)."""
    return launch_forward(_sequential_call, _forward_kernel, xw, w_h, h0, lengths, mask, call)


def adjoint(hs, dhs, dh_last, w_h, lengths, mask, call: Call) -> tuple[jax.Array, jax.Array]:
    """The adjoint recurrence in one Triton kernel (:func:`.common.launch_adjoint`)."""
    return launch_adjoint(
        _sequential_call, _adjoint_kernel, hs, dhs, dh_last, w_h, lengths, mask, call
    )
