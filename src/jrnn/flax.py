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
``return_carry``. Any ``activation_fn`` runs: ``nn.tanh``, ``nn.relu`` and
``nnx.identity`` as jrnn's built-ins, any other elementwise callable (``nn.gelu``, your
own) with its derivative from JAX (:mod:`jrnn.activations`).

:mod:`jrnn.nnx` is the same drop-in for flax NNX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jrnn._src.extras import missing_extra

try:
    import flax.linen as nn
    from flax.linen.dtypes import promote_dtype
except ModuleNotFoundError as err:
    raise missing_extra(err, "jrnn.flax") from None

from jrnn._src.adapters import cell_activation, run_module, step_shape
from jrnn._src.options import GRADS, check_choice, check_impl

__all__ = ["SimpleRNN"]


class SimpleRNN(nn.Module):
    """``nn.RNN(cell)`` for an ``nn.SimpleCell``, run by :func:`jrnn.rnn` (hand-written BPTT).

    Example: ``jrnn.flax.SimpleRNN(nn.SimpleCell(32), return_carry=True)`` takes the place of
    ``nn.RNN(nn.SimpleCell(32), return_carry=True)``; its variables are
    ``{'params': {'cell': {'i': {'kernel', 'bias'}, 'h': {'kernel'}}}}``, as ``nn.RNN``'s.

    Attributes:
        cell: an ``nn.SimpleCell`` with any elementwise ``activation_fn``. Its
            ``features``, initialisers, ``dtype``, ``param_dtype``, ``carry_init`` and
            ``residual`` are used as flax does.
        time_major: inputs are `(T, *batch, F)` instead of `(*batch, T, F)`.
        return_carry: return ``(carry, outputs)`` instead of ``outputs``.
        reverse: process each sequence from its last valid step; outputs come in that
            (reversed) order unless ``keep_order``.
        keep_order: with ``reverse``, flip the outputs back to the input order.
        unroll: the loop unroll factor (an int >= 1).
        impl: jrnn's ``impl``: ``"auto"``, ``"scan"`` or ``"pallas"`` (see :func:`jrnn.forward`).
        grad: jrnn's ``grad``: ``"bptt"`` (the hand-written BPTT) or ``"autodiff"`` (the
            plain loop: ``jax.jvp``/``jacfwd`` through the module work), see
            :class:`jrnn.ScanOptions`.
    """

    cell: nn.SimpleCell
    time_major: bool = False
    return_carry: bool = False
    reverse: bool = False
    keep_order: bool = False
    unroll: int = 1
    impl: str = "auto"
    grad: str = "bptt"

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
        cell_activation(self.cell.activation_fn, caller)
        check_impl(self.impl)
        check_choice("grad", self.grad, GRADS)
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
        step = step_shape(inputs, time_major, None if kernel is None else kernel.shape[0], caller)
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
