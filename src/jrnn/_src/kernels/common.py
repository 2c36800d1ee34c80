"""What the kernel forms share: the call description, the limits and the step bodies.

The two recurrences every form runs (references: :func:`jrnn._src.scan.forward_loop` and
:func:`jrnn._src.bptt.adjoint_loop`). Forward, all ``T`` steps::

    h_t = act(xw_t + (h_{t-1} * m) W_h)        # xw_t = x_t W_x + b, the hoisted input GEMM

Adjoint, all ``T`` steps backwards::

    dA_t = (g_t + c_t) * act'(h_t),   c_{t-1} = (dA_t W_h^T) * m    # c_T = dL/dh_last

With ``lengths``, a padded step keeps the state (forward) or passes ``c`` through
(adjoint) and stores zeros. The input GEMM before and the weight-gradient GEMMs after
stay outside the kernels (:mod:`jrnn._src.fused`): the kernels hold only the sequential
part.

Limits (:data:`MAX_HIDDEN`): ``W_h`` must fit the on-chip budget of the smallest target,
the Triton form's registers: ``H <= 128`` in float32 (64 KiB), ``H <= 256`` in bfloat16
(128 KiB); the Mosaic GPU form's shared memory holds the same. TPU VMEM holds far more,
but ``impl="pallas"`` lowers for every platform a program may run on, so the tightest
limit holds everywhere. Dtypes: float32 and bfloat16; the state, the matmul accumulation
and the activations are float32 on chip, the streamed arrays keep the operands' dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jrnn.activations import Activation

__all__ = [
    "ADJOINT_REFS",
    "DTYPES",
    "FORWARD_REFS",
    "MAX_HIDDEN",
    "Call",
    "Form",
    "Matmul",
    "Tuning",
    "adjoint_step",
    "dot",
    "forward_step",
    "launch_adjoint",
    "launch_forward",
    "lengths_or_all",
    "load_mask",
    "pad",
    "round_up",
    "split_refs",
    "split_tf32",
    "tf32_hi",
    "unrolled_loop",
]

DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
"""The dtypes the kernels take (operands, ``W_h`` and the streamed arrays)."""
MAX_HIDDEN = {jnp.dtype(jnp.float32): 128, jnp.dtype(jnp.bfloat16): 256}
"""The largest hidden size whose ``W_h`` the kernels hold on chip, per dtype."""


class Tuning(NamedTuple):
    """The tile sizes of the kernels: explicit, and part of a call's static key.

    Attributes:
        tpu_max_tile: the most batch rows in one tile of the TPU form (a larger batch is
            split into tiles of this many rows and padded to whole tiles).
        tpu_stream_bytes: the VMEM the TPU form gives to the double-buffered blocks of the
            streamed `(T, B, H)` arrays: it sets how many steps one block holds.
    """

    tpu_max_tile: int = 128
    tpu_stream_bytes: int = 4 << 20


class Form(NamedTuple):
    """One kernel form and how it runs.

    Attributes:
        name: ``"tpu"`` (Mosaic TPU), ``"triton"`` or ``"mosaic_gpu"``: the module of
            this package that holds the form.
        interpret: ``False`` to compile, else the Pallas interpret mode (``True``, a
            ``pltpu.InterpretParams`` or, for ``"mosaic_gpu"``, the Mosaic GPU interpret
            params).
        tuning: the tile sizes (:class:`Tuning`).
    """

    name: str
    interpret: Any = False
    tuning: Tuning = Tuning()


class Call(NamedTuple):
    """The static description of one kernel call.

    Attributes:
        act: the activation.
        reverse: the kernel walks time from the last step to the first.
        unroll: the unroll factor of the in-kernel step loop.
        form: which kernel form runs it, and how (:class:`Form`).
    """

    act: Activation
    reverse: bool
    unroll: int
    form: Form


def dot(a: jax.Array, w: jax.Array) -> jax.Array:
    """``a @ w`` with ``a`` cast to ``w``'s dtype and a float32 result (float32: full
    precision, not TF32 or a single bfloat16 pass)."""
    precision = lax.Precision.HIGHEST if w.dtype == jnp.float32 else None
    return jnp.dot(a.astype(w.dtype), w, preferred_element_type=jnp.float32, precision=precision)


def tf32_hi(x: jax.Array) -> jax.Array:
    """float32 ``x`` rounded to the nearest TF32 (its low 13 mantissa bits zero; ties away
    from zero), by integer arithmetic on its bits: exact, in a kernel or outside."""
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    rounded = (bits + jnp.uint32(0x1000)) & jnp.uint32(0xFFFFE000)
    return lax.bitcast_convert_type(rounded, jnp.float32)


def split_tf32(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(hi, lo)`` with ``hi`` representable in TF32, ``|lo| <= 2^-11 |x|`` and
    ``hi + lo == x`` exactly (where ``lo`` is a normal float32: ``|x| >= 2^-102`` or so;
    below, ``lo`` may flush to zero, an absolute error under 1e-38).

    The GPU forms multiply float32 as ``a_hi W_hi + a_hi W_lo + a_lo W_hi`` in three TF32
    tensor-core products: about 2^-21 relative error per product, float32's own order."""
    hi = tf32_hi(x)
    return hi, x - hi


def unrolled_loop(at: Callable[[Any, Any], Any], h: Any, n: int, unroll: int) -> Any:
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


