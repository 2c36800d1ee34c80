"""The Mosaic TPU form of the fused kernels (the recurrences: :mod:`.common`).

What each kernel keeps on chip, per batch tile of ``Bt`` rows: ``W_h`` (or ``W_h^T``) in
VMEM for the whole call (its block index never changes, so the pipeline fetches it
once), the `(Bt, H)` float32 state in a VMEM scratch carried along the time axis of a
``(batch tiles, time blocks)`` grid, and blocks of ``Tc`` steps of the streamed
`(T, B, H)` arrays, double-buffered by the Pallas pipeline. ``Bt = B`` up to
``Tiles.max_rows`` (else that many, ``B`` padded), ``H`` unpadded (a block spans the
whole hidden axis), ``Tc`` sized to keep the streamed blocks under
``Tiles.stream_bytes`` of VMEM.

On a CPU backend ``impl="pallas"`` runs this form in Pallas' interpret mode; the tests
also run it in the TPU interpret mode, which simulates VMEM, HBM and the DMAs and
detects races.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from jrnn._src.compat import struct_like
from jrnn._src.kernels.common import (
    adjoint_step,
    dot,
    forward_step,
    lengths_or_all,
    padded_inputs,
    present,
    roles,
    round_up,
    split_refs,
    unrolled_loop,
)

__all__ = ["Tiles", "Tiling", "recurrence", "tiling"]


class Tiles(NamedTuple):
    """The tile sizes of the TPU form (the ``tiles`` of its :class:`.common.Form`).

    Attributes:
        max_rows: the most batch rows in one tile (a larger batch is split into tiles of
            this many rows and padded to whole tiles).
        stream_bytes: the VMEM given to the double-buffered blocks of the streamed
            `(T, B, H)` arrays: it sets how many steps one block holds.
    """

    max_rows: int = 128
    stream_bytes: int = 4 << 20


class Tiling(NamedTuple):
    """Padded sizes and blocks: ``(T, B, H)`` padded to ``(tp, bp, h)``, blocks of ``tc``
    steps and ``bt`` rows."""

    tp: int
    bp: int
    tc: int
    bt: int


def tiling(t: int, b: int, h: int, num_streamed: int, tiles: Tiles) -> Tiling:
    """The blocks of a call streaming ``num_streamed`` `(T, B, H)` arrays (outputs included)."""
    bt = min(b, tiles.max_rows)
    # double-buffered, rows padded to whole (16, 128) tiles (bfloat16 packs 16 rows a tile)
    per_step = 2 * num_streamed * round_up(bt, 16) * round_up(h, 128) * 4
    cap = max(1, tiles.stream_bytes // per_step)
    tc = -(-t // -(-t // cap))  # balanced blocks: the least time padding under the cap
    return Tiling(round_up(t, tc), round_up(b, bt), tc, bt)


# W_h is read from VMEM at each step: a vector load per use is cheap there, and a
# loop-long value of up to 64 vregs would spill.
def _kernel(*refs, kind: str, flags: tuple[bool, ...], act, reverse: bool, unroll: int, tc: int):
    """The step kernel of one (batch tile, time block): ``tc`` steps of ``kind``'s
    recurrence, the state carried between time blocks in a VMEM scratch."""
    r = split_refs(refs, kind, flags)
    block, num_blocks = pl.program_id(1), pl.num_programs(1)
    start = (num_blocks - 1 - block if reverse else block) * tc  # this block's first step
    w = r["w"]
    if kind == "forward":
        step = forward_step(r, lambda a: dot(a, w[...]), start, act.kernel_fn)
        state_in, state_out = r["h0"], r["h_last"]
    else:
        step = adjoint_step(r, lambda a: dot(a, w[...]), start, act.grad_from_output)
        state_in, state_out = r["dh_last"], r["dh0"]
    (carried,) = r["scratch"]

    @pl.when(block == 0)
    def _():
        carried[...] = state_in[...].astype(jnp.float32)

    carried[...] = h = unrolled_loop(step, carried[...], tc, unroll, reverse)

    @pl.when(block == num_blocks - 1)
    def _():
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
    tiles: Tiles | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One ``kind`` (``"forward"`` or ``"adjoint"``) recurrence in one Mosaic TPU kernel,
    over a ``(batch tiles, time blocks)`` grid.

    Args:
        kind: the kernel (its refs: :data:`.common.REFS`), ``jrnn_<kind>`` in profiles.
        lengths: `(B,)` int32, or ``None``: every step is valid.
        streamed: `(T, B, H)` arrays read a block of steps at a time: ``[xw]`` (forward)
            or ``[hs, dhs]`` (adjoint; ``dhs`` may be ``None``).
        weight: `(H, H)` ``W_h`` (forward) or ``W_h^T`` (adjoint), held in VMEM.
        per_row: `(B, H)` arrays: the initial state and the mask (may be ``None``).
        act, reverse, unroll: the activation, the direction of the walk through time and
            the unroll of the step loop.
        interpret: ``None`` to compile, ``True`` or ``pltpu.InterpretParams`` to interpret.
        tiles: the tile sizes (default :class:`Tiles`).

    Returns:
        The `(T, B, H)` output in ``streamed[0]``'s dtype (zero at padded steps) and the
        `(B, H)` float32 final state.
    """
    first = streamed[0]
    assert first is not None, "the first streamed array is always given"
    t, b, h = first.shape
    dtype = first.dtype
    inputs = [lengths_or_all(lengths, (t, b, h)), *streamed, weight, None, *per_row]
    flags = present(inputs)
    num_streamed = sum(x is not None for x in streamed)
    tp, bp, tc, bt = tiling(t, b, h, num_streamed + 1, tiles or Tiles())
    last = tp // tc - 1
    seq_spec = pl.BlockSpec((tc, bt, h), lambda i, k: (last - k if reverse else k, i, 0))
    row_spec = pl.BlockSpec((bt, h), lambda i, k: (i, 0))
    args, in_specs = padded_inputs(
        inputs,
        roles(streamed, per_row),
        shapes={"l": (bp,), "s": (tp, bp, h), "w": (h, h), "r": (bp, h)},
        specs={
            "l": pl.BlockSpec((bt, 1), lambda i, k: (i, 0)),
            "s": seq_spec,
            "w": pl.BlockSpec((h, h), lambda i, k: (0, 0)),
            "r": row_spec,
        },
    )
    # batch tiles may run on either TensorCore; interpreted, one core needs no semantics
    semantics: tuple[Literal["parallel", "arbitrary"], ...] | None = (
        None if interpret is not None else ("parallel", "arbitrary")
    )
    seq_out, row_out = pl.pallas_call(
        partial(_kernel, kind=kind, flags=flags, act=act, reverse=reverse, unroll=unroll, tc=tc),
        out_shape=(
            struct_like((tp, bp, h), dtype, first),
            struct_like((bp, h), jnp.float32, first),
        ),
        grid=(bp // bt, last + 1),
        in_specs=in_specs,
        out_specs=(seq_spec, row_spec),
        scratch_shapes=[pltpu.VMEM((bt, h), jnp.float32)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
        interpret=False if interpret is None else interpret,
        name=f"jrnn_{kind}",
    )(*args)
    return seq_out[:t, :b], row_out[:b]
