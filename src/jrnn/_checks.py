"""Argument validation and layout normalisation shared by ``forward``, ``backward`` and ``rnn``.

Everything here runs in Python at trace time, on shapes and dtypes only (and on
the values of ``lengths`` when they are concrete), so a wrong argument raises a
``TypeError``/``ValueError`` that names it instead of an XLA error.

Internally every array stays in the caller's layout (``"btf"`` or ``"tbf"``):
the loops index the time axis wherever it is, and the GEMMs before and after
them contract over all ``T * B`` rows as they lie, so nothing is transposed.
Unbatched input gains a batch axis of 1 (a free reshape).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.activations import Activation, get_activation
from jrnn.params import RNNParams


class Prepared(NamedTuple):
    """Validated arguments in the internal layout.

    Attributes:
        params: the params cast to the compute dtype.
        xs: `(B, T, F)` if ``x_layout == "btf"`` else `(T, B, F)`.
        h0: `(B, H)`, zeros when the caller gave none.
        lengths: `(B,)` int32, or ``None``.
        act: the activation.
        x_layout: ``"btf"`` or ``"tbf"``.
        batched: whether the caller's ``xs`` had a batch axis.
        time_major: whether the caller's arrays are time-major.
        recurrent_mask: `(B, H)` multiplier of ``h_{t-1}`` before ``W_h``, or ``None``.
    """

    params: RNNParams
    xs: jax.Array
    h0: jax.Array
    lengths: jax.Array | None
    act: Activation
    x_layout: str
    batched: bool
    time_major: bool
    recurrent_mask: jax.Array | None = None

    @property
    def num_steps(self) -> int:
        return int(self.xs.shape[self.x_layout.index("t")])

    @property
    def batch_size(self) -> int:
        return int(self.xs.shape[self.x_layout.index("b")])

    @property
    def hs_shape(self) -> tuple[int, ...]:
        """The shape of ``hs`` in the caller's layout."""
        t, b, h = self.num_steps, self.batch_size, int(self.h0.shape[1])
        if not self.batched:
            return (t, h)
        return (t, b, h) if self.time_major else (b, t, h)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """The shape of ``h0``/``h_last`` in the caller's layout."""
        return tuple(self.h0.shape) if self.batched else (int(self.h0.shape[1]),)

    def hs_to_internal(self, hs: jax.Array) -> jax.Array:
        """Caller-layout hidden states to the internal layout (unbatched gains `B = 1`)."""
        return hs if self.batched else hs[:, None, :]

    def hs_to_caller(self, hs: jax.Array) -> jax.Array:
        """Internal-layout hidden states to the caller's layout."""
        return hs if self.batched else hs[:, 0, :]

    def state_to_caller(self, h: jax.Array) -> jax.Array:
        """`(B, H)` to the caller's `(B, H)` or, unbatched, `(H,)`."""
        return h if self.batched else h[0]

    def xs_to_caller(self, dxs: jax.Array) -> jax.Array:
        """An array in ``x_layout`` back to the caller's layout of ``xs``."""
        return dxs if self.batched else dxs[:, 0, :]


def _array(x: Any, name: str) -> Any:
    """Returns ``x`` if it is array-like with a shape and dtype, else ``np.asarray(x)``."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return x
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name} must be an array; got {type(x).__name__} ({e})") from None


def _check_float(x: Any, name: str) -> None:
    dt = jnp.dtype(x.dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        kind = "complex" if jnp.issubdtype(dt, jnp.complexfloating) else "non-float"
        raise TypeError(
            f"{name} must have a real floating dtype (float16/bfloat16/float32/float64); "
            f"got {kind} dtype {dt}"
        )


def check_params(params: Any) -> RNNParams:
    """Checks that ``params`` is an :class:`RNNParams` of consistent float arrays.

    Returns:
        The params with every field as an array (lists are converted).
    """
    if not isinstance(params, RNNParams):
        raise TypeError(
            f"params must be a jrnn.RNNParams(w_x, w_h, b) NamedTuple; got {type(params).__name__}"
        )
    w_x, w_h, b = (_array(p, f"params.{n}") for p, n in zip(params, params._fields, strict=True))
    for arr, field in zip((w_x, w_h, b), params._fields, strict=True):
        _check_float(arr, f"params.{field}")
    if w_x.ndim != 2:
        raise ValueError(
            f"params.w_x must be 2-D (input_size, hidden_size); got shape {tuple(w_x.shape)}"
        )
    f, h = (int(s) for s in w_x.shape)
    if f == 0 or h == 0:
        raise ValueError(f"params.w_x must have positive sizes; got shape {tuple(w_x.shape)}")
    if tuple(w_h.shape) != (h, h):
        raise ValueError(
            f"params.w_h must have shape (hidden_size, hidden_size) = ({h}, {h}) to match "
            f"params.w_x {tuple(w_x.shape)}; got {tuple(w_h.shape)}"
        )
    if tuple(b.shape) != (h,):
        raise ValueError(
            f"params.b must have shape (hidden_size,) = ({h},) to match params.w_x "
            f"{tuple(w_x.shape)}; got {tuple(b.shape)}"
        )
    return RNNParams(w_x, w_h, b)


def _concrete(x: Any) -> np.ndarray | None:
    """The value of ``x`` if it is known at trace time, else ``None``."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_lengths(lengths: Any, batched: bool, batch: int, steps: int) -> jax.Array:
    lengths = _array(lengths, "lengths")
    dt = jnp.dtype(lengths.dtype)
    if not jnp.issubdtype(dt, jnp.integer) or dt == jnp.bool_:
        raise TypeError(f"lengths must have an integer dtype; got {dt}")
    expected = (batch,) if batched else ()
    if tuple(lengths.shape) != expected:
        what = "(batch,)" if batched else "() (a scalar, for unbatched xs)"
        raise ValueError(f"lengths must have shape {what} = {expected}; got {tuple(lengths.shape)}")
    value = _concrete(lengths)
    if value is not None and value.size and (value.min() < 0 or value.max() > steps):
        raise ValueError(
            f"lengths must lie in [0, T] = [0, {steps}]; got values from {value.min()} "
            f"to {value.max()}"
        )
    # Traced values are not checked: clip in their own dtype (a cast first could wrap).
    clipped = jnp.clip(jnp.asarray(lengths), 0, steps).astype(jnp.int32)
    return jnp.reshape(clipped, (batch,))