def round_up(n: int, m: int) -> int:
    """The least multiple of ``m`` that is ``>= n``."""
    return -(-n // m) * m


def pad(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``x`` zero-padded at the end of each axis to ``shape``."""
    if tuple(x.shape) == tuple(shape):
        return x
    return jnp.pad(x, [(0, n - s) for s, n in zip(x.shape, shape, strict=True)])


def load_mask(ref: Any) -> jax.Array | None:
    """A mask ref's block as float32, or ``None`` without a mask."""
    return None if ref is None else ref[...].astype(jnp.float32)


def lengths_or_all(lengths: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
    """``lengths``, or ``T`` for each row of a `(T, B, H)` operand (the Mosaic TPU and
    Triton kernels read every row's length)."""
    t, b, _ = shape
    return jnp.full((b,), t, jnp.int32) if lengths is None else lengths


Matmul = Callable[[jax.Array], jax.Array]
"""``a -> a @ W`` with the resident weight ``W``, a float32 result."""


def forward_step(xw_ref, hs_ref, matmul: Matmul, lengths, mask, start, act):
    """The forward kernels' step ``(j, h) -> h``: block step ``j`` of a block whose first
    step has time index ``start``; ``matmul(a)`` is ``a @ W_h``."""

    def step(j, h):
        h_in = h if mask is None else h * mask
        h_new = act(xw_ref[j].astype(jnp.float32) + matmul(h_in))  # (Bt, H)
        valid = start + j < lengths  # (Bt, 1)
        hs_ref[j] = jnp.where(valid, h_new, 0).astype(hs_ref.dtype)
        return jnp.where(valid, h_new, h)

    return step


def adjoint_step(hs_ref, dhs_ref, das_ref, matmul: Matmul, lengths, mask, start, act_grad):
    """The adjoint kernels' step ``(j, c) -> c``, as :func:`forward_step`:
    ``dA_t = (g_t + c_t) * act'(h_t)``; ``c_{t-1} = (dA_t W_h^T) * m`` (``matmul(a)`` is
    ``a @ W_h^T``); padded steps pass ``c`` on."""

    def step(j, c):
        g = c if dhs_ref is None else c + dhs_ref[j].astype(jnp.float32)  # (Bt, H)
        valid = start + j < lengths  # (Bt, 1)
        da = jnp.where(valid, g, 0)
        if act_grad is not None:
            da = da * act_grad(hs_ref[j].astype(jnp.float32))
        das_ref[j] = da.astype(das_ref.dtype)
        c_new = matmul(da)  # (Bt, H)
        if mask is not None:
            c_new = c_new * mask
        return jnp.where(valid, c_new, c)

    return step


def split_refs(refs: tuple[Any, ...], names: tuple[str, ...], present: dict[str, bool]) -> dict:
    """A kernel's refs by name, in ``names``' order; a name whose ``present`` flag is
    ``False`` has no ref and maps to ``None``; refs past ``names`` are under ``"scratch"``."""
    given = iter(refs)
    out = {n: next(given) if present.get(n, True) else None for n in names}
    out["scratch"] = tuple(given)
    return out


FORWARD_REFS = ("lengths", "xw", "w", "h0", "mask", "hs", "h_last")
"""The forward kernels' refs, in order (``mask`` only with a mask)."""
ADJOINT_REFS = ("lengths", "hs", "dhs", "w_t", "dh_last", "mask", "das", "dh0")
"""The adjoint kernels' refs, in order (``dhs`` and ``mask`` only when given)."""


def launch_forward(sequential_call, kernel, xw, w_h, h0, lengths, mask, call: Call):
    """The forward recurrence as one kernel call, on time-major operands.

    Args:
        sequential_call: the form's ``(name, kernel, call, lengths, streamed, weight,
            per_row, dtype) -> (seq_out, row_out)``.
        kernel: the form's forward kernel, taking ``has_mask``.
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
    kernel = partial(kernel, has_mask=mask is not None)
    per_row = [h0] if mask is None else [h0, mask]
    lengths = lengths_or_all(lengths, xw.shape)
    return sequential_call("forward", kernel, call, lengths, [xw], w_h, per_row, xw.dtype)


def launch_adjoint(sequential_call, kernel, hs, dhs, dh_last, w_h, lengths, mask, call: Call):
    """The adjoint recurrence as one kernel call, on time-major operands.

    Args:
        sequential_call: as :func:`launch_forward`.
        kernel: the form's adjoint kernel, taking ``has_mask`` and ``has_dhs``.
        hs: `(T, B, H)` the forward kernel's states.
        dhs: `(T, B, H)` cotangent of ``hs``, or ``None`` (zero).
        dh_last: `(B, H)` cotangent of ``h_last``.
        w_h: `(H, H)`: the kernel holds its transpose.
        lengths, mask: as given to :func:`launch_forward`.
        call: the static options of the forward call; the adjoint walks the other way.

    Returns:
        ``(das, dh0)``: `(T, B, H)` ``dL/da_t`` in ``hs``' dtype (zero at padded steps) and
        the `(B, H)` float32 ``dL/dh0``.
    """
    kernel = partial(kernel, has_mask=mask is not None, has_dhs=dhs is not None)
    streamed = [hs] if dhs is None else [hs, dhs]
    per_row = [dh_last] if mask is None else [dh_last, mask]
    back = call._replace(reverse=not call.reverse)
    lengths = lengths_or_all(lengths, hs.shape)
    return sequential_call("adjoint", kernel, back, lengths, streamed, w_h.T, per_row, hs.dtype)
