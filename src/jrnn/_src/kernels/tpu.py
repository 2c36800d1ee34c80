"""The Mosaic TPU form of the fused kernels (the recurrences: :mod:`.common`).

What each kernel keeps on chip, per batch tile of ``Bt`` rows: ``W_h`` (or ``W_h^T``) in
VMEM for the whole call (its block index never changes, so the pipeline fetches it
once), the `(Bt, H)` float32 state in a VMEM scratch carried along the time axis of a
``(batch tiles, time blocks)`` grid, and blocks of ``Tc`` steps of the streamed
`(T, B, H)` arrays, double-buffered by the Pallas pipeline. ``Bt = B`` up to
``Tuning.tpu_max_tile`` (else that many, ``B`` padded), ``H`` unpadded (a block spans the
whole hidden axis), ``Tc`` sized to keep the streamed blocks under
``Tuning.tpu_stream_bytes`` of VMEM.

On a CPU backend ``impl="pallas"`` runs this form in Pallas' interpret mode; the tests
also run it in the TPU interpret mode, which simulates VMEM, HBM and the DMAs and
detects races.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from jrnn._src.compat import struct_like
from jrnn._src.kernels.common import (
    ADJOINT_REFS,
    FORWARD_REFS,
    Call,
    adjoint_step,
    dot,
    forward_step,
    launch_adjoint,
    launch_forward,
    load_mask,
    pad,
    round_up,
    split_refs,
    unrolled_loop,
)

__all__ = ["Tiling", "adjoint", "forward", "tiling"]


class Tiling(NamedTuple):
    """Padded sizes and blocks: ``(T, B, H)`` padded to ``(tp, bp, h)``, blocks of ``tc``
    steps and ``bt`` rows."""

    tp: int
    bp: int
    tc: int
    bt: int


def tiling(t: int, b: int, h: int, num_streamed: int, call: Call) -> Tiling:
    """The tiles of a call streaming ``num_streamed`` `(T, B, H)` blocks (outputs included)."""
    tuning = call.form.tuning
    bt = min(b, tuning.tpu_max_tile)
    # double-buffered, rows padded to whole (16, 128) tiles (bfloat16 packs 16 rows a tile)
    per_step = 2 * num_streamed * round_up(bt, 16) * round_up(h, 128) * 4
    cap = max(1, tuning.tpu_stream_bytes // per_step)
    tc = -(-t // -(-t // cap))  # balanced blocks: the least time padding under the cap
    return Tiling(round_up(t, tc), round_up(b, bt), tc, bt)


def _time_blocks(step, state_in, state_out, carried, tc: int, call: Call) -> None:
    """Runs ``step(j, state)`` over the ``tc`` steps of this time block in ``call``'s
    direction, from ``state_in`` (the first block) or the ``carried`` VMEM state, and
    stores the final state in ``state_out`` (the last block)."""
    block, num_blocks = pl.program_id(1), pl.num_programs(1)

    @pl.when(block == 0)
    def _():
        carried[...] = state_in[...].astype(jnp.float32)

    def at(j, h):
        return step(tc - 1 - j if call.reverse else j, h)

    h = unrolled_loop(at, carried[...], tc, call.unroll)
    carried[...] = h

    @pl.when(block == num_blocks - 1)
    def _():
        state_out[...] = h.astype(state_out.dtype)


def _block_start(tc: int, call: Call) -> jax.Array:
    """The time index of this block's first step (blocks run in reverse order if reverse)."""
    block, num_blocks = pl.program_id(1), pl.num_programs(1)
    return (num_blocks - 1 - block if call.reverse else block) * tc


# W_h is read from VMEM at each step: a vector load per use is cheap there, and a
# loop-long value of up to 64 vregs would spill.
def _forward_kernel(*refs, call: Call, tc: int, has_mask: bool) -> None:
    r = split_refs(refs, FORWARD_REFS, {"mask": has_mask})
    start, w = _block_start(tc, call), r["w"]
    step = forward_step(
        r["xw"],
        r["hs"],
        lambda a: dot(a, w[...]),
        r["lengths"][...],
        load_mask(r["mask"]),
        start,
        call.act.fn,
    )
    _time_blocks(step, r["h0"], r["h_last"], r["scratch"][0], tc, call)


