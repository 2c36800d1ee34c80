"""Pallas kernels that run the whole recurrence, forward and adjoint, in one kernel each.

Forward kernel (reference: :func:`jrnn.forward._forward_loop`), all ``T`` steps::

    h_t = act(xw_t + (h_{t-1} * m) W_h)        # xw_t = x_t W_x + b, the hoisted input GEMM

Adjoint kernel (reference: :func:`jrnn.bptt._adjoint_loop`), all ``T`` steps backwards::

    dA_t = (g_t + c_t) * act'(h_t),   c_{t-1} = (dA_t W_h^T) * m    # c_T = dL/dh_last

With ``lengths``, a padded step keeps the state (forward) or passes ``c`` through
(adjoint) and stores zeros. The input GEMM before and the weight-gradient GEMMs after
stay outside the kernels (:mod:`jrnn.fused`): the kernels hold only the sequential part.

What each kernel keeps on chip, per batch tile of ``Bt`` rows:

* **TPU** (Mosaic TPU): ``W_h`` (or ``W_h^T``) in VMEM for the whole call (its block
  index never changes, so the pipeline fetches it once), the `(Bt, H)` float32 state in
  a VMEM scratch carried along the time axis of a ``(batch tiles, time chunks)`` grid,
  and chunks of ``Tc`` steps of the streamed `(T, B, H)` arrays, double-buffered by the
  Pallas pipeline. ``Bt = B`` up to 128 (else 128, ``B`` padded), ``H`` unpadded (a
  block spans the whole hidden axis), ``Tc`` sized to keep the streamed blocks under
  4 MiB of VMEM.
* **GPU** (Triton: GPUs other than Hopper, whose form is :mod:`jrnn.hopper`, in Mosaic
  GPU; see :func:`jrnn._forms.gpu_kernels`): one program per batch tile of ``Bt = 16`` rows runs
  all ``T`` steps; ``W_h`` is loaded once into registers and the state stays in
  registers; each step loads ``xw_t`` (or ``h_t``, ``g_t``) and stores ``h_t`` (or
  ``dA_t``). ``B`` and ``H`` are padded to powers of two (at least 16, Triton's smallest
  dot).

Limits (:data:`MAX_HIDDEN`): ``W_h`` must fit the on-chip budget of the smallest target,
the GPU's registers: ``H <= 128`` in float32 (64 KiB), ``H <= 256`` in bfloat16
(128 KiB); the Hopper form's shared memory holds the same. TPU VMEM holds far more,
but ``impl="pallas"`` lowers for every platform a program may run on, so the tightest
limit holds everywhere. Dtypes: float32 and
bfloat16; the state, the matmul accumulation and the activations are float32 on chip,
the streamed arrays keep the operands' dtype.

On a CPU backend ``impl="pallas"`` runs the TPU kernels in Pallas' interpret mode; the
tests also run them in the TPU interpret mode (which simulates VMEM, HBM and the DMAs
and detects races) and interpret the GPU kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

from jrnn.activations import Activation

__all__ = ["DTYPES", "MAX_HIDDEN", "adjoint", "forward"]

DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
"""The dtypes the kernels take (operands, ``W_h`` and the streamed arrays)."""
MAX_HIDDEN = {jnp.dtype(jnp.float32): 128, jnp.dtype(jnp.bfloat16): 256}
"""The largest hidden size whose ``W_h`` the kernels hold on chip, per dtype."""

_TPU_STREAM_BYTES = 4 << 20  # the VMEM for the double-buffered chunks of the streamed arrays
_TPU_MAX_TILE = 128
_GPU_TILE = 16


class Call(NamedTuple):
    """The static description of one kernel call.

    Attributes:
        act: the activation.
        reverse: the kernel walks time from the last step to the first.
        unroll: the unroll factor of the in-kernel step loop.
        platform: which kernel form: ``"tpu"`` (Mosaic TPU), ``"gpu"`` (Triton) or
            ``"hopper"`` (Mosaic GPU, run by :mod:`jrnn.hopper`).
        interpret: ``False`` to compile, else the Pallas interpret mode (``True``, a
            ``pltpu.InterpretParams`` or, for ``"hopper"``, the Mosaic GPU interpret
            params).
    """

    act: Activation
    reverse: bool
    unroll: int | bool
    platform: str
    interpret: Any = False


def _dot(a: jax.Array, w: jax.Array) -> jax.Array:
    """``a @ w`` with ``a`` cast to ``w``'s dtype and a float32 result (float32: full
    precision, not TF32 or a single bfloat16 pass)."""
    precision = lax.Precision.HIGHEST if w.dtype == jnp.float32 else None
    return jnp.dot(a.astype(w.dtype), w, preferred_element_type=jnp.float32, precision=precision)


def _time_loop(
    step: Callable[[jax.Array, jax.Array], jax.Array],
    state_in: Any,
    state_out: Any,
    scratch: tuple[Any, ...],
    tc: int,
    call: Call,
) -> None:
    """Runs ``step(t_in_block, state)`` over the ``tc`` steps of this block in ``call``'s
    direction, starting from ``state_in`` (the first time block) or the carried scratch,
    and stores the final state in ``state_out``."""

    def at(j, h):
        return step(tc - 1 - j if call.reverse else j, h)

    def steps(h):
        return _unrolled_loop(at, h, tc, call.unroll)

    if not scratch:  # GPU: the whole sequence in one block
        state_out[...] = steps(state_in[...].astype(jnp.float32)).astype(state_out.dtype)
        return
    (carried,) = scratch
    block, num_blocks = pl.program_id(1), pl.num_programs(1)

    @pl.when(block == 0)
    def _():
        carried[...] = state_in[...].astype(jnp.float32)

    h = steps(carried[...])
    carried[...] = h

    @pl.when(block == num_blocks - 1)
    def _():
        state_out[...] = h.astype(state_out.dtype)


def _unrolled_loop(at: Callable[[Any, Any], Any], h: Any, n: int, unroll: int) -> Any:
    """``at(j, h)`` for ``j`` in ``0..n-1``, ``unroll`` steps per loop iteration (written
    out here: Triton's lowering of ``fori_loop`` takes no ``unroll``)."""
    u = max(1, min(unroll, n))

    def body(i, h):
        for k in range(u):
            h = at(i * u + k, h)
        return h

    h = lax.fori_loop(0, n // u, body, h)
    if n % u:
        h = lax.fori_loop(n - n % u, n, at, h)
    return h


def _weight(ref: Any, scratch: tuple[Any, ...]) -> Callable[[], jax.Array]:
    """The resident weight, as each step reads it: on GPU loaded once, before the loop,
    into registers; on TPU read from VMEM at each step (a vector load per use is cheap
    there, and a loop-long value of up to 64 vregs would spill)."""
    if scratch:
        return lambda: ref[...]
    w = ref[...]
    return lambda: w


def _per_block(len_ref, mask_ref, w_ref, scratch: tuple[Any, ...], tc: int, call: Call):
    """What every step of this block reads: the time index of the block's first row
    (blocks run in reverse order if reverse), the `(Bt, 1)` lengths, the `(Bt, H)` float32
    mask or ``None``, and the weight getter (:func:`_weight`)."""
    start = jnp.int32(0)
    if scratch:
        block, num_blocks = pl.program_id(1), pl.num_programs(1)
        start = (num_blocks - 1 - block if call.reverse else block) * tc
    mask = None if mask_ref is None else mask_ref[...].astype(jnp.float32)
    return start, len_ref[...], mask, _weight(w_ref, scratch)


def _forward_kernel(*refs, call: Call, tc: int, has_mask: bool) -> None:
    len_ref, xw_ref, w_ref, h0_ref, *rest = refs
    mask_ref, *rest = rest if has_mask else [None, *rest]
    hs_ref, h_last_ref, *scratch = rest
    start, lengths, mask, w_h = _per_block(len_ref, mask_ref, w_ref, tuple(scratch), tc, call)
    act = call.act.fn

    def step(j, h):
        h_in = h if mask is None else h * mask
        h_new = act(xw_ref[j].astype(jnp.float32) + _dot(h_in, w_h()))  # (Bt, H)
        valid = start + j < lengths  # (Bt, 1)
        hs_ref[j] = jnp.where(valid, h_new, 0).astype(hs_ref.dtype)
        return jnp.where(valid, h_new, h)

    _time_loop(step, h0_ref, h_last_ref, tuple(scratch), tc, call)


def _adjoint_kernel(*refs, call: Call, tc: int, has_mask: bool, has_dhs: bool) -> None:
    len_ref, hs_ref, *rest = refs
    dhs_ref, *rest = rest if has_dhs else [None, *rest]
    w_t_ref, dh_last_ref, *rest = rest
    mask_ref, *rest = rest if has_mask else [None, *rest]
    das_ref, dh0_ref, *scratch = rest
    start, lengths, mask, w_h_t = _per_block(len_ref, mask_ref, w_t_ref, tuple(scratch), tc, call)
    act_grad = call.act.grad_from_output

    # dA_t = (g_t + c_t) * act'(h_t); c_{t-1} = (dA_t W_h^T) * m; padded steps pass c on
    def step(j, c):
        g = c if dhs_ref is None else c + dhs_ref[j].astype(jnp.float32)  # (Bt, H)
        valid = start + j < lengths  # (Bt, 1)
        da = jnp.where(valid, g, 0)
        if act_grad is not None:
            da = da * act_grad(hs_ref[j].astype(jnp.float32))
        das_ref[j] = da.astype(das_ref.dtype)
        c_new = _dot(da, w_h_t())  # (Bt, H)
        if mask is not None:
            c_new = c_new * mask
        return jnp.where(valid, c_new, c)

    _time_loop(step, dh_last_ref, dh0_ref, tuple(scratch), tc, call)


class _Tiling(NamedTuple):
    """Padded sizes and blocks: ``(T, B, H)`` padded to ``(tp, bp, hp)``, blocks of ``tc``
    steps and ``bt`` rows."""

    tp: int
    bp: int
    hp: int
    tc: int
    bt: int


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _tiling(t: int, b: int, h: int, num_streamed: int, call: Call) -> _Tiling:
    if call.platform == "gpu":
        hp = max(16, 1 << (h - 1).bit_length())
        return _Tiling(t, _round_up(b, _GPU_TILE), hp, t, _GPU_TILE)
    bt = b if b <= _TPU_MAX_TILE else _TPU_MAX_TILE
    # double-buffered, rows padded to whole (16, 128) tiles (bfloat16 packs 16 rows a tile)
    per_step = 2 * num_streamed * _round_up(bt, 16) * _round_up(h, 128) * 4
    cap = max(1, _TPU_STREAM_BYTES // per_step)
    tc = -(-t // -(-t // cap))  # balanced blocks: the least time padding under the cap
    return _Tiling(_round_up(t, tc), _round_up(b, bt), h, tc, bt)


def _pad(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    if tuple(x.shape) == tuple(shape):
        return x
    return jnp.pad(x, [(0, n - s) for s, n in zip(x.shape, shape, strict=True)])


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
    """One ``pallas_call`` of a step kernel over a ``(batch tiles[, time blocks])`` grid.

    Args:
        name: the kernel's name (``jrnn_<name>`` in profiles and lowered text).
        kernel: takes ``(lengths, *streamed, weight, *per_row, seq_out, row_out,
            *scratch)`` refs.
        lengths: `(B,)` int32; steps at or past a row's length are padded steps.
        streamed: `(T, B, H)` arrays, read a block of steps at a time.
        weight: `(H, H)`, held on chip for the whole call.
        per_row: `(B, H)` arrays, the first of them the initial state.
        dtype: the dtype of the `(T, B, H)` output (the `(B, H)` one is float32).

    Returns:
        The `(T, B, H)` and `(B, H)` outputs, unpadded.
    """
    t, b, h = streamed[0].shape
    tiles = _tiling(t, b, h, len(streamed) + 1, call)
    tp, bp, hp, tc, bt = tiles
    streamed = [_pad(x, (tp, bp, hp)) for x in streamed]
    per_row = [_pad(x, (bp, hp)) for x in per_row]
    lengths = _pad(lengths, (bp,))[:, None]  # padded rows have length 0
    weight = _pad(weight, (hp, hp))
    num_blocks = tp // tc
    # the grid, its index maps and compiler params differ by platform (1-D or 2-D grid)
    grid: tuple[int, ...]
    seq_map: Callable[..., tuple[Any, ...]]
    row_map: Callable[..., tuple[Any, ...]]
    w_map: Callable[..., tuple[Any, ...]]
    params: pltriton.CompilerParams | pltpu.CompilerParams
    if call.platform == "gpu":
        grid = (bp // bt,)
        seq_map = lambda i: (0, i, 0)
        row_map = lambda i: (i, 0)
        w_map = lambda i: (0, 0)
        params = pltriton.CompilerParams(num_warps=4 if hp <= 64 else 8)
        scratch = []
    else:
        grid = (bp // bt, num_blocks)
        last = num_blocks - 1
        seq_map = lambda i, k: (last - k if call.reverse else k, i, 0)
        row_map = lambda i, k: (i, 0)
        w_map = lambda i, k: (0, 0)
        # batch tiles may run on either TensorCore; the TPU interpret mode takes no
        # semantics once vmap adds a grid axis (jax 0.10), and needs none on one core
        semantics: tuple[Literal["parallel", "arbitrary"], ...] | None = (
            None if call.interpret else ("parallel", "arbitrary")
        )
        params = pltpu.CompilerParams(dimension_semantics=semantics)
        scratch = [pltpu.VMEM((bt, hp), jnp.float32)]
    seq_spec = pl.BlockSpec((tc, bt, hp), seq_map)
    row_spec = pl.BlockSpec((bt, hp), row_map)
    in_specs = [
        pl.BlockSpec((bt, 1), row_map),
        *[seq_spec] * len(streamed),
        pl.BlockSpec((hp, hp), w_map),
        *[row_spec] * len(per_row),
    ]
    seq_out, row_out = pl.pallas_call(
        partial(kernel, call=call, tc=tc),
        out_shape=(
            jax.ShapeDtypeStruct((tp, bp, hp), dtype),
            jax.ShapeDtypeStruct((bp, hp), jnp.float32),
        ),
        grid=grid,
        in_specs=in_specs,
        out_specs=(seq_spec, row_spec),
        scratch_shapes=scratch,
        compiler_params=params,
        interpret=call.interpret,
        name=f"jrnn_{name}",
    )(lengths, *streamed, weight, *per_row)
    return seq_out[:t, :b, :h], row_out[:b, :h]


def _lengths_or_all(lengths: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
    """``lengths``, or ``T`` for each row: these kernels read every row's length."""
    t, b, _ = shape
    return jnp.full((b,), t, jnp.int32) if lengths is None else lengths


def forward(
    xw: jax.Array,
    w_h: jax.Array,
    h0: jax.Array,
    lengths: jax.Array | None,
    mask: jax.Array | None,
    call: Call,
) -> tuple[jax.Array, jax.Array]:
    """The forward recurrence in one kernel, on time-major operands.

    Args:
        xw: `(T, B, H)` the input projection ``x_t W_x + b`` (zero at padded steps).
        w_h: `(H, H)`.
        h0: `(B, H)`.
        lengths: `(B,)` int32, or ``None``: every step is valid.
        mask: `(B, H)` multiplier of ``h_{t-1}`` or ``None``.
        call: the static options.

    Returns:
        ``(hs, h_last)``: `(T, B, H)` in ``xw``'s dtype, zero at padded steps, and the
        `(B, H)` float32 final state.
    """
    kernel = partial(_forward_kernel, has_mask=mask is not None)
    per_row = [h0] if mask is None else [h0, mask]
    lengths = _lengths_or_all(lengths, xw.shape)
    return _sequential_call("forward", kernel, call, lengths, [xw], w_h, per_row, xw.dtype)


def adjoint(
    hs: jax.Array,
    dhs: jax.Array | None,
    dh_last: jax.Array,
    w_h: jax.Array,
    lengths: jax.Array | None,
    mask: jax.Array | None,
    call: Call,
) -> tuple[jax.Array, jax.Array]:
    """The adjoint recurrence in one kernel, on time-major operands.

    Args:
        hs: `(T, B, H)` the forward kernel's states.
        dhs: `(T, B, H)` cotangent of ``hs``, or ``None`` (zero).
        dh_last: `(B, H)` cotangent of ``h_last``.
        w_h: `(H, H)`: the kernel holds its transpose.
        lengths, mask: as given to :func:`forward`.
        call: the static options of the forward call; the adjoint walks the other way.

    Returns:
        ``(das, dh0)``: `(T, B, H)` ``dL/da_t`` in ``hs``' dtype (zero at padded steps) and
        the `(B, H)` float32 ``dL/dh0``.
    """
    kernel = partial(_adjoint_kernel, has_mask=mask is not None, has_dhs=dhs is not None)
    streamed = [hs] if dhs is None else [hs, dhs]
    per_row = [dh_last] if mask is None else [dh_last, mask]
    back = call._replace(reverse=not call.reverse)
    lengths = _lengths_or_all(lengths, hs.shape)
    return _sequential_call("adjoint", kernel, back, lengths, streamed, w_h.T, per_row, hs.dtype)
