"""A flax NNX drop-in for ``nnx.RNN(nnx.SimpleCell(...))`` that runs :func:`jrnn.rnn`.

The cell is NNX's ``SimpleCell``, ``h_t = act(x_t W_i + b_i + h_{t-1} W_h)`` (with
``residual=True``, ``act(x_t W_i + b_i + h_{t-1} W_h + h_{t-1})``), which is jrnn's
``h_t = act(x_t W_x + h_{t-1} W_h + b)`` under the names

===============================  =====================  ==========
``nnx.state`` path               shape                  jrnn
===============================  =====================  ==========
``cell.dense_i.kernel``          `(in_features, H)`     ``w_x``
``cell.dense_i.bias``            `(H,)`                 ``b``
``cell.dense_h.kernel``          `(H, H)`               ``w_h`` (``w_h + I`` if ``residual``)
``rngs.count``, ``rngs.key``     `()`                   (the carry's RNG stream, as ``nnx.RNN``)
===============================  =====================  ==========

:class:`SimpleRNN` takes the ``nnx.SimpleCell`` that ``nnx.RNN`` would take and holds it
as ``self.cell``, so its ``nnx.state`` has ``nnx.RNN``'s tree: weights copy across with
``nnx.update(model, nnx.state(other))``, and a cell can be shared by both. The recurrence
is :func:`jrnn.rnn`: ``nnx.grad`` through the module runs jrnn's hand-written BPTT. It
works under ``nnx.jit``, ``nnx.grad``/``nnx.value_and_grad`` and ``nnx.Optimizer``.

Call semantics are ``nnx.RNN``'s (the same as linen's ``nn.RNN``; see :mod:`jrnn.flax`,
whose helpers this module uses): padded steps are not masked, the carry with
``seq_lengths`` is the state at index ``seq_lengths - 1``. ``nnx.RNN``'s scan options
(``state_axes``, ``broadcast_rngs``) have no counterpart: the cell holds no state but
its parameters. Any ``activation_fn`` runs (as :mod:`jrnn.flax` says).
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp

from jrnn._src.extras import missing_extra

try:
    from flax import nnx
except ModuleNotFoundError as err:
    raise missing_extra(err, "jrnn.nnx") from None

from jrnn._src.adapters import cell_activation, run_module, step_shape
from jrnn._src.options import GRADS, check_choice, check_impl

__all__ = ["SimpleRNN"]


class SimpleRNN(nnx.Module):
    """``nnx.RNN(cell)`` for an ``nnx.SimpleCell``, run by :func:`jrnn.rnn`.

    Example: ``jrnn.nnx.SimpleRNN(nnx.SimpleCell(8, 32, rngs=nnx.Rngs(0)))`` takes the place
    of ``nnx.RNN(nnx.SimpleCell(8, 32, rngs=nnx.Rngs(0)))`` and has the same ``nnx.state``.

    Args:
        cell: an ``nnx.SimpleCell`` with any elementwise ``activation_fn``. Its weights,
            ``dtype``, ``promote_dtype``, ``residual`` and ``initialize_carry`` are used as
            ``nnx.RNN`` uses them.
        time_major: inputs are `(T, *batch, F)` instead of `(*batch, T, F)`.
        return_carry: return ``(carry, outputs)`` instead of ``outputs``.
        reverse: process each sequence from its last valid step; outputs come in that
            (reversed) order unless ``keep_order``.
        keep_order: with ``reverse``, flip the outputs back to the input order.
        unroll: the loop unroll factor (an int >= 1).
        rngs: the carry's RNG stream, as ``nnx.RNN``: ``True`` (a stream seeded 0),
            an ``nnx.Rngs`` (its ``carry`` stream, forked) or ``False`` (none).
        impl: jrnn's ``impl``: ``"auto"``, ``"scan"`` or ``"pallas"`` (see :func:`jrnn.forward`).
        grad: jrnn's ``grad``: ``"bptt"`` or ``"autodiff"`` (see :class:`jrnn.ScanOptions`).
    """

    def __init__(
        self,
        cell: nnx.SimpleCell,
        *,
        time_major: bool = False,
        return_carry: bool = False,
        reverse: bool = False,
        keep_order: bool = False,
        unroll: int = 1,
        rngs: nnx.Rngs | bool = True,
        impl: str = "auto",
        grad: str = "bptt",
    ):
        caller = type(self).__name__
        # A subclass that overrides __call__ computes something jrnn would not.
        if not isinstance(cell, nnx.SimpleCell) or type(cell).__call__ is not (
            nnx.SimpleCell.__call__
        ):
            raise TypeError(
                f"{caller}: cell must be a flax.nnx.SimpleCell; got {type(cell).__name__} "
                "(use nnx.RNN for other cells)"
            )
        cell_activation(cell.activation_fn, caller)
        self.cell = cell
        self.time_major = time_major
        self.return_carry = return_carry
        self.reverse = reverse
        self.keep_order = keep_order
        self.unroll = unroll
        self.impl = check_impl(impl)
        self.grad = check_choice("grad", grad, GRADS)
        self.rngs: nnx.RngStream | None
        if rngs is True:
            self.rngs = nnx.RngStream(0, tag="carry")
        elif isinstance(rngs, nnx.Rngs):
            self.rngs = rngs.carry.fork()
        elif rngs is False:
            self.rngs = nnx.data(None)
        else:
            raise TypeError(
                f"{caller}: rngs must be an nnx.Rngs or a bool (as nnx.RNN's); got "
                f"{type(rngs).__name__}"
            )

    def __call__(
        self,
        inputs: jax.Array,
        *,
        initial_carry: jax.Array | None = None,
        seq_lengths: jax.Array | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Runs the cell over the sequences, as ``nnx.RNN.__call__``.

        Args:
            inputs: `(*batch, T, F)`, or `(T, *batch, F)` if ``time_major``.
            initial_carry: `(*batch, H)`; if ``None``, the cell's ``initialize_carry``
                (zeros by default) with ``rngs``.
            seq_lengths: `(*batch)` integers: right-padded lengths (padded steps are not
                masked; see :mod:`jrnn.flax`).
            return_carry: override the constructor's.
            time_major: override the constructor's.
            reverse: override the constructor's.
            keep_order: override the constructor's.
            rngs: the carry's RNG stream; ``None`` uses the module's.

        Returns:
            ``outputs`` `(*batch, T, H)` (`(T, *batch, H)` if ``time_major``), or
            ``(carry (*batch, H), outputs)`` if ``return_carry``.
        """
        caller = type(self).__name__
        cell = self.cell
        time_major = self.time_major if time_major is None else time_major
        inputs = jnp.asarray(inputs)
        step = step_shape(inputs, time_major, cell.in_features, caller)
        if initial_carry is None:
            if rngs is None:
                rngs = self.rngs
            if isinstance(rngs, nnx.Rngs):
                rngs = rngs.carry.fork()
            initial_carry = cell.initialize_carry(step, rngs)
        # flax types a Linear's bias as optional; SimpleCell's dense_i always has one
        bias = cast(nnx.Param, cell.dense_i.bias)
        w_i, b_i, w_h, xs, carry = cell.promote_dtype(
            (
                cell.dense_i.kernel[...],
                bias[...],
                cell.dense_h.kernel[...],
                inputs,
                initial_carry,
            ),
            dtype=cell.dtype,
        )
        return run_module(
            self,
            (w_i, b_i, w_h),
            xs,
            carry,
            seq_lengths=seq_lengths,
            overrides={"return_carry": return_carry, "reverse": reverse, "keep_order": keep_order},
            time_major=time_major,
            caller=caller,
        )
