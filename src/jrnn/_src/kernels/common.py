"""What the kernel backends share: the limits, the form of a call, and the step bodies.

The two recurrences every backend runs (references: :func:`jrnn._src.scan.forward_loop` and
:func:`jrnn._src.bptt.adjoint_loop`). Forward, all ``T`` steps::

    h_t = act(xw_t + (h_{t-1} * m) W_h)        # xw_t = x_t W_x + b, the hoisted input GEMM

Adjoint, all ``T`` steps backwards::

    dA_t = (g_t + c_t) * act'(h_t),   c_{t-1} = (dA_t W_h^T) * m    # c_T = dL/dh_last

With ``lengths``, a padded step keeps the state (forward) or passes ``c`` through
(adjoint) and stores zeros. The input GEMM before and the weight-gradient GEMMs after
stay outside the kernels (:mod:`jrnn._src.fused`): the kernels hold only the sequential
part.

Each backend module (:mod:`.tpu`, :mod:`.triton`, :mod:`.mosaic_gpu`) has one entry,
``recurrence(kind, lengths, streamed, weight, per_row, *, act, reverse, unroll,
interpret, ...)``, whose operands are named by :data:`REFS` (absent ones ``None``).

Limits (:data:`MAX_HIDDEN`): ``W_h`` must fit the on-chip budget of the smallest target,
the Triton form's registers: ``H <= 128`` in float32 (64 KiB), ``H <= 256`` in bfloat16
(128 KiB); the Mosaic GPU form's shared memory holds the same. TPU VMEM holds far more,
but ``impl="pallas"`` lowers for every platform a program may run on, so the tightest
limit holds everywhere. Dtypes: float32 and bfloat16; the state, the matmul accumulation
and the activations are float32 on chip, the streamed arrays keep the operands' dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "DTYPES",
    "MAX_HIDDEN",
    "REFS",
    "Form",
    "Matmul",
    "adjoint_step",
    "dot",
    "forward_step",
    "lengths_or_all",
    "load_mask",
    "pad",
    "padded_inputs",
    "present",
    "roles",
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


class Form(NamedTuple):
    """One kernel form: which backend runs a call, and how.

    Attributes:
        name: the backend, named as its module in this package: ``"tpu"`` (Mosaic TPU),
            ``"triton"`` or ``"mosaic_gpu"``.
        interpret: ``None`` to compile; else what the backend's kernel call takes as its
            interpret mode (``True``: Pallas' HLO interpreter; ``pltpu.InterpretParams``:
            the TPU interpret mode; the Mosaic GPU interpret params).
        tiles: the backend's tile sizes (:class:`jrnn._src.kernels.tpu.Tiles`), or
            ``None`` for its defaults (the GPU backends size their tiles themselves).
    """

    name: str
    interpret: Any = None
    tiles: Any = None


REFS = {
    "forward": ("lengths", "xw", "w", "w_lo", "h0", "mask", "hs", "h_last"),
    "adjoint": ("lengths", "hs", "dhs", "w", "w_lo", "dh_last", "mask", "das", "dh0"),
}
"""A kernel's refs by kind, in order: its inputs ``(lengths, *streamed, weight, w_lo,
*per_row)`` and its outputs ``(seq_out, row_out)``. ``w_lo`` is the low TF32 part of a
split float32 weight (Mosaic GPU); ``lengths``, ``dhs``, ``mask`` and ``w_lo`` may be
absent."""


def present(inputs: list[Any]) -> tuple[bool, ...]:
    """Which of a kernel's refs (:data:`REFS`) are there: the inputs that are not ``None``,
    and the two outputs."""
    return (*(x is not None for x in inputs), True, True)


def roles(streamed: list[Any], per_row: list[Any]) -> str:
    """What each input of a kernel (:data:`REFS`' order) is: ``"l"`` the lengths, ``"s"`` a
    streamed `(T, B, H)` array, ``"w"`` the weight (and its low TF32 part), ``"r"`` a
    `(B, H)` per-row array."""
    return "l" + "s" * len(streamed) + "ww" + "r" * len(per_row)


def padded_inputs(
    inputs: list[Any], kinds: str, shapes: dict[str, Any], specs: dict[str, Any]
) -> tuple[list[jax.Array], list[Any]]:
    """The present ``inputs`` (of :func:`roles` ``kinds``) zero-padded to ``shapes`` of their
    kind, the lengths as a `(B, 1)` column (padded rows have length 0), and their block
    specs (``specs`` by kind): a TPU or Triton kernel call's operands."""
    args, in_specs = [], []
    for x, kind in zip(inputs, kinds, strict=True):
        if x is not None:
            x = pad(x, shapes[kind])
            args.append(x[:, None] if kind == "l" else x)
            in_specs.append(specs[kind])
    return args, in_specs


def split_refs(refs: tuple[Any, ...], kind: str, flags: tuple[bool, ...]) -> dict[str, Any]:
    """A kernel's refs by name (:data:`REFS` of ``kind``); an absent one (``flags``, as
    :func:`present` gives them) maps to ``None``; refs past the names are under
    ``"scratch"``."""
    given = iter(refs)
    out = {n: next(given) if f else None for n, f in zip(REFS[kind], flags, strict=True)}
    out["scratch"] = tuple(given)
    return out


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


def unrolled_loop(
    step: Callable[[Any, Any], Any], state: Any, n: int, unroll: int, reverse: bool
) -> Any:
    """``state = step(t, state)`` for ``t`` over ``0..n-1`` (``n-1..0`` if ``reverse``),
    ``unroll`` steps per loop iteration, the ``n % unroll`` left over written out after
    the loop (written out here: Triton's lowering of ``fori_loop`` takes no ``unroll``; a
    second loop for the rest made ptxas spill at small ``n``)."""
    u = max(1, min(unroll, n))

    def at(j: Any) -> Any:
        return n - 1 - j if reverse else j

    def body(i, state):
        for k in range(u):
            state = step(at(i * u + k), state)
        return state

    state = lax.fori_loop(0, n // u, body, state)
    for j in range(n - n % u, n):
        state = step(at(j), state)
    return state


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


# The step bodies of the Mosaic TPU and Triton kernels (Mosaic GPU's overlap the loads
# with their wgmma and are its own).
def forward_step(r: dict[str, Any], matmul: Matmul, start: Any, act: Callable) -> Callable:
    """The forward step ``(j, h) -> h`` on the refs ``r`` (:func:`split_refs`): block step
    ``j`` of a block whose first step has time index ``start``; ``matmul(a)`` is
    ``a @ W_h``."""
    xw_ref, hs_ref, lengths, mask = r["xw"], r["hs"], r["lengths"][...], load_mask(r["mask"])

    def step(j, h):
        h_in = h if mask is None else h * mask
        h_new = act(xw_ref[j].astype(jnp.float32) + matmul(h_in))  # (Bt, H)
        valid = start + j < lengths  # (Bt, 1)
        hs_ref[j] = jnp.where(valid, h_new, 0).astype(hs_ref.dtype)
        return jnp.where(valid, h_new, h)

    return step


def adjoint_step(r: dict[str, Any], matmul: Matmul, start: Any, act_grad: Callable | None):
    """The adjoint step ``(j, c) -> c``, as :func:`forward_step`:
    ``dA_t = (g_t + c_t) * act'(h_t)``; ``c_{t-1} = (dA_t W_h^T) * m`` (``matmul(a)`` is
    ``a @ W_h^T``); padded steps pass ``c`` on."""
    hs_ref, dhs_ref, das_ref = r["hs"], r["dhs"], r["das"]
    lengths, mask = r["lengths"][...], load_mask(r["mask"])

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
