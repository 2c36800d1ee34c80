"""What the flax linen and NNX drop-ins share: the cell's activation, the checks of the
call, and ``nn.RNN``'s call semantics around one :func:`jrnn.rnn` call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jrnn._src.extras import missing_extra

try:
    from flax.linen.recurrent import flip_sequences
except ModuleNotFoundError as err:
    raise missing_extra(err, "jrnn.flax and jrnn.nnx") from None

from jrnn._src.rnn import rnn
from jrnn._src.validate import check_bool
from jrnn.params import RNNParams

__all__ = ["cell_activation", "run_module", "step_shape"]


def cell_activation(fn: Any, caller: str) -> Callable[[jax.Array], jax.Array]:
    """A cell's ``activation_fn``, as :func:`jrnn.rnn` takes it: ``nn.tanh``, ``nn.relu``
    and ``nnx.identity`` run as jrnn's built-ins (by identity, :mod:`jrnn.activations`), any
    other elementwise callable with its derivative from JAX.

    Raises:
        TypeError: ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(
            f"{caller}: the cell's activation_fn must be callable; got {type(fn).__name__} {fn!r}"
        )
    return fn


def _check_flags(caller: str, **flags: Any) -> None:
    """Checks that each of ``flags`` is a Python bool (they select code paths at trace time)."""
    for name, value in flags.items():
        check_bool(name, value, f"{caller}: ")


def step_shape(
    inputs: jax.Array, time_major: bool, input_size: int | None, caller: str
) -> tuple[int, ...]:
    """The shape of one step of ``inputs`` (``inputs.shape`` without its time axis).

    Args:
        inputs: `(*batch, T, F)`, or `(T, *batch, F)` if ``time_major``.
        time_major: where the time axis is.
        input_size: the ``F`` the cell's kernel expects, or ``None`` (not created yet).
        caller: the adapter's name, for the messages.

    Returns:
        `(*batch, F)`.
    """
    shape = tuple(int(s) for s in jnp.shape(inputs))
    if len(shape) < 2:
        layout = "(time, *batch, features)" if time_major else "(*batch, time, features)"
        raise ValueError(f"{caller}: inputs must be {layout}; got shape {shape}")
    if input_size is not None and shape[-1] != input_size:
        raise ValueError(
            f"{caller}: inputs have {shape[-1]} features (last axis of shape {shape}) but the "
            f"cell's input kernel has shape ({input_size}, hidden_size)"
        )
    time_axis = 0 if time_major else len(shape) - 2
    return shape[:time_axis] + shape[time_axis + 1 :]


