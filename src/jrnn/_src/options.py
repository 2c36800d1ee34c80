"""The validated call: every entry point's arguments checked, normalised and split in two.

Every entry point (``forward``, ``backward``, ``rnn``, the ``parallel`` ones, the
gradient check) calls :func:`prepare` once. It runs in Python at trace time, on shapes
and dtypes only (and on the values of ``lengths`` when they are concrete), so a wrong
argument raises a ``TypeError``/``ValueError`` that names it instead of an XLA error.
It returns a :class:`Prepared` call, which holds:

* :class:`Operands`: the arrays (params, ``xs``, ``h0``, ``lengths``, the recurrent
  mask), a pytree that ``jit``, ``vmap`` and ``custom_vjp`` trace;
* :class:`Options`: the static options (activation, direction, unroll, layout), one
  hashable value that the loops and the ``custom_vjp`` wiring take as one static argument.

Internally every array stays in the caller's layout (``"btf"`` or ``"tbf"``):
the loops index the time axis wherever it is, and the GEMMs before and after
them contract over all ``T * B`` rows as they lie, so nothing is transposed.
Unbatched input gains a batch axis of 1 (a free reshape).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypedDict, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import ArrayLike, Float, Int

from jrnn._src.compat import explicit_sharding, reshard_like, vary, varying_axes
from jrnn._src.kernels.common import DTYPES, MAX_HIDDEN, Form
from jrnn._src.kernels.forms import kernel_forms
from jrnn._src.names import IMPLS
from jrnn._src.validate import as_array, check_bool, check_float, concrete, known, positive_int
from jrnn.activations import ACTIVATIONS, Activation, get_activation
from jrnn.params import RNNParams

__all__ = [
    "GRADS",
    "IMPLS",
    "PARALLEL_KEYS",
    "SCAN_KEYS",
    "Operands",
    "Options",
    "ParallelOptions",
    "Prepared",
    "ScanOptions",
    "TuningTable",
    "check_choice",
    "check_impl",
    "check_like",
    "check_params",
    "prepare",
    "prepare_cotangents",
]


@runtime_checkable
class TuningTable(Protocol):
    """What ``tuning=`` takes: a table that picks the implementation per call (the one
    ``jrnn bench --tune`` measures and :func:`jrnn.bench.load_tuning` reads is one)."""

    def choose(self, dtype: Any, batch: int, steps: int, hidden: int) -> str:
        """``"pallas"`` or ``"scan"`` for a call of ``dtype`` and `(B, T, H)` shape."""
        ...


class ScanOptions(TypedDict, total=False):
    """The keyword options of :func:`jrnn.forward`, :func:`jrnn.rnn` and :func:`jrnn.backward`.

    Each is optional and has the default given here (the layers, the model and the
    adapters take them too).

    Attributes:
        activation: ``"tanh"`` (default), ``"relu"``, ``"linear"``, or an elementwise,
            traceable callable of your own (``jax.nn.gelu``, ``jnp.sin``, ...): the BPTT
            takes its derivative from JAX (:mod:`jrnn.activations`), or an
            :class:`~jrnn.activations.Activation` with the derivative you write; the
            kernels run the three built-ins only.
        reverse: run from the end (default ``False``); with ``lengths``, each sequence
            starts at its last valid step. ``hs`` is returned in input order either way.
        lengths: ``None`` (default) or `(B,)` integers in ``[0, T]`` (unbatched: a
            scalar): right-padded variable lengths. Padded steps leave the state
            unchanged and output zeros; ``h_last`` is each sequence's last valid state
            (``h0`` if the length is 0). Values are range-checked when concrete; traced
            values outside ``[0, T]`` act as if clipped to it. Padded steps of ``xs``
            reach no value and no gradient (a NaN there included).
        unroll: loop unroll factor (an int >= 1, or ``True`` for a full unroll); default 1.
            The kernels (``impl="pallas"``) unroll their step loop by it where their
            registers hold several steps (``True`` counts as 1 there; the GPU kernels at
            the largest hidden sizes run one step per trip: docs/guide/accelerators.md).
        time_major: ``xs`` and ``hs`` are `(T, B, ...)` instead of `(B, T, ...)` (default
            ``False``).
        recurrent_mask: ``None`` (default) or a `(B, H)` (unbatched `(H,)`) multiplier
            applied to ``h_{t-1}`` before ``W_h`` at every step:
            ``h_t = act(x_t W_x + (h_{t-1} * m) W_h + b)``.
            Keras' recurrent dropout is such a mask (see ``jrnn.layers.stack``).
        impl: ``"auto"`` (default), ``"scan"`` or ``"pallas"``. ``"scan"`` runs the
            ``lax.fori_loop``. ``"pallas"`` runs the whole recurrence in one Pallas kernel
            with ``W_h`` held on chip: Mosaic TPU on TPU, Mosaic GPU on Hopper GPUs,
            Triton on other GPUs, and on CPU the TPU kernel in Pallas' interpret mode
            (slow: for tests). It takes float32 and bfloat16 (float32 state and
            accumulation on chip) and ``hidden_size`` up to 128 (float32) or 256
            (bfloat16); ``unroll`` unrolls its step loop (``True`` counts as 1). Its
            derivatives are the scan loop's (:func:`jrnn.rnn` runs the adjoint kernel for
            ``jax.grad``). ``"auto"`` is ``"scan"`` on every backend until a measurement
            on an accelerator shows the kernels winning (the one statement of this
            status; the accelerators guide links here), unless a ``tuning`` table says
            otherwise.
        grad: how reverse mode differentiates :func:`jrnn.rnn` (and every layer, model,
            train step and module built on it): ``"bptt"`` (default), the hand-written
            BPTT as its ``custom_vjp`` (forward-over-reverse such as ``jax.hessian`` works;
            forward mode of the outputs, ``jax.jvp``/``jacfwd``/``linearize``, does not);
            ``"autodiff"``, the plain loop, which JAX differentiates in either mode.
            :func:`jrnn.forward` is always the plain loop.
        tuning: ``None`` (default) or a dispatch table measured on your device by
            ``jrnn bench --tune OUT.json`` and read by :func:`jrnn.bench.load_tuning`:
            ``impl="auto"`` then runs what the table chose for the call's dtype and shape
            bucket, decided when the call is traced (the scan loop where it holds no
            such bucket, or the kernels cannot hold the call). Used only where passed.
    """

    activation: str | Callable[[jax.Array], jax.Array] | Activation
    reverse: bool
    lengths: Int[ArrayLike, "*batch"] | None
    unroll: int | bool
    time_major: bool
    recurrent_mask: Float[ArrayLike, "*batch hidden"] | None
    impl: str
    grad: str
    tuning: TuningTable | None


class ParallelOptions(TypedDict, total=False):
    """The keyword options of the :mod:`jrnn.parallel` entry points (as :class:`ScanOptions`)."""

    activation: str | Callable[[jax.Array], jax.Array] | Activation
    reverse: bool
    lengths: Int[ArrayLike, "*batch"] | None
    time_major: bool


DEFAULTS: ScanOptions = {
    "activation": "tanh",
    "reverse": False,
    "lengths": None,
    "unroll": 1,
    "time_major": False,
    "recurrent_mask": None,
    "impl": "auto",
    "grad": "bptt",
    "tuning": None,
}
SCAN_KEYS = tuple(DEFAULTS)
"""The options every sequential entry point takes."""
PARALLEL_KEYS = ("activation", "reverse", "lengths", "time_major")
"""The options the parallel-in-time entry points take (no unroll, no recurrent mask)."""
GRADS = ("bptt", "autodiff")
"""The values of ``grad``."""


@dataclass(frozen=True)
class Options:
    """The static options of one recurrence: hashable, traced as one static argument.

    Attributes:
        act: the activation.
        reverse: run from the last (valid) step to the first.
        unroll: the loop unroll factor (an int >= 1 or ``True``).
        layout: where the time axis of ``xs`` and ``hs`` lies: ``"btf"`` or ``"tbf"``.
        forms: ``None`` for the loops (``impl="scan"``), else the kernel form per
            platform (``impl="pallas"``), chosen when the call is prepared
            (:func:`jrnn._src.kernels.forms.kernel_forms`): part of the static key of the
            jitted loops, so a changed ``$JRNN_GPU_KERNELS`` counts at the next call.
        grad: ``"bptt"`` or ``"autodiff"``: how :func:`jrnn.rnn` is differentiated.
    """

    act: Activation
    reverse: bool = False
    unroll: int | bool = 1
    layout: str = "btf"
    forms: tuple[Form, ...] | None = None
    grad: str = "bptt"

    @property
    def impl(self) -> str:
        """What runs the recurrence: ``"scan"`` (the loops) or ``"pallas"`` (the kernels)."""
        return "scan" if self.forms is None else "pallas"

    @property
    def axis(self) -> int:
        """The time axis of ``xs``, ``hs`` and their cotangents."""
        return self.layout.index("t")

    @property
    def h_layout(self) -> str:
        """The einsum layout of ``hs`` (``H`` in place of ``F``)."""
        return self.layout.replace("f", "h")


class Operands(NamedTuple):
    """The arrays of one recurrence, in the internal layout (see :class:`Options`).

    Attributes:
        params: ``RNNParams(w_x (F, H), w_h (H, H), b (H,))`` in the compute dtype.
        xs: `(B, T, F)` (layout ``"btf"``) or `(T, B, F)` (``"tbf"``); zero at padded steps.
        h0: `(B, H)`.
        lengths: `(B,)` int32 in ``[0, T]``, or ``None`` (every step valid).
        mask: `(B, H)` multiplier of ``h_{t-1}`` before ``W_h``, or ``None``.
    """

    params: RNNParams
    xs: jax.Array
    h0: jax.Array
    lengths: jax.Array | None = None
    mask: jax.Array | None = None


class Prepared(NamedTuple):
    """A validated call: its operands, its options and whether the caller's ``xs`` had a
    batch axis (the caller's layout is then ``opts.layout``; an unbatched call runs as
    `(T, 1, ...)`).

    Attributes:
        ops: the :class:`Operands`.
        opts: the :class:`Options`.
        batched: whether the caller's ``xs`` had a batch axis.
    """

    ops: Operands
    opts: Options
    batched: bool

    @property
    def num_steps(self) -> int:
        return self.ops.xs.shape[self.opts.axis]  # an int, or symbolic under jax.export

    @property
    def batch_size(self) -> int:
        return self.ops.h0.shape[0]

    @property
    def hs_shape(self) -> tuple[int, ...]:
        """The shape of ``hs`` in the caller's layout."""
        t, b, h = self.num_steps, self.batch_size, self.ops.h0.shape[1]
        if not self.batched:
            return (t, h)
        return (t, b, h) if self.opts.axis == 0 else (b, t, h)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """The shape of ``h0``/``h_last`` in the caller's layout."""
        return tuple(self.ops.h0.shape) if self.batched else (self.ops.h0.shape[1],)

    def hs_to_internal(self, hs: jax.Array) -> jax.Array:
        """Caller-layout hidden states to the internal layout (unbatched gains `B = 1`)."""
        return hs if self.batched else hs[:, None, :]

    def to_caller(self, hs: jax.Array) -> jax.Array:
        """Internal-layout `(..., T, ...)` arrays (``hs``, ``dL/dxs``) to the caller's layout."""
        return hs if self.batched else hs[:, 0, :]

    def state_to_caller(self, h: jax.Array) -> jax.Array:
        """`(B, H)` to the caller's `(B, H)` or, unbatched, `(H,)`."""
        return h if self.batched else h[0]