def _adjoint_kernel(*refs, call: Call, tc: int, has_mask: bool, has_dhs: bool) -> None:
    r = split_refs(refs, ADJOINT_REFS, {"mask": has_mask, "dhs": has_dhs})
    start, w_t = _block_start(tc, call), r["w_t"]
    step = adjoint_step(
        r["hs"], r["dhs"], r["das"], lambda a: dot(a, w_t[...]), r["lengths"][...],
        load_mask(r["mask"]), start, call.act.grad_from_output,
    )  # fmt: skip
    _time_blocks(step, r["dh_last"], r["dh0"], r["scratch"][0], tc, call)


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
    """One ``pallas_call`` of a step kernel over a ``(batch tiles, time blocks)`` grid.

    Args:
        name: the kernel's name (``jrnn_<name>`` in profiles and lowered text).
        kernel: takes ``(lengths, *streamed, weight, *per_row, seq_out, row_out, carried)``
            refs.
        lengths: `(B,)` int32; steps at or past a row's length are padded steps.
        streamed: `(T, B, H)` arrays, read a block of steps at a time.
        weight: `(H, H)`, held on chip for the whole call.
        per_row: `(B, H)` arrays, the first of them the initial state.
        dtype: the dtype of the `(T, B, H)` output (the `(B, H)` one is float32).

    Returns:
        The `(T, B, H)` and `(B, H)` outputs, unpadded.
    """
    t, b, h = streamed[0].shape
    tp, bp, tc, bt = tiling(t, b, h, len(streamed) + 1, call)
    streamed = [pad(x, (tp, bp, h)) for x in streamed]
    per_row = [pad(x, (bp, h)) for x in per_row]
    lengths = pad(lengths, (bp,))[:, None]  # padded rows have length 0
    last = tp // tc - 1
    seq_spec = pl.BlockSpec((tc, bt, h), lambda i, k: (last - k if call.reverse else k, i, 0))
    row_spec = pl.BlockSpec((bt, h), lambda i, k: (i, 0))
    # batch tiles may run on either TensorCore; the TPU interpret mode takes no semantics
    # once vmap adds a grid axis (jax 0.10), and needs none on one core
    semantics: tuple[Literal["parallel", "arbitrary"], ...] | None = (
        None if call.form.interpret else ("parallel", "arbitrary")
    )
    seq_out, row_out = pl.pallas_call(
        partial(kernel, call=call, tc=tc),
        out_shape=(
            struct_like((tp, bp, h), dtype, streamed[0]),
            struct_like((bp, h), jnp.float32, streamed[0]),
        ),
        grid=(bp // bt, last + 1),
        in_specs=[
            pl.BlockSpec((bt, 1), lambda i, k: (i, 0)),
            *[seq_spec] * len(streamed),
            pl.BlockSpec((h, h), lambda i, k: (0, 0)),
            *[row_spec] * len(per_row),
        ],
        out_specs=(seq_spec, row_spec),
        scratch_shapes=[pltpu.VMEM((bt, h), jnp.float32)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
        interpret=call.form.interpret,
        name=f"jrnn_{name}",
    )(lengths, *streamed, weight, *per_row)
    return seq_out[:t, :b], row_out[:b]


def forward(xw, w_h, h0, lengths, mask, call: Call) -> tuple[jax.Array, jax.Array]:
    """The forward recurrence in one Mosaic TPU kernel (:func:`.common.launch_forward`)."""
    return launch_forward(_sequential_call, _forward_kernel, xw, w_h, h0, lengths, mask, call)


def adjoint(hs, dhs, dh_last, w_h, lengths, mask, call: Call) -> tuple[jax.Array, jax.Array]:
    """The adjoint recurrence in one Mosaic TPU kernel (:func:`.common.launch_adjoint`)."""
    return launch_adjoint(
        _sequential_call, _adjoint_kernel, hs, dhs, dh_last, w_h, lengths, mask, call
    )