def _run(
    params: RNNParams,
    inputs: jax.Array,
    carry: jax.Array,
    *,
    activation: Callable[[jax.Array], jax.Array],
    seq_lengths: Any,
    return_carry: bool,
    time_major: bool,
    reverse: bool,
    keep_order: bool,
    unroll: int,
    impl: str,
    grad: str,
    caller: str,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """``nn.RNN``'s call semantics around one :func:`jrnn.rnn` call.

    The batch axes are flattened into one (jrnn takes one), ``reverse`` flips each
    sequence's valid steps with flax's own ``flip_sequences``, the recurrence runs over
    all ``T`` steps as flax's scan does, and with ``seq_lengths`` the carry is read from
    the outputs at index ``seq_lengths - 1``, as flax's ``_select_last_carry``.

    Args:
        params: ``RNNParams(w_x (F, H), w_h (H, H), b (H,))``, in the compute dtype.
        inputs: `(*batch, T, F)` (`(T, *batch, F)` if ``time_major``), compute dtype.
        carry: `(*batch, H)` initial state.
        activation: the cell's activation function.
        seq_lengths: `(*batch)` integers, or ``None``.
        return_carry: as ``nn.RNN``.
        time_major: as ``nn.RNN``.
        reverse: as ``nn.RNN``.
        keep_order: as ``nn.RNN``.
        unroll: passed to :func:`jrnn.rnn`.
        impl: passed to :func:`jrnn.rnn`.
        grad: passed to :func:`jrnn.rnn`.
        caller: the adapter's name, for the messages.

    Returns:
        ``outputs`` `(*batch, T, H)` (`(T, *batch, H)` if ``time_major``), or
        ``(carry (*batch, H), outputs)`` if ``return_carry``.
    """
    _check_flags(
        caller,
        return_carry=return_carry,
        time_major=time_major,
        reverse=reverse,
        keep_order=keep_order,
    )
    shape = tuple(inputs.shape)
    hidden = params.hidden_size
    batch_dims = shape[1:-1] if time_major else shape[:-2]
    steps = shape[0] if time_major else shape[-2]
    batch = math.prod(batch_dims)
    if tuple(carry.shape) != (*batch_dims, hidden):
        raise ValueError(
            f"{caller}: initial_carry must have shape (*batch, hidden_size) = "
            f"{(*batch_dims, hidden)} for inputs of shape {shape}; got {tuple(carry.shape)}"
        )
    lengths = None
    if seq_lengths is not None:
        lengths = jnp.asarray(seq_lengths)
        if not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise TypeError(f"{caller}: seq_lengths must be integers; got dtype {lengths.dtype}")
        if tuple(lengths.shape) != batch_dims:
            raise ValueError(
                f"{caller}: seq_lengths must have the batch shape {batch_dims} of inputs "
                f"{shape}; got {tuple(lengths.shape)}"
            )
        lengths = lengths.reshape(batch)
    # one batch axis, where jrnn wants it: (T, B, F) time-major, else (B, T, F)
    xs = inputs.reshape((steps, batch, shape[-1]) if time_major else (batch, steps, shape[-1]))

    def flip(a: jax.Array) -> jax.Array:
        return flip_sequences(a, lengths, num_batch_dims=1, time_major=time_major)

    if reverse:
        xs = flip(xs)
    hs, h_last = rnn(
        params,
        xs,
        carry.reshape(batch, hidden),
        activation=activation,
        time_major=time_major,
        unroll=unroll,
        impl=impl,
        grad=grad,
    )
    if return_carry and lengths is not None:
        # the state at each sequence's last valid step (index -1, length 0, wraps as flax's)
        rows = jnp.arange(batch)
        h_last = hs[lengths - 1, rows] if time_major else hs[rows, lengths - 1]
    if reverse and keep_order:
        hs = flip(hs)
    outputs = hs.reshape(
        (steps, *batch_dims, hidden) if time_major else (*batch_dims, steps, hidden)
    )
    if return_carry:
        return h_last.reshape((*batch_dims, hidden)), outputs
    return outputs


def _cell_params(w_i: jax.Array, b_i: jax.Array, w_h: jax.Array, residual: bool) -> RNNParams:
    """The cell's weights as jrnn's params (``residual`` folded into ``w_h`` as ``+ I``)."""
    if residual:  # act(x W_i + b + h W_h + h) = act(x W_i + b + h (W_h + I))
        w_h = w_h + jnp.eye(w_h.shape[0], dtype=w_h.dtype)
    return RNNParams(w_i, w_h, b_i)


def run_module(
    module: Any,
    weights: tuple[jax.Array, jax.Array, jax.Array],
    xs: jax.Array,
    carry: jax.Array,
    *,
    seq_lengths: Any,
    overrides: dict[str, bool | None],
    time_major: bool,
    caller: str,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """:func:`_run` for an adapter ``module`` (linen or NNX): its cell's activation and
    ``residual``, its ``unroll``, ``impl`` and ``grad``; each of the call's ``overrides``
    (``return_carry``, ``reverse``, ``keep_order``) left ``None`` takes the module's value.

    Args:
        module: the adapter (``cell``, ``return_carry``, ``reverse``, ``keep_order``,
            ``unroll``, ``impl``, ``grad`` attributes).
        weights: ``(w_i (F, H), b_i (H,), w_h (H, H))`` in the compute dtype.
        xs: the inputs, as :func:`_run`.
        carry: the initial state, as :func:`_run`.
        seq_lengths: as :func:`_run`.
        overrides: the call's ``return_carry``, ``reverse`` and ``keep_order``.
        time_major: the layout, resolved.
        caller: the adapter's name, for the messages.

    Returns:
        As :func:`_run`.
    """
    cell = module.cell
    given = {k: getattr(module, k) if v is None else v for k, v in overrides.items()}
    return _run(
        _cell_params(*weights, cell.residual),
        xs,
        carry,
        activation=cell_activation(cell.activation_fn, caller),
        seq_lengths=seq_lengths,
        time_major=time_major,
        unroll=module.unroll,
        impl=module.impl,
        grad=module.grad,
        caller=caller,
        **given,
    )