def _check_options(reverse: Any, unroll: Any, time_major: Any) -> None:
    for name, value in (("reverse", reverse), ("time_major", time_major)):
        if not isinstance(value, bool | np.bool_):
            raise TypeError(f"{name} must be a bool; got {type(value).__name__} {value!r}")
    if isinstance(unroll, bool | np.bool_):
        return
    if not isinstance(unroll, int | np.integer) or unroll < 1:
        raise ValueError(f"unroll must be a positive int or a bool; got {unroll!r}")


def prepare(
    params: Any,
    xs: Any,
    h0: Any,
    *,
    activation: Any,
    reverse: Any,
    lengths: Any,
    unroll: Any,
    time_major: Any,
    recurrent_mask: Any = None,
) -> Prepared:
    """Validates the arguments of ``forward``/``rnn``/``backward`` and normalises them."""
    act = get_activation(activation)
    _check_options(reverse, unroll, time_major)
    params = check_params(params)
    f, h = params.w_x.shape
    xs = _array(xs, "xs")
    _check_float(xs, "xs")
    batched = xs.ndim == 3
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
    if batched:
        x_layout = "tbf" if time_major else "btf"
        steps, batch = (xs.shape[0], xs.shape[1]) if time_major else (xs.shape[1], xs.shape[0])
    else:
        x_layout, steps, batch = "tbf", xs.shape[0], 1
    steps, batch = int(steps), int(batch)
    state_shape = (batch, h) if batched else (h,)
    if h0 is not None:
        h0 = _array(h0, "h0")
        _check_float(h0, "h0")
        if tuple(h0.shape) != state_shape:
            what = "(batch, hidden_size)" if batched else "(hidden_size,) for unbatched xs"
            raise ValueError(f"h0 must have shape {what} = {state_shape}; got {tuple(h0.shape)}")
    if lengths is not None:
        lengths = _check_lengths(lengths, batched, batch, steps)
    if recurrent_mask is not None:
        recurrent_mask = _array(recurrent_mask, "recurrent_mask")
        _check_float(recurrent_mask, "recurrent_mask")
        if tuple(recurrent_mask.shape) != state_shape:
            what = "(batch, hidden_size)" if batched else "(hidden_size,) for unbatched xs"
            raise ValueError(
                f"recurrent_mask must have shape {what} = {state_shape}; "
                f"got {tuple(recurrent_mask.shape)}"
            )

    dtype = jnp.result_type(*params, xs, *(() if h0 is None else (h0,)))
    params = RNNParams(*(jnp.asarray(p, dtype) for p in params))
    xs = jnp.asarray(xs, dtype)
    if not batched:
        xs = xs[:, None, :]
    h0 = (
        jnp.zeros((batch, h), dtype)
        if h0 is None
        else jnp.reshape(jnp.asarray(h0, dtype), (batch, h))
    )
    if recurrent_mask is not None:
        recurrent_mask = jnp.reshape(jnp.asarray(recurrent_mask, dtype), (batch, h))
    return Prepared(
        params, xs, h0, lengths, act, x_layout, batched, bool(time_major), recurrent_mask
    )


def check_like(x: Any, name: str, shape: tuple[int, ...], what: str, dtype: Any) -> jax.Array:
    """Checks a float array argument against an exact shape and casts it to ``dtype``."""
    x = _array(x, name)
    _check_float(x, name)
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
    dtype = p.h0.dtype
    hs = p.hs_to_internal(check_like(hs, "hs", p.hs_shape, "forward's hs", dtype))
    if dhs is not None:
        dhs = p.hs_to_internal(check_like(dhs, "dhs", p.hs_shape, "hs", dtype))
    if dh_last is not None:
        dh_last = check_like(dh_last, "dh_last", p.state_shape, "h_last", dtype)
        dh_last = jnp.reshape(dh_last, p.h0.shape)
    return hs, dhs, dh_last