def check_params(params: Any) -> RNNParams:
    """Checks that ``params`` is an :class:`RNNParams` of consistent float arrays.

    ``hidden_size`` is read from ``w_h``, so a transposed ``w_x`` is blamed on ``w_x``.

    Returns:
        The params with every field as an array (lists are converted).
    """
    if not isinstance(params, RNNParams):
        raise TypeError(
            f"params must be a jrnn.RNNParams(w_x, w_h, b) NamedTuple; got {type(params).__name__}"
        )
    w_x, w_h, b = (as_array(p, f"params.{n}") for p, n in zip(params, params._fields, strict=True))
    for arr, field in zip((w_x, w_h, b), params._fields, strict=True):
        check_float(arr, f"params.{field}")
    wx_shape, wh_shape, b_shape = (tuple(int(s) for s in a.shape) for a in (w_x, w_h, b))
    if len(wx_shape) != 2:
        raise ValueError(f"params.w_x must be 2-D (input_size, hidden_size); got shape {wx_shape}")
    if 0 in wx_shape:
        raise ValueError(f"params.w_x must have positive sizes; got shape {wx_shape}")
    if len(wh_shape) != 2 or wh_shape[0] != wh_shape[1] or not wh_shape[0]:
        h = wx_shape[1]
        raise ValueError(
            f"params.w_h must have shape (hidden_size, hidden_size) = ({h}, {h}) to match "
            f"params.w_x {wx_shape}; got {wh_shape}"
        )
    h = wh_shape[0]
    if wx_shape[1] != h and b_shape == (wx_shape[1],):  # w_x and b agree: w_h is the odd one
        raise ValueError(
            f"params.w_h must have shape (hidden_size, hidden_size) = ({wx_shape[1]}, "
            f"{wx_shape[1]}) to match params.w_x {wx_shape} and params.b {b_shape}; got {wh_shape}"
        )
    if wx_shape[1] != h:
        hint = (
            " (transposed? jrnn's w_x is (input_size, hidden_size); PyTorch's weight_ih_l0 is "
            "its transpose, see jrnn.interop.from_torch)"
            if wx_shape[0] == h
            else ""
        )
        raise ValueError(
            f"params.w_x must have shape (input_size, hidden_size) = (input_size, {h}) to match "
            f"params.w_h {wh_shape}; got {wx_shape}{hint}"
        )
    if b_shape != (h,):
        raise ValueError(
            f"params.b must have shape (hidden_size,) = ({h},) to match params.w_x "
            f"{wx_shape}; got {b_shape}"
        )
    return RNNParams(w_x, w_h, b)


