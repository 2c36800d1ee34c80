"""A flax linen drop-in for ``nn.RNN(nn.SimpleCell(features))`` that runs :func:`jrnn.rnn`.

The cell is flax's ``SimpleCell``, ``h_t = act(x_t W_i + b_i + h_{t-1} W_h)`` (with
``residual=True``, ``act(x_t W_i + b_i + h_{t-1} W_h + h_{t-1})``), which is jrnn's
``h_t = act(x_t W_x + h_{t-1} W_h + b)`` under the names

=============================  =====================  ==========
flax ``params``                shape                  jrnn
=============================  =====================  ==========
``['cell']['i']['kernel']``    `(input_size, H)`      ``w_x``
``['cell']['i']['bias']``      `(H,)`                 ``b``
``['cell']['h']['kernel']``    `(H, H)`               ``w_h`` (``w_h + I`` if ``residual``)
=============================  =====================  ==========

:class:`SimpleRNN` takes the ``nn.SimpleCell`` that ``nn.RNN`` would take, and the cell
declares the parameters itself (flax's names, shapes, initialisers and dtypes), so a
checkpoint of ``nn.RNN(nn.SimpleCell(...))`` loads into it unchanged and back, and
``init`` with the same key draws the same values. The recurrence is :func:`jrnn.rnn`:
``jax.grad`` through the module runs jrnn's hand-written BPTT.

Call semantics are ``nn.RNN``'s: batch-first ``(*batch, time, features)`` inputs (or
``time_major``), ``reverse`` flips each sequence's valid steps and keeps padding at the
end, ``keep_order`` flips the outputs back, and with ``seq_lengths`` padded steps are not
masked (the recurrence runs on through them, as flax's scan does; their outputs are
flax's, not zeros) while the carry returned is each sequence's state at its last valid
step (flax's index ``seq_lengths - 1``: a length of 0 gives the state after the last step).
Unlike ``nn.RNN``, any number of batch axes works with ``seq_lengths`` and
``return_carry``. The activations jrnn runs are ``jnp.tanh`` (``nn.tanh``),
``jax.nn.relu`` (``nn.relu``) and ``jax.nn.identity`` (``nnx.identity``).

:mod:`jrnn.nnx` reuses the helpers here for flax NNX.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from flax.linen.recurrent import flip_sequences

from jrnn._checks import IMPLS
from jrnn.params import RNNParams
from jrnn.vjp import rnn

__all__ = ["SimpleRNN"]

# flax's activation callables jrnn runs, by identity (nn.tanh is jnp.tanh, nn.relu is
# jax.nn.relu, nnx.identity is jax.nn.identity)
_ACTIVATIONS: tuple[tuple[Callable[..., Any], str], ...] = (
    (jnp.tanh, "tanh"),
    (jax.lax.tanh, "tanh"),
    (jax.nn.relu, "relu"),
    (jax.nn.identity, "linear"),
)


def _activation_name(fn: Any, caller: str) -> str:
    """jrnn's name (``"tanh"``, ``"relu"``, ``"linear"``) of a cell's ``activation_fn``.

    Args:
        fn: the cell's ``activation_fn``.
        caller: the adapter's name, for the messages.

    Returns:
        The name to pass as ``activation=`` to :func:`jrnn.rnn`.

    Raises:
        TypeError: ``fn`` is not callable.
        ValueError: a callable jrnn does not run (its BPTT needs the derivative from the
            output, known only for these three).
    """
    if not callable(fn):
        raise TypeError(
            f"{caller}: the cell's activation_fn must be callable; got {type(fn).__name__} {fn!r}"
        )
    for known, name in _ACTIVATIONS:
        if fn is known:
            return name
    raise ValueError(
        f"{caller}: the cell's activation_fn must be jnp.tanh (nn.tanh), jax.nn.relu (nn.relu) "
        f"or jax.nn.identity (nnx.identity), the activations jrnn's BPTT runs; got "
        f"{getattr(fn, '__name__', fn)!r} (use flax's own nn.RNN for other activations)"
    )


def _check_flags(caller: str, **flags: Any) -> None:
    """Checks that each of ``flags`` is a Python bool (they select code paths at trace time)."""
    for name, value in flags.items():
        if not isinstance(value, bool | np.bool_):
            raise TypeError(
                f"{caller}: {name} must be a bool; got {type(value).__name__} {value!r}"
            )


def _check_impl(caller: str, impl: Any) -> str:
    """``impl`` checked against :data:`jrnn._checks.IMPLS`."""
    if not isinstance(impl, str) or impl not in IMPLS:
        raise ValueError(f"{caller}: impl must be one of {IMPLS}; got {impl!r}")
    return impl


def _step_shape(
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
    activation: str,
    seq_lengths: Any,
    return_carry: bool,
    time_major: bool,
    reverse: bool,
    keep_order: bool,
    unroll: int,
    impl: str,
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
        activation: jrnn's activation name.
        seq_lengths: `(*batch)` integers, or ``None``.
        return_carry: as ``nn.RNN``.
        time_major: as ``nn.RNN``.
        reverse: as ``nn.RNN``.
        keep_order: as ``nn.RNN``.
        unroll: passed to :func:`jrnn.rnn`.
        impl: passed to :func:`jrnn.rnn`.
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


def _run_module(
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
    ``residual``, its ``unroll`` and ``impl``; each of the call's ``overrides``
    (``return_carry``, ``reverse``, ``keep_order``) left ``None`` takes the module's value.

    Args:
        module: the adapter (``cell``, ``return_carry``, ``reverse``, ``keep_order``,
            ``unroll``, ``impl`` attributes).
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
        activation=_activation_name(cell.activation_fn, caller),
        seq_lengths=seq_lengths,
        time_major=time_major,
        unroll=module.unroll,
        impl=module.impl,
        caller=caller,
        **given,
    )


class SimpleRNN(nn.Module):
    """``nn.RNN(cell)`` for an ``nn.SimpleCell``, run by :func:`jrnn.rnn` (hand-written BPTT).

    Example: ``jrnn.flax.SimpleRNN(nn.SimpleCell(32), return_carry=True)`` takes the place of
    ``nn.RNN(nn.SimpleCell(32), return_carry=True)``; its variables are
    ``{'params': {'cell': {'i': {'kernel', 'bias'}, 'h': {'kernel'}}}}``, as ``nn.RNN``'s.

    Attributes:
        cell: an ``nn.SimpleCell``; its ``activation_fn`` must be ``jnp.tanh``,
            ``jax.nn.relu`` or ``jax.nn.identity``. Its ``features``, initialisers,
            ``dtype``, ``param_dtype``, ``carry_init`` and ``residual`` are used as flax does.
        time_major: inputs are `(T, *batch, F)` instead of `(*batch, T, F)`.
        return_carry: return ``(carry, outputs)`` instead of ``outputs``.
        reverse: process each sequence from its last valid step; outputs come in that
            (reversed) order unless ``keep_order``.
        keep_order: with ``reverse``, flip the outputs back to the input order.
        unroll: the loop unroll factor (an int >= 1).
        impl: jrnn's ``impl``: ``"auto"``, ``"scan"`` or ``"pallas"`` (see :func:`jrnn.forward`).
    """

    cell: nn.SimpleCell
    time_major: bool = False
    return_carry: bool = False
    reverse: bool = False
    keep_order: bool = False
    unroll: int = 1
    impl: str = "auto"

    def __post_init__(self) -> None:
        caller = type(self).__name__
        # A subclass that overrides __call__ computes something jrnn would not.
        if not isinstance(self.cell, nn.SimpleCell) or type(self.cell).__call__ is not (
            nn.SimpleCell.__call__
        ):
            raise TypeError(
                f"{caller}: cell must be a flax.linen.SimpleCell; got {type(self.cell).__name__} "
                "(use flax's own nn.RNN for other cells)"
            )
        _activation_name(self.cell.activation_fn, caller)
        _check_impl(caller, self.impl)
        super().__post_init__()

    def __call__(
        self,
        inputs: jax.Array,
        *,
        initial_carry: jax.Array | None = None,
        init_key: jax.Array | None = None,
        seq_lengths: jax.Array | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Runs the cell over the sequences, as ``nn.RNN.__call__``.

        Args:
            inputs: `(*batch, T, F)`, or `(T, *batch, F)` if ``time_major``.
            initial_carry: `(*batch, H)`; if ``None``, the cell's ``initialize_carry``
                (zeros by default).
            init_key: the PRNG key for ``initialize_carry`` (``jax.random.key(0)`` if
                ``None``).
            seq_lengths: `(*batch)` integers: right-padded lengths (see the module
                docstring for what padded steps output).
            return_carry: override the attributes.
            time_major: override the attributes.
            reverse: override the attributes.
            keep_order: override the attributes.

        Returns:
            ``outputs`` `(*batch, T, H)` (`(T, *batch, H)` if ``time_major``), or
            ``(carry (*batch, H), outputs)`` if ``return_carry``.
        """
        caller = type(self).__name__
        time_major = self.time_major if time_major is None else time_major
        inputs = jnp.asarray(inputs)
        variables = self.cell.variables.get("params")
        kernel = None if variables is None else nn.unbox(variables)["i"]["kernel"]
        step = _step_shape(inputs, time_major, None if kernel is None else kernel.shape[0], caller)
        if variables is None:
            # init: the cell declares its own parameters (flax's names, shapes, inits and
            # dtypes) in one step on zeros, whose result is discarded; apply never calls it
            dummy = jnp.zeros(step[-1:], inputs.dtype)
            self.cell(jnp.zeros((self.cell.features,), self.cell.param_dtype), dummy)
            variables = self.cell.variables["params"]
        p = nn.unbox(variables)
        if initial_carry is None:
            key = jax.random.key(0) if init_key is None else init_key
            initial_carry = self.cell.initialize_carry(key, step)
        w_i, b_i, w_h, xs, carry = promote_dtype(
            p["i"]["kernel"],
            p["i"]["bias"],
            p["h"]["kernel"],
            inputs,
            initial_carry,
            dtype=self.cell.dtype,
        )
        return _run_module(
            self,
            (w_i, b_i, w_h),
            xs,
            carry,
            seq_lengths=seq_lengths,
            overrides={"return_carry": return_carry, "reverse": reverse, "keep_order": keep_order},
            time_major=time_major,
            caller=caller,
        )