def _check_lengths(lengths: Any, batched: bool, batch: int, steps: int) -> jax.Array:
    lengths = as_array(lengths, "lengths")
    dt = jnp.dtype(lengths.dtype)
    if not jnp.issubdtype(dt, jnp.integer) or dt == jnp.bool_:
        raise TypeError(f"lengths must have an integer dtype; got {dt}")
    expected = (batch,) if batched else ()
    if tuple(lengths.shape) != expected:
        what = "(batch,)" if batched else "() (a scalar, for unbatched xs)"
        raise ValueError(f"lengths must have shape {what} = {expected}; got {tuple(lengths.shape)}")
    value = concrete(lengths)
    # a symbolic T (jax.export) has no value to check against: clipped below, as traced values
    if value is not None and not known(steps):
        value = None
    if value is not None and value.size and (value.min() < 0 or value.max() > steps):
        raise ValueError(
            f"lengths must lie in [0, T] = [0, {steps}]; got values from {value.min()} "
            f"to {value.max()}"
        )
    # Traced values are not checked: clip in their own dtype (a cast first could wrap).
    clipped = jnp.clip(jnp.asarray(lengths), 0, steps).astype(jnp.int32)
    return jnp.reshape(clipped, (batch,))


def _check_flags(options: Mapping[str, Any]) -> None:
    for name in ("reverse", "time_major"):
        check_bool(name, options[name])
    if not isinstance(options["unroll"], bool | np.bool_):  # True: a full unroll
        positive_int("unroll", options["unroll"], "or a bool")
    check_impl(options["impl"])
    check_choice("grad", options["grad"], GRADS)
    tuning = options["tuning"]
    if tuning is not None and not isinstance(tuning, TuningTable):
        raise TypeError(
            "tuning must be None or a table with a choose() method (jrnn.TuningTable), such "
            f"as jrnn.bench.load_tuning's; got {type(tuning).__name__}"
        )


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of the strings ``choices`` (``impl``, ``grad``).

    Raises:
        TypeError: not a string.
        ValueError: a string not in ``choices``.
    """
    if not isinstance(value, str):
        kind = type(value).__name__
        raise TypeError(f"{name} must be a string, one of {choices}; got {kind} {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return value


def check_impl(impl: Any) -> str:
    """``impl`` if it is one of :data:`IMPLS` (the one check of it, the adapters' too)."""
    return check_choice("impl", impl, IMPLS)


def _resolve_impl(
    impl: str,
    dtype: Any,
    shape: tuple[int, int, int],
    tuning: TuningTable | None,
    act: Activation,
) -> str:
    """``"scan"`` or ``"pallas"`` for a call of ``dtype`` and ``shape`` `(B, T, H)`: ``"auto"``
    runs the loops unless a ``tuning`` table chose the kernels for this call's bucket and
    they can hold it (a known shape, a dtype, hidden size and activation they take); a
    call the kernels cannot hold for ``"pallas"`` is a ValueError."""
    batch, steps, hidden = shape
    symbolic = not known(*shape)
    if impl == "auto":
        if symbolic or tuning is None or tuning.choose(dtype, batch, steps, hidden) != "pallas":
            return "scan"
        return "scan" if _kernels_refuse(dtype, hidden, act) else "pallas"
    if impl != "pallas":
        return "scan"
    if symbolic:
        raise ValueError(
            f"impl='pallas' tiles a known shape; got xs with symbolic dimensions (batch "
            f"{batch}, time {steps}): export with impl='scan' or 'auto' for symbolic shapes"
        )
    refused = _kernels_refuse(dtype, hidden, act)
    if refused:
        raise ValueError(refused)
    return "pallas"


def _kernels_refuse(dtype: Any, hidden: int, act: Activation) -> str | None:
    """Why the kernels cannot hold a call of ``dtype``, ``hidden`` units and ``act``, or
    ``None``."""
    if not act.builtin:
        return (
            f"impl='pallas' runs the built-in activations {sorted(ACTIVATIONS)}; got the "
            f"callable {act.name!r} (use impl='scan' or 'auto')"
        )
    dtype = jnp.dtype(dtype)
    if dtype not in DTYPES:
        names = " or ".join(str(d) for d in DTYPES)
        return (
            f"impl='pallas' computes in {names}; got {dtype} operands (use impl='scan', or "
            f"cast the params and xs)"
        )
    limit = MAX_HIDDEN[dtype]
    if hidden > limit:
        return (
            f"impl='pallas' holds W_h on chip for hidden_size <= {limit} in {dtype}; got "
            f"hidden_size {hidden} (params.w_h shape ({hidden}, {hidden})): use impl='scan'"
        )
    return None


def _resolve(options: Mapping[str, Any], caller: str, accepted: tuple[str, ...]) -> dict[str, Any]:
    """The caller's keyword options over the defaults; unknown keywords are a TypeError."""
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise TypeError(
            f"{caller}() got an unexpected keyword argument {unknown[0]!r}; "
            f"its options are {', '.join(accepted)}"
        )
    return {**DEFAULTS, **options}


def _state_arg(x: Any, name: str, shape: tuple[int, ...], batched: bool) -> Any:
    x = as_array(x, name)
    check_float(x, name)
    if tuple(x.shape) != shape:
        what = "(batch, hidden_size)" if batched else "(hidden_size,) for unbatched xs"
        raise ValueError(f"{name} must have shape {what} = {shape}; got {tuple(x.shape)}")
    return x


def prepare(
    params: Any,
    xs: Any,
    h0: Any,
    options: Mapping[str, Any],
    *,
    caller: str,
    accepted: tuple[str, ...] = SCAN_KEYS,
) -> Prepared:
    """Validates an entry point's arguments and normalises them into a :class:`Prepared`.

    Args:
        params, xs, h0: as given to the entry point.
        options: its keyword options (see :class:`ScanOptions`); missing ones take the
            defaults.
        caller: the entry point's name, for the message about an unknown keyword.
        accepted: the options it takes.

    Returns:
        The :class:`Prepared` call. With ``lengths``, ``xs`` is zero at padded steps, so
        nothing a padded step holds (NaN included) reaches a value or a gradient.
    """
    o = _resolve(options, caller, accepted)
    act = get_activation(o["activation"])
    _check_flags(o)
    params = check_params(params)
    xs, layout = _check_xs(xs, params, bool(o["time_major"]))
    batched = xs.ndim == 3
    # ints, or symbolic dimensions under jax.export (never int() of one)
    steps = xs.shape[layout.index("t")] if batched else xs.shape[0]
    batch = xs.shape[layout.index("b")] if batched else 1
    h = params.w_h.shape[0]
    state_shape = (batch, h) if batched else (h,)
    if h0 is not None:
        h0 = _state_arg(h0, "h0", state_shape, batched)
    lengths = o["lengths"]
    if lengths is not None:
        lengths = _check_lengths(lengths, batched, batch, steps)
    mask = o["recurrent_mask"]
    if mask is not None:
        mask = _state_arg(mask, "recurrent_mask", state_shape, batched)
    ops, varying = _normalise(params, xs, h0, lengths, mask, layout)
    forms = None
    dtype = ops.xs.dtype
    if _resolve_impl(o["impl"], dtype, (batch, steps, h), o["tuning"], act) == "pallas":
        # an explicitly sharded batch runs the kernels inside a shard_map: varying operands
        forms = kernel_forms(varying=varying or explicit_sharding(ops.xs) is not None)
    opts = Options(act, bool(o["reverse"]), o["unroll"], layout, forms, o["grad"])
    return Prepared(ops, opts, batched)


def _check_xs(xs: Any, params: RNNParams, time_major: bool) -> tuple[Any, str]:
    """``xs`` checked against ``params``, and its layout (``"btf"`` or ``"tbf"``; unbatched
    `(T, F)` runs as ``"tbf"``)."""
    f, h = params.w_x.shape
    xs = as_array(xs, "xs")
    check_float(xs, "xs")
    if xs.ndim not in (2, 3):
        layout = "(time, batch, features)" if time_major else "(batch, time, features)"
        raise ValueError(
            f"xs must be {layout} or unbatched (time, features); got shape {tuple(xs.shape)}"
        )
    if xs.shape[-1] != f:
        raise ValueError(
            f"xs has {xs.shape[-1]} features (last axis of shape {tuple(xs.shape)}) but "
            f"params.w_x expects input_size = {f} (w_x shape {(f, h)})"
        )
    return xs, "btf" if xs.ndim == 3 and not time_major else "tbf"


def _normalise(
    params: RNNParams, xs: Any, h0: Any, lengths: Any, mask: Any, layout: str
) -> tuple[Operands, bool]:
    """The checked arrays as :class:`Operands` of one dtype, in ``layout`` with a batch axis,
    typed alike (sharding, varying axes); and whether they vary along manual mesh axes."""
    # numpy float64 input without x64 is computed in float32, silently, as JAX does
    dtype = jnp.result_type(*params, xs, *(() if h0 is None else (h0,)))
    params = RNNParams(*(jnp.asarray(p, dtype) for p in params))
    xs = jnp.asarray(xs, dtype)
    if xs.ndim == 2:
        xs = xs[:, None, :]
    axis = layout.index("t")
    batch, h = xs.shape[1 - axis], params.w_h.shape[0]
    if lengths is not None:
        # padded steps read zeros: a NaN there would otherwise reach dW_x (0 * NaN) and,
        # through autodiff of the loop's select, every gradient
        steps = xs.shape[axis]
        valid = jnp.expand_dims(jnp.arange(steps)[:, None] < lengths[None, :], -1)  # (T, B, 1)
        xs = jnp.where(valid if axis == 0 else jnp.swapaxes(valid, 0, 1), xs, 0)
    # The state takes the type of the data: xs' batch sharding on an Explicit mesh, so the
    # loop's carry keeps one type from h0 to h_last (a replicated zero state would leave
    # the first step batch-sharded)
    zero = _zero_state(xs, axis, h)
    h0 = zero if h0 is None else reshard_like(jnp.reshape(jnp.asarray(h0, dtype), (batch, h)), zero)
    if mask is not None:
        mask = reshard_like(jnp.reshape(jnp.asarray(mask, dtype), (batch, h)), zero)
    # ... and the varying manual axes of every operand (inside shard_map): one type for the
    # carry, and the custom_vjp's inputs vary as its outputs do, so its backward returns
    # cotangents of its inputs' own types; the cast's transpose (a psum) is JAX's own
    (params, xs, h0, lengths, mask), varying = _vary_together(params, xs, h0, lengths, mask)
    return Operands(params, xs, h0, lengths, mask), varying


def _zero_state(xs: jax.Array, axis: int, hidden: int) -> jax.Array:
    """`(B, hidden)` zeros of the type of ``xs``' batch (its sharding, its varying axes)."""
    first = lax.slice_in_dim(xs, 0, min(1, xs.shape[axis]), axis=axis)  # T = 0 included
    column = jnp.zeros_like(jnp.sum(first[..., :1], axis=axis))  # (B, 1)
    return jnp.broadcast_to(column, (*column.shape[:-1], hidden))


def _vary_together(*operands: Any) -> tuple[tuple[Any, ...], bool]:
    """The operands (pytrees, ``None`` kept) cast to vary along every manual axis along
    which any of them varies, and whether there is any such axis."""
    axes = frozenset().union(*(varying_axes(leaf) for leaf in jax.tree.leaves(operands)))
    if not axes:
        return operands, False
    return jax.tree.map(lambda a: vary(a, axes), operands), True


def check_like(x: Any, name: str, shape: tuple[int, ...], what: str, dtype: Any) -> jax.Array:
    """Checks a float array argument against an exact shape and casts it to ``dtype``."""
    x = as_array(x, name)
    check_float(x, name)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(
            f"{name} must have the shape of {what}, {tuple(shape)}; got {tuple(x.shape)}"
        )
    return jnp.asarray(x, dtype)


def prepare_cotangents(
    p: Prepared, hs: Any, dhs: Any, dh_last: Any
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """Checks a backward pass's ``hs``, ``dhs`` and ``dh_last`` against the prepared
    arguments; returns them in the internal layout (``None`` kept)."""
    dtype = p.ops.h0.dtype
    hs = p.hs_to_internal(check_like(hs, "hs", p.hs_shape, "forward's hs", dtype))
    if dhs is not None:
        dhs = p.hs_to_internal(check_like(dhs, "dhs", p.hs_shape, "hs", dtype))
    if dh_last is not None:
        dh_last = check_like(dh_last, "dh_last", p.state_shape, "h_last", dtype)
        dh_last = jnp.reshape(dh_last, p.ops.h0.shape)
    return hs, dhs, dh_last
